package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/go-sql-driver/mysql"

	credential "github.com/nebula-credential/nebula-credential"
)

// Cred is a credential as templates see it (`{{ with cred "prod/db" }}`).
type Cred struct {
	ID      string
	Type    string
	Version int
	Fields  map[string]any
	Secret  map[string]string
}

// renderer renders templates against credentials fetched once per pass.
type renderer struct {
	ctx   context.Context
	fetch func(ctx context.Context, id string) (*credential.Credential, error)
	cache map[string]*credential.Credential
	// used is what the template read: credential ID → version.
	used map[string]int
	// fetchPrev, if set, gets the previous version of a credential in grace
	// (the pgpass helper lists it too); prev caches it.
	fetchPrev func(ctx context.Context, id string) (*credential.Credential, error)
	prev      map[string]*credential.Credential
	// graceEnds is the earliest end of a grace whose previous version a
	// template listed: the file must be rendered again then.
	graceEnds time.Time
}

func newRenderer(ctx context.Context, fetch func(context.Context, string) (*credential.Credential, error)) *renderer {
	return &renderer{ctx: ctx, fetch: fetch, cache: map[string]*credential.Credential{}, used: map[string]int{}, prev: map[string]*credential.Credential{}}
}

// secrets lists every secret value fetched so far, to scrub error text.
func (r *renderer) secrets() []string {
	var out []string
	for _, c := range slices.Concat(slices.Collect(maps.Values(r.cache)), slices.Collect(maps.Values(r.prev))) {
		if c == nil {
			continue
		}
		for _, v := range c.Secret {
			if s := v.Reveal(); len(s) >= 3 {
				out = append(out, s)
			}
		}
	}
	// longest first so a secret containing another is scrubbed whole
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// scrub removes every fetched secret from err's text.
func (r *renderer) scrub(err error) error {
	if err == nil {
		return nil
	}
	var ue *unreachableError
	if errors.As(err, &ue) {
		return ue // a client error: never secret
	}
	msg := err.Error()
	for _, s := range r.secrets() {
		msg = strings.ReplaceAll(msg, s, "[REDACTED]")
	}
	return &renderError{msg: msg}
}

type renderError struct{ msg string }

func (e *renderError) Error() string { return e.msg }

func (r *renderer) get(id string) (*credential.Credential, error) {
	if c, ok := r.cache[id]; ok {
		r.used[id] = c.Version
		return c, nil
	}
	if r.fetch == nil {
		return nil, fmt.Errorf("no credentials while checking the template")
	}
	if err := credential.ValidateID(id); err != nil {
		return nil, err
	}
	c, err := r.fetch(r.ctx, id)
	if err != nil {
		return nil, err
	}
	r.cache[id] = c
	r.used[id] = c.Version
	return c, nil
}

func (r *renderer) cred(id string) (Cred, error) {
	c, err := r.get(id)
	if err != nil {
		return Cred{}, err
	}
	out := Cred{ID: c.ID, Type: string(c.Type), Version: c.Version, Fields: c.Fields, Secret: map[string]string{}}
	for k, v := range c.Secret {
		out.Secret[k] = v.Reveal()
	}
	return out, nil
}

func (r *renderer) field(id, name string) (string, error) {
	c, err := r.get(id)
	if err != nil {
		return "", err
	}
	switch name {
	case "id":
		return c.ID, nil
	case "version":
		return strconv.Itoa(c.Version), nil
	case "type":
		return string(c.Type), nil
	}
	v, ok := c.Fields[name]
	if !ok {
		return "", fmt.Errorf("credential %s has no field %q (fields: %s)", id, name, strings.Join(keys(c.Fields), ", "))
	}
	return fieldString(v), nil
}

func fieldString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	default:
		if b, err := json.Marshal(v); err == nil {
			return string(b)
		}
		return fmt.Sprint(v)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (r *renderer) secret(id, name string) (string, error) {
	c, err := r.get(id)
	if err != nil {
		return "", err
	}
	v, ok := c.Secret[name]
	if !ok {
		return "", fmt.Errorf("credential %s has no secret field %q (secret fields: %s)", id, name, strings.Join(keys(c.Secret), ", "))
	}
	return v.Reveal(), nil
}

// db is what connection helpers need.
type db struct {
	host, port, database, user, password, sslmode string
}

func (r *renderer) db(id string, defPort string) (db, error) {
	c, err := r.get(id)
	if err != nil {
		return db{}, err
	}
	return r.dbOf(id, c, defPort)
}

func (r *renderer) dbOf(id string, c *credential.Credential, defPort string) (db, error) {
	d := db{
		host: fieldString(c.Fields["host"]), port: fieldString(c.Fields["port"]),
		database: fieldString(c.Fields["database"]), user: fieldString(c.Fields["username"]),
		sslmode: fieldString(c.Fields["sslmode"]),
	}
	if d.host == "" {
		d.host = "localhost"
	}
	if d.port == "" {
		d.port = defPort
	}
	if d.user == "" {
		return db{}, fmt.Errorf("credential %s has no field \"username\"", id)
	}
	pw, ok := c.Secret["password"]
	if !ok {
		return db{}, fmt.Errorf("credential %s has no secret field \"password\"", id)
	}
	d.password = pw.Reveal()
	return d, nil
}

// pgURL: postgres://user:password@host:port/database?sslmode=...
func (r *renderer) pgURL(id string) (string, error) {
	d, err := r.db(id, "5432")
	if err != nil {
		return "", err
	}
	if d.database == "" {
		d.database = "postgres"
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(d.user, d.password), Host: net.JoinHostPort(d.host, d.port), Path: "/" + d.database}
	if d.sslmode != "" {
		u.RawQuery = url.Values{"sslmode": {d.sslmode}}.Encode()
	}
	return u.String(), nil
}

// pgDSN: libpq keyword/value form, every value single-quoted.
func (r *renderer) pgDSN(id string) (string, error) {
	d, err := r.db(id, "5432")
	if err != nil {
		return "", err
	}
	if d.database == "" {
		d.database = "postgres"
	}
	q := func(s string) string {
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
	}
	s := "host=" + q(d.host) + " port=" + q(d.port) + " dbname=" + q(d.database) + " user=" + q(d.user) + " password=" + q(d.password)
	if d.sslmode != "" {
		s += " sslmode=" + q(d.sslmode)
	}
	return s, nil
}

// pgpass: one .pgpass line, ':' and '\' escaped.
func (r *renderer) pgpass(id string) (string, error) {
	d, err := r.db(id, "5432")
	if err != nil {
		return "", err
	}
	if d.database == "" {
		d.database = "*"
	}
	line, err := pgpassLine(id, d)
	if err != nil {
		return "", err
	}
	// During grace the previous version still logs in. With the alternating
	// strategy its user differs: a program that took the user a moment
	// before the file changed (a script reading it, a service file) still
	// finds a password for it. The line goes at the next render after grace.
	c := r.cache[id]
	if r.fetchPrev == nil || c.State != credential.StateGrace {
		return line, nil
	}
	p, ok := r.prev[id]
	if !ok {
		if p, err = r.fetchPrev(r.ctx, id); err != nil && !errors.Is(err, credential.ErrNotFound) {
			return "", err
		}
		r.prev[id] = p
	}
	if p == nil || p.Version == c.Version {
		return line, nil
	}
	pd, err := r.dbOf(id, p, "5432")
	if err != nil || pd.user == d.user {
		return line, nil
	}
	if pd.database == "" {
		pd.database = "*"
	}
	pl, err := pgpassLine(id, pd)
	if err != nil {
		return line, nil
	}
	if c.GraceEndsAt != nil && (r.graceEnds.IsZero() || c.GraceEndsAt.Before(r.graceEnds)) {
		r.graceEnds = *c.GraceEndsAt
	}
	return line + pl, nil
}

func pgpassLine(id string, d db) (string, error) {
	e := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace
	for _, s := range []string{d.host, d.port, d.database, d.user, d.password} {
		if strings.ContainsAny(s, "\r\n") {
			return "", fmt.Errorf("credential %s: a .pgpass line cannot hold a line break", id)
		}
	}
	return e(d.host) + ":" + e(d.port) + ":" + e(d.database) + ":" + e(d.user) + ":" + e(d.password) + "\n", nil
}

// pgService: a pg_service.conf section (use with PGSERVICEFILE and
// "service=NAME"): user and password in one file, so a rotation that changes
// the user (alternating strategy) is read in one piece.
func (r *renderer) pgService(name, id string) (string, error) {
	d, err := r.db(id, "5432")
	if err != nil {
		return "", err
	}
	if d.database == "" {
		d.database = "postgres"
	}
	var b strings.Builder
	b.WriteString("[" + name + "]\n")
	for _, kv := range [][2]string{{"host", d.host}, {"port", d.port}, {"dbname", d.database}, {"user", d.user}, {"password", d.password}, {"sslmode", d.sslmode}} {
		if kv[1] == "" {
			continue
		}
		if strings.ContainsAny(kv[1], "\r\n") || strings.TrimSpace(kv[1]) != kv[1] {
			return "", fmt.Errorf("credential %s: a pg_service.conf value cannot hold a line break or start or end with a space (field %s)", id, kv[0])
		}
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	return b.String(), nil
}

// mysqlDSN: the go-sql-driver/mysql DSN user:password@tcp(host:port)/db.
func (r *renderer) mysqlDSN(id string) (string, error) {
	d, err := r.db(id, "3306")
	if err != nil {
		return "", err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = d.user, d.password, "tcp", net.JoinHostPort(d.host, d.port), d.database
	return cfg.FormatDSN(), nil
}

// myCnf: a [client] section of a MySQL option file, values double-quoted.
func (r *renderer) myCnf(id string) (string, error) {
	d, err := r.db(id, "3306")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	b.WriteString("host=" + myQuote(d.host) + "\n")
	b.WriteString("port=" + myQuote(d.port) + "\n")
	b.WriteString("user=" + myQuote(d.user) + "\n")
	b.WriteString("password=" + myQuote(d.password) + "\n")
	if d.database != "" {
		b.WriteString("database=" + myQuote(d.database) + "\n")
	}
	return b.String(), nil
}

// myQuote quotes a MySQL option file value: the escapes that option files
// understand (\\ \" \n \r \t \b \s) inside double quotes.
func myQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "\b", `\b`).Replace(s) + `"`
}

// jdbcURL: the JDBC URL of a postgres or mysql credential, without secrets
// (Spring reads the username and password from their own properties).
func (r *renderer) jdbcURL(id string) (string, error) {
	c, err := r.get(id)
	if err != nil {
		return "", err
	}
	kind, port := "postgresql", "5432"
	if c.Type == credential.MySQL {
		kind, port = "mysql", "3306"
	}
	host, p, database := fieldString(c.Fields["host"]), fieldString(c.Fields["port"]), fieldString(c.Fields["database"])
	if host == "" {
		host = "localhost"
	}
	if p == "" {
		p = port
	}
	if database == "" && kind == "postgresql" {
		database = "postgres"
	}
	return "jdbc:" + kind + "://" + net.JoinHostPort(host, p) + "/" + url.PathEscape(database), nil
}

// envLine: NAME=value for a .env file, quoted so that docker compose,
// python-dotenv, systemd EnvironmentFile and shells read value back.
func envLine(name, value string) (string, error) {
	if !envName.MatchString(name) {
		return "", fmt.Errorf("env: %q is not an environment variable name", name)
	}
	return name + "=" + envQuote(value) + "\n", nil
}

// envQuote quotes one .env value: single quotes (no expansion anywhere) when
// it holds no single quote or line break, else double quotes with \\ \" \$ \n
// escaped.
func envQuote(v string) string {
	if !strings.ContainsAny(v, "'\n\r") {
		return "'" + v + "'"
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`", "\n", `\n`, "\r", `\r`).Replace(v) + `"`
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("json: %T cannot be encoded", v)
	}
	return string(b), nil
}

func b64dec(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("base64decode: the input is not standard base64")
	}
	return string(b), nil
}

// pemBlocks splits the certificate field of an x509 credential.
func (r *renderer) pemBlocks(id string) ([]*pem.Block, error) {
	c, err := r.get(id)
	if err != nil {
		return nil, err
	}
	rest := []byte(fieldString(c.Fields["certificate"]))
	var out []*pem.Block
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("credential %s has no PEM certificate in field \"certificate\"", id)
	}
	return out, nil
}

func encodePEM(bs []*pem.Block) string {
	var buf bytes.Buffer
	for _, b := range bs {
		pem.Encode(&buf, b)
	}
	return buf.String()
}

func (r *renderer) funcs() template.FuncMap {
	return template.FuncMap{
		"cred":         r.cred,
		"field":        r.field,
		"secret":       r.secret,
		"pgurl":        r.pgURL,
		"pgdsn":        r.pgDSN,
		"pgpass":       r.pgpass,
		"pgservice":    r.pgService,
		"mysqldsn":     r.mysqlDSN,
		"mycnf":        r.myCnf,
		"jdbcurl":      r.jdbcURL,
		"env":          envLine,
		"envquote":     envQuote,
		"json":         toJSON,
		"base64":       func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"base64decode": b64dec,
		"pemcert": func(id string) (string, error) {
			bs, err := r.pemBlocks(id)
			if err != nil {
				return "", err
			}
			return encodePEM(bs[:1]), nil
		},
		"pemchain": func(id string) (string, error) {
			bs, err := r.pemBlocks(id)
			if err != nil {
				return "", err
			}
			return encodePEM(bs[1:]), nil
		},
		"pemfullchain": func(id string) (string, error) {
			bs, err := r.pemBlocks(id)
			if err != nil {
				return "", err
			}
			return encodePEM(bs), nil
		},
		"pemkey": func(id string) (string, error) { return r.secret(id, "private_key") },
	}
}

// parseTemplate checks a template's syntax and function names.
func parseTemplate(name, text string) (*template.Template, error) {
	return (&renderer{}).parse(name, text)
}

func (r *renderer) parse(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Funcs(r.funcs()).Parse(text)
}

// render renders text; errors are scrubbed of every secret fetched.
func (r *renderer) render(name, text string) ([]byte, error) {
	t, err := r.parse(name, text)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, nil); err != nil {
		return nil, r.scrub(err)
	}
	return buf.Bytes(), nil
}
