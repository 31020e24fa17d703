package mysql

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Field names read from rotator.Credential.Fields.
type fields struct {
	Host            string                 `json:"host"`
	Port            port                   `json:"port"`
	Database        string                 `json:"database"`
	Username        string                 `json:"username"`
	UserHost        string                 `json:"user_host"`
	TLS             string                 `json:"tls"`
	Probe           string                 `json:"probe"`
	StrategyUsers   []string               `json:"strategy_users"`
	AdminCredential string                 `json:"admin_credential"`
	PasswordPolicy  *secret.PasswordPolicy `json:"password_policy"`
}

// port accepts a JSON number or a string.
type port int

func (p *port) UnmarshalJSON(b []byte) error {
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
		*p = port(x)
	case string:
		if x == "" {
			*p = 0
			return nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return fmt.Errorf("port %q is not a number", x)
		}
		*p = port(n)
	default:
		return fmt.Errorf("port must be a number or a string")
	}
	return nil
}

// TLS settings the driver understands by name.
var tlsModes = []string{"", "false", "true", "skip-verify", "preferred"}

// target is one login: where, who, and with which password.
type target struct {
	fields
	Password secret.Value
}

func parse(c rotator.Credential, op string) (target, error) {
	var f fields
	if err := c.Decode(&f); err != nil {
		return target{}, &rotator.Error{Class: rotator.ClassConfig, Op: op, Err: fmt.Errorf("credential %s fields: %v", c.ID, err)}
	}
	bad := func(format string, args ...any) (target, error) {
		return target{}, rotator.Errorf(rotator.ClassConfig, op, "credential %s: "+format, append([]any{c.ID}, args...)...)
	}
	if f.Host == "" {
		f.Host = "127.0.0.1"
	}
	if f.Port == 0 {
		f.Port = 3306
	}
	if f.Port < 1 || f.Port > 65535 {
		return bad("port %d out of range", f.Port)
	}
	if f.Username == "" {
		return bad("field username is required")
	}
	if f.UserHost == "" {
		f.UserHost = "%"
	}
	if !slices.Contains(tlsModes, f.TLS) {
		return bad("tls %q is not one of false, true, skip-verify, preferred", f.TLS)
	}
	if f.Probe == "" {
		f.Probe = "SELECT 1"
	}
	if f.PasswordPolicy != nil {
		if err := validPolicy(*f.PasswordPolicy); err != nil {
			return bad("password_policy: %v", err)
		}
	}
	return target{fields: f, Password: c.Secret["password"]}, nil
}

// validPolicy accepts what secret.PasswordPolicy accepts, restricted to
// printable ASCII without space (passwords end up in DSNs and my.cnf files).
func validPolicy(p secret.PasswordPolicy) error {
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

// other checks strategy_users and returns the user that is not t's.
func (t target) other(op string) (string, error) {
	u := t.StrategyUsers
	if len(u) != 2 || u[0] == "" || u[1] == "" || u[0] == u[1] {
		return "", rotator.Errorf(rotator.ClassConfig, op, "alternating needs strategy_users with two different user names")
	}
	switch t.Username {
	case u[0]:
		return u[1], nil
	case u[1]:
		return u[0], nil
	}
	return "", rotator.Errorf(rotator.ClassConfig, op, "username %q is not one of strategy_users", t.Username)
}

// admin resolves admin_credential, defaulting its host and port to the target's.
func admin(ctx context.Context, res rotator.Resolver, t target, op string) (target, bool, error) {
	if t.AdminCredential == "" {
		return target{}, false, nil
	}
	if res == nil {
		return target{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin_credential %q set but no resolver given", t.AdminCredential)
	}
	c, err := res.Resolve(ctx, t.AdminCredential)
	if err != nil {
		cl := rotator.ClassOf(err)
		if cl == rotator.ClassUnknown {
			cl = rotator.ClassConfig
		}
		return target{}, false, &rotator.Error{Class: cl, Op: op, Err: fmt.Errorf("resolve admin_credential %q: %w", t.AdminCredential, err)}
	}
	var f fields
	if err := c.Decode(&f); err != nil {
		return target{}, false, &rotator.Error{Class: rotator.ClassConfig, Op: op, Err: fmt.Errorf("admin credential %s fields: %v", c.ID, err)}
	}
	if f.Host == "" {
		f.Host = t.Host
		if f.Port == 0 {
			f.Port = t.Port
		}
	}
	if f.Port == 0 {
		f.Port = 3306
	}
	if f.TLS == "" {
		f.TLS = t.TLS
	}
	if !slices.Contains(tlsModes, f.TLS) {
		return target{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: tls %q is not valid", c.ID, f.TLS)
	}
	if f.Username == "" {
		return target{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: field username is required", c.ID)
	}
	f.Database = "" // the admin needs no database
	return target{fields: f, Password: c.Secret["password"]}, true, nil
}
