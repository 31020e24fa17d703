package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	credential "github.com/nebula-credential/nebula-credential"
)

// Config is the agent's configuration, read from a YAML file by LoadConfig.
// The zero value of every optional field means its documented default.
type Config struct {
	// Name is the consumer name reported to the server (default: the host name).
	Name string `yaml:"name"`
	// Servers are the server addresses, tried in order (failover). At least one.
	Servers []string `yaml:"servers"`
	// TokenFile holds the API token; else the environment variable TokenEnv
	// (default NEBULA_CREDENTIAL_TOKEN). The token is never in the config itself.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// CAFile is a PEM file of CA certificates for https:// servers.
	CAFile string `yaml:"ca_file"`
	// StateFile keeps the consumer ID, the last event seen and the versions
	// delivered across restarts (default: beside the config, NAME.state.json).
	StateFile string `yaml:"state_file"`
	// HealthAddr, if set, serves GET /healthz there (e.g. 127.0.0.1:8271).
	HealthAddr string `yaml:"health_addr"`
	// FullCheck is the interval of the full check behind the watch stream
	// (default 5m).
	FullCheck Duration `yaml:"full_check"`
	// RetryMax caps the backoff while the server is unreachable (default 30s).
	RetryMax Duration `yaml:"retry_max"`
	// Templates are the files the agent renders.
	Templates []Template `yaml:"templates"`
	// Exec, if set, is a child process the agent supervises (as `run` does).
	Exec *Exec `yaml:"exec"`

	// Env is what `run --env` sets: environment variables of the Exec child
	// taken from credential fields. Not settable from the file.
	Env []EnvVar `yaml:"-"`

	path string // the file it came from, for messages
}

// Template is one rendered file.
type Template struct {
	// Source is a template file; Contents is an inline template. Exactly one.
	Source   string `yaml:"source"`
	Contents string `yaml:"contents"`
	// Destination is the file written (atomically, only on change).
	Destination string `yaml:"destination"`
	// Mode of the destination (default 0600).
	Mode FileMode `yaml:"mode"`
	// User and Group own the destination (name or numeric ID; default: the agent's).
	User  string `yaml:"user"`
	Group string `yaml:"group"`
	// Action runs after the destination changed.
	Action Action `yaml:"action"`

	uid, gid int    // -1: unchanged
	name     string // template name in messages
	text     string // the template text
}

// Action is what runs after a destination changed. At most one of Signal,
// Command and Restart.
type Action struct {
	// Signal (HUP, USR1, TERM, ...) is sent to PID, to the process in PIDFile,
	// or, with neither, to the Exec child.
	Signal  string `yaml:"signal"`
	PID     int    `yaml:"pid"`
	PIDFile string `yaml:"pid_file"`
	// Command runs with a Timeout (default 30s). Its argv is taken from the
	// config as is; the credential IDs and versions are in its environment.
	Command []string `yaml:"command"`
	Timeout Duration `yaml:"timeout"`
	// Restart restarts the Exec child.
	Restart bool `yaml:"restart"`

	sig syscall.Signal
}

// Exec is a supervised child process.
type Exec struct {
	Command []string `yaml:"command"`
	// OnChange is "restart" (default), "signal" or "none": what happens to the
	// child when anything it uses (its env, a template) changes.
	OnChange string `yaml:"on_change"`
	// Signal is sent on change with OnChange "signal" (default HUP) and to
	// stop the child on restart with "restart" (default TERM).
	Signal string `yaml:"signal"`
	// KillTimeout: how long a stopping child may take before SIGKILL (default 10s).
	KillTimeout Duration `yaml:"kill_timeout"`

	sig syscall.Signal
}

// EnvVar is one environment variable of the child: field Field of credential ID.
type EnvVar struct {
	Name, ID, Field string
}

// FileMode is a file mode written in octal ("0600" or 0600).
type FileMode os.FileMode

// UnmarshalYAML parses an octal mode.
func (m *FileMode) UnmarshalYAML(n ast.Node) error {
	s := strings.Trim(strings.TrimSpace(n.String()), `"'`)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return nodeError(n, "%q is not an octal file mode like 0600", s)
	}
	*m = FileMode(v)
	return nil
}

// Duration is a time.Duration written as "30s", "5m", "1h30m".
type Duration time.Duration

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	s := strings.Trim(strings.TrimSpace(n.String()), `"'`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return nodeError(n, "%q is not a duration like 30s, 5m or 1h", s)
	}
	*d = Duration(v)
	return nil
}

// posError is an error at a YAML node.
type posError struct {
	tok *token.Token
	msg string
}

func (e *posError) Error() string { return e.msg }

func nodeError(n ast.Node, format string, args ...any) error {
	return &posError{tok: n.GetToken(), msg: fmt.Sprintf(format, args...)}
}

// keyOf is the mapping key a value token belongs to, if any.
func keyOf(t *token.Token) string {
	if t != nil && t.Prev != nil && t.Prev.Type == token.MappingValueType && t.Prev.Prev != nil {
		return t.Prev.Prev.Value
	}
	return ""
}

// ConfigError is an error in a config file: the file, the line (0 if
// unknown) and the field, as a path like templates[1].destination.
type ConfigError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return loc + ": " + e.Field + ": " + e.Msg
	}
	return loc + ": " + e.Msg
}

// Unwrap makes a ConfigError an credential.ErrInvalid.
func (e *ConfigError) Unwrap() error { return credential.ErrInvalid }

// LoadConfig reads and validates the config file at path. Every error is a
// *ConfigError naming the file, the line and the field.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: config: %w", credential.ErrInvalid, err)
	}
	return ParseConfig(path, data)
}

var yamlMsgField = regexp.MustCompile(`^unknown field "([^"]+)"`)

// ParseConfig parses and validates config data read from path.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{path: path}
	file, perr := parser.ParseBytes(data, 0)
	if perr != nil {
		return nil, yamlError(path, perr)
	}
	if err := yaml.UnmarshalWithOptions(data, c, yaml.DisallowUnknownField(), yaml.Strict()); err != nil {
		return nil, yamlError(path, err)
	}
	c.path = path
	if err := c.validate(file); err != nil {
		return nil, err
	}
	return c, nil
}

func yamlError(path string, err error) error {
	var pe *posError
	if errors.As(err, &pe) {
		ce := &ConfigError{File: path, Msg: pe.msg, Field: keyOf(pe.tok)}
		if pe.tok != nil && pe.tok.Position != nil {
			ce.Line = pe.tok.Position.Line
		}
		return ce
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		ce := &ConfigError{File: path, Msg: ye.GetMessage()}
		if t := ye.GetToken(); t != nil && t.Position != nil {
			ce.Line = t.Position.Line
			ce.Field = keyOf(t)
		}
		if m := yamlMsgField.FindStringSubmatch(ce.Msg); m != nil {
			ce.Field, ce.Msg = m[1], "unknown field (see docs/agent.md for the fields)"
		}
		var te *yaml.TypeError
		if errors.As(err, &te) && te.StructFieldName != nil {
			ce.Field = *te.StructFieldName
		}
		return ce
	}
	// a custom unmarshaler's error has no position: find it in the text
	msg := err.Error()
	ce := &ConfigError{File: path, Msg: msg}
	if strings.HasPrefix(msg, "[") {
		if i := strings.Index(msg, "]"); i > 0 {
			if ln, _, ok := strings.Cut(msg[1:i], ":"); ok {
				ce.Line, _ = strconv.Atoi(ln)
			}
			ce.Msg = strings.TrimSpace(strings.SplitN(msg[i+1:], "\n", 2)[0])
		}
	}
	return ce
}

// at returns a ConfigError for the node at the YAML path p ("$.templates[0].mode"),
// falling back to its parents when p is absent.
func (c *Config) at(file *ast.File, p, msg string, args ...any) error {
	field := strings.TrimPrefix(p, "$.")
	line := 0
	for q := p; file != nil && q != "$" && q != ""; {
		yp, err := yaml.PathString(q)
		if err == nil {
			if n, err := yp.FilterFile(file); err == nil && n != nil && n.GetToken() != nil && n.GetToken().Position != nil {
				line = n.GetToken().Position.Line
				break
			}
		}
		i := strings.LastIndexAny(q, ".[")
		if i <= 0 {
			break
		}
		q = q[:i]
	}
	return &ConfigError{File: c.path, Line: line, Field: field, Msg: fmt.Sprintf(msg, args...)}
}

var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "KILL": syscall.SIGKILL, "WINCH": syscall.SIGWINCH,
}

// ParseSignal parses a signal name: HUP, SIGHUP, hup.
func ParseSignal(s string) (syscall.Signal, error) {
	n := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	if sig, ok := signals[n]; ok {
		return sig, nil
	}
	names := make([]string, 0, len(signals))
	for k := range signals {
		names = append(names, k)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("signal %q is not one of %s", s, strings.Join(names, ", "))
}

func (c *Config) validate(file *ast.File) error {
	if len(c.Servers) == 0 {
		return c.at(file, "$.servers", "at least one server address is needed, e.g. servers: [\"https://credentials.internal:8270\"]")
	}
	for i, s := range c.Servers {
		if strings.TrimSpace(s) == "" {
			return c.at(file, fmt.Sprintf("$.servers[%d]", i), "empty server address")
		}
	}
	if c.TokenFile != "" && c.TokenEnv != "" {
		return c.at(file, "$.token_env", "set token_file or token_env, not both")
	}
	if c.TokenEnv != "" && !envName.MatchString(c.TokenEnv) {
		return c.at(file, "$.token_env", "%q is not an environment variable name", c.TokenEnv)
	}
	if c.FullCheck < 0 || (c.FullCheck > 0 && c.FullCheck < Duration(time.Second)) {
		return c.at(file, "$.full_check", "must be at least 1s (default 5m)")
	}
	if c.RetryMax < 0 {
		return c.at(file, "$.retry_max", "must not be negative")
	}
	if c.Exec != nil {
		if err := c.Exec.validate(func(f, m string, a ...any) error { return c.at(file, "$.exec."+f, m, a...) }); err != nil {
			return err
		}
	}
	if len(c.Templates) == 0 && c.Exec == nil {
		return c.at(file, "$.templates", "no templates: add at least one (source or contents, and destination)")
	}
	dests := map[string]int{}
	for i := range c.Templates {
		t := &c.Templates[i]
		p := fmt.Sprintf("$.templates[%d]", i)
		errf := func(f, m string, a ...any) error {
			if f != "" {
				f = "." + f
			}
			return c.at(file, p+f, m, a...)
		}
		switch {
		case t.Source == "" && t.Contents == "":
			return c.at(file, p, "set source (a template file) or contents (an inline template)")
		case t.Source != "" && t.Contents != "":
			return errf("contents", "set source or contents, not both")
		}
		if t.Source != "" {
			src := t.Source
			if !filepath.IsAbs(src) && c.path != "" {
				src = filepath.Join(filepath.Dir(c.path), src)
			}
			b, err := os.ReadFile(src)
			if err != nil {
				return errf("source", "cannot read the template: %v", cause(err))
			}
			t.text, t.name = string(b), src
		} else {
			t.text, t.name = t.Contents, fmt.Sprintf("%s:templates[%d].contents", c.path, i)
		}
		if t.Destination == "" {
			return errf("destination", "missing: the file to write")
		}
		if !filepath.IsAbs(t.Destination) && c.path != "" {
			t.Destination = filepath.Join(filepath.Dir(c.path), t.Destination)
		}
		t.Destination = filepath.Clean(t.Destination)
		if j, dup := dests[t.Destination]; dup {
			return errf("destination", "%s is also the destination of templates[%d]", t.Destination, j)
		}
		dests[t.Destination] = i
		if _, err := parseTemplate(t.name, t.text); err != nil {
			return errf(map[bool]string{true: "source", false: "contents"}[t.Source != ""], "%v", err)
		}
		if t.Mode == 0 {
			t.Mode = 0o600
		}
		var err error
		if t.uid, err = lookupUser(t.User); err != nil {
			return errf("user", "%v", err)
		}
		if t.gid, err = lookupGroup(t.Group); err != nil {
			return errf("group", "%v", err)
		}
		if err := t.Action.validate(c.Exec != nil, func(f, m string, a ...any) error { return errf(strings.TrimSuffix("action."+f, "."), m, a...) }); err != nil {
			return err
		}
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (a *Action) validate(haveExec bool, errf func(f, m string, a ...any) error) error {
	n := 0
	for _, set := range []bool{a.Signal != "", len(a.Command) > 0, a.Restart} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errf("", "set one of signal, command and restart")
	}
	if a.Signal != "" {
		sig, err := ParseSignal(a.Signal)
		if err != nil {
			return errf("signal", "%v", err)
		}
		a.sig = sig
		if a.PID != 0 && a.PIDFile != "" {
			return errf("pid_file", "set pid or pid_file, not both")
		}
		if a.PID == 0 && a.PIDFile == "" && !haveExec {
			return errf("signal", "no target: set pid or pid_file, or configure exec to signal the supervised child")
		}
		if a.PID < 0 {
			return errf("pid", "must be positive")
		}
	} else if a.PID != 0 || a.PIDFile != "" {
		return errf("signal", "pid or pid_file is set but no signal to send")
	}
	if a.Restart && !haveExec {
		return errf("restart", "restart needs an exec child to restart")
	}
	if len(a.Command) > 0 && a.Command[0] == "" {
		return errf("command", "the program name is empty")
	}
	if a.Timeout < 0 {
		return errf("timeout", "must not be negative")
	}
	if a.Timeout == 0 {
		a.Timeout = Duration(30 * time.Second)
	}
	return nil
}

func (e *Exec) validate(errf func(f, m string, a ...any) error) error {
	if len(e.Command) == 0 || e.Command[0] == "" {
		return errf("command", "missing: the program to run and its arguments")
	}
	switch e.OnChange {
	case "":
		e.OnChange = "restart"
	case "restart", "signal", "none":
	default:
		return errf("on_change", "%q is not one of restart, signal, none", e.OnChange)
	}
	if e.Signal == "" {
		e.Signal = map[bool]string{true: "HUP", false: "TERM"}[e.OnChange == "signal"]
	}
	sig, err := ParseSignal(e.Signal)
	if err != nil {
		return errf("signal", "%v", err)
	}
	e.sig = sig
	if e.KillTimeout < 0 {
		return errf("kill_timeout", "must not be negative")
	}
	if e.KillTimeout == 0 {
		e.KillTimeout = Duration(10 * time.Second)
	}
	return nil
}

// Validate checks a Config built in code (as `run` does) and fills in defaults.
func (c *Config) Validate() error {
	if c.path == "" {
		c.path = "(command line)"
	}
	return c.validate(nil)
}
