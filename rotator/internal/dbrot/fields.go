// Package dbrot holds what the database password rotators (rotator/postgres,
// rotator/mysql and rotator/redis) share, so each of them keeps only what is
// particular to its server:
//
//   - the credential fields they all read, and their defaults and checks:
//     Fields (host, port, username, probe, admin_credential, password_policy),
//     Port, Users (strategy_users), Parse and Admin, configured by a Spec;
//   - the start of every step (Version, Versions), the new password Stage
//     returns (Fields.StagePassword) and the error for a strategy a rotator
//     does not support (Unsupported);
//   - the login steps every one of them takes, generic over the rotator's
//     login and connection types: Driver (LogsIn, VerifyLogin, Manager,
//     CheckCurrent), and the pool of admin connections Manager keeps
//     between steps (Pool);
//   - error handling: Classify and Transient (classes by server code or error
//     type, never by text) and Scrub (secret values and the forms derived from
//     them taken out of error text).
//
// Test helpers for the three rotators' tests are in dbrottest.
//
// The rotators' exported API (New, Config, the credential fields) stays in
// their own packages; nothing here is visible outside rotator/.
package dbrot

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Fields are the credential fields every database rotator reads. A rotator's
// own fields struct embeds Fields and adds its own (database, sslmode, tls...);
// encoding/json decodes the embedded fields as if they were the rotator's.
type Fields struct {
	Host            string                 `json:"host"`
	Port            Port                   `json:"port"`
	Username        string                 `json:"username"`
	Probe           string                 `json:"probe"`
	AdminCredential string                 `json:"admin_credential"`
	PasswordPolicy  *secret.PasswordPolicy `json:"password_policy"`

	// admin is the admin credential these fields were read from (Admin), for
	// the pool's key; zero for any other credential.
	admin struct {
		id      string
		version int
	}
}

// Embedder is a pointer to a rotator's own fields struct, which embeds Fields
// (the embedding gives it this interface's method).
type Embedder interface{ common() *Fields }

func (f *Fields) common() *Fields { return f }

// Login is the constraint on a rotator's login type (the fields plus the
// password): a struct that embeds Fields, which gives it these methods.
type Login interface {
	username() string
	adminRef() (id string, version int)
}

func (f Fields) username() string { return f.Username }

func (f Fields) adminRef() (string, int) { return f.admin.id, f.admin.version }

// Port is the port field: a JSON number or a string.
type Port int

// UnmarshalJSON accepts a whole number, a string holding one, "" or null (0).
func (p *Port) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
		*p = 0
	case float64:
		if x != float64(int(x)) {
			return fmt.Errorf("port %v is not an integer", x)
		}
		*p = Port(x)
	case string:
		if x == "" {
			*p = 0
			return nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return fmt.Errorf("port %q is not a number", x)
		}
		*p = Port(n)
	default:
		return fmt.Errorf("port must be a number or a string")
	}
	return nil
}

// Users is the strategy_users field: the two logins that take turns under the
// Alternating strategy.
type Users []string

// Other checks u (two different, non-empty names) and returns the one that is
// not username. kind is what the server calls a login ("role", "user"), for
// the error message. Every error is ClassConfig.
func (u Users) Other(op, username, kind string) (string, error) {
	if len(u) != 2 || u[0] == "" || u[1] == "" || u[0] == u[1] {
		return "", rotator.Errorf(rotator.ClassConfig, op, "alternating needs strategy_users with two different %s names", kind)
	}
	switch username {
	case u[0]:
		return u[1], nil
	case u[1]:
		return u[0], nil
	}
	return "", rotator.Errorf(rotator.ClassConfig, op, "username %q is not one of strategy_users", username)
}

// Spec is what differs between the rotators in the handling of Fields.
type Spec struct {
	// Port is the server's default port.
	Port Port
	// Probe is the default probe.
	Probe string
	// UsernameHint is appended to the error for a missing username.
	UsernameHint string
	// Policy checks password_policy; nil means secret.PasswordPolicy.Validate.
	Policy func(secret.PasswordPolicy) error
	// AdminUsername is the username of an admin credential that names none;
	// "" means the admin credential must name one.
	AdminUsername string
}

// Parse decodes c's fields into f, then fills in the defaults of the common
// fields (host 127.0.0.1, s.Port, s.Probe) and checks them: the port's range,
// a username, the password policy. The rotator checks its own fields after.
// Every error is ClassConfig.
func Parse(c rotator.Credential, op string, f Embedder, s Spec) error {
	if err := c.Decode(f); err != nil {
		return &rotator.Error{Class: rotator.ClassConfig, Op: op, Err: fmt.Errorf("credential %s fields: %v", c.ID, err)}
	}
	cf := f.common()
	if cf.Host == "" {
		cf.Host = "127.0.0.1"
	}
	if cf.Port == 0 {
		cf.Port = s.Port
	}
	if cf.Port < 1 || cf.Port > 65535 {
		return Invalid(op, c.ID, "port %d out of range", cf.Port)
	}
	if cf.Username == "" {
		return Invalid(op, c.ID, "field username is required%s", s.UsernameHint)
	}
	if cf.Probe == "" {
		cf.Probe = s.Probe
	}
	if cf.PasswordPolicy != nil {
		valid := s.Policy
		if valid == nil {
			valid = secret.PasswordPolicy.Validate
		}
		if err := valid(*cf.PasswordPolicy); err != nil {
			return Invalid(op, c.ID, "password_policy: %v", err)
		}
	}
	return nil
}

// Invalid returns the ClassConfig error for a field of credential id.
func Invalid(op, id, format string, args ...any) error {
	return rotator.Errorf(rotator.ClassConfig, op, "credential %s: "+format, append([]any{id}, args...)...)
}

// Admin resolves the admin_credential that base names and decodes its fields
// into f. The admin names its own target: a missing host is an error, never
// taken from base (a writer of base must not choose where the admin logs in).
// The port defaults to s.Port, the username to s.AdminUsername (or is
// required). The rotator defaults and checks its own fields after, and takes
// the password from the returned credential. ok is false, with no error, when
// base names no admin. A credential the resolver cannot give keeps the
// resolver's class (ClassConfig if it has none); every other error is
// ClassConfig.
func Admin(ctx context.Context, res rotator.Resolver, op string, base Fields, f Embedder, s Spec) (c rotator.Credential, ok bool, err error) {
	if base.AdminCredential == "" {
		return rotator.Credential{}, false, nil
	}
	if res == nil {
		return rotator.Credential{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin_credential %q set but no resolver given", base.AdminCredential)
	}
	c, err = res.Resolve(ctx, base.AdminCredential)
	if err != nil {
		cl := rotator.ClassOf(err)
		if cl == rotator.ClassUnknown {
			cl = rotator.ClassConfig
		}
		return rotator.Credential{}, false, &rotator.Error{Class: cl, Op: op, Err: fmt.Errorf("resolve admin_credential %q: %w", base.AdminCredential, err)}
	}
	if err := adminFields(c, op, f, s); err != nil {
		return rotator.Credential{}, false, err
	}
	af := f.common()
	af.admin.id, af.admin.version = c.ID, c.Version
	return c, true, nil
}

// adminFields decodes an admin credential's fields into f and applies the
// admin defaults: host required, port s.Port, username s.AdminUsername.
func adminFields(c rotator.Credential, op string, f Embedder, s Spec) error {
	if err := c.Decode(f); err != nil {
		return &rotator.Error{Class: rotator.ClassConfig, Op: op, Err: fmt.Errorf("admin credential %s fields: %v", c.ID, err)}
	}
	af := f.common()
	if af.Host == "" {
		return rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: field host is required on the admin itself (an admin never takes the host of the credential that refers to it)", c.ID)
	}
	if af.Port == 0 {
		af.Port = s.Port
	}
	if af.Port < 1 || af.Port > 65535 {
		return Invalid(op, c.ID, "port %d out of range", af.Port)
	}
	if af.Username == "" {
		if s.AdminUsername == "" {
			return rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: field username is required", c.ID)
		}
		af.Username = s.AdminUsername
	}
	return nil
}

// Target is the form of a server address a Binding and a Scope compare.
func Target(host string, port Port) string {
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(int(port)))
}

// BindingOf reports what credential c asks of its admin: the reference, the
// server (host:port after defaults) and the accounts a rotation changes (the
// username and strategy_users).
func BindingOf(c rotator.Credential, s Spec) (rotator.Binding, error) {
	var f struct {
		Fields
		StrategyUsers Users `json:"strategy_users"`
	}
	if err := Parse(c, "binding", &f, s); err != nil {
		return rotator.Binding{}, err
	}
	b := rotator.Binding{Target: Target(f.Host, f.Port), Accounts: []string{f.Username}}
	for _, u := range f.StrategyUsers {
		if u != "" && !slices.Contains(b.Accounts, u) {
			b.Accounts = append(b.Accounts, u)
		}
	}
	if f.AdminCredential != "" {
		b.Refs = []rotator.Ref{{Field: "admin_credential", ID: f.AdminCredential}}
	}
	return b, nil
}

// AdminScope reads the scope a database admin credential declares: its own
// host and port (required on the admin), its login, and the generic scope
// fields (rotator.ScopeFields).
func AdminScope(admin rotator.Credential, s Spec) (rotator.Scope, error) {
	var f Fields
	if err := adminFields(admin, "admin scope", &f, s); err != nil {
		return rotator.Scope{}, err
	}
	sc, err := rotator.ScopeFields(admin)
	if err != nil {
		return rotator.Scope{}, err
	}
	sc.Target = Target(f.Host, f.Port)
	sc.Own = []string{f.Username}
	return sc, nil
}

// PrintablePolicy accepts what secret.PasswordPolicy accepts, restricted to
// printable ASCII without space: SASLprep leaves such a password unchanged (so
// a SCRAM verifier computed client-side matches what PostgreSQL derives at
// login), and it goes into DSNs and option files as it is.
func PrintablePolicy(p secret.PasswordPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	for i := 0; i < len(p.Alphabet); i++ {
		if c := p.Alphabet[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("alphabet must be printable ASCII without space (byte %d is %#x)", i, c)
		}
	}
	return nil
}
