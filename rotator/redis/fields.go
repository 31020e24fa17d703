package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Field names read from rotator.Credential.Fields.
type fields struct {
	Host            string                 `json:"host"`
	Port            port                   `json:"port"`
	Username        string                 `json:"username"`
	Probe           string                 `json:"probe"`
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

// target is one login.
type target struct {
	fields
	probe    []any
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
		f.Port = 6379
	}
	if f.Port < 1 || f.Port > 65535 {
		return bad("port %d out of range", f.Port)
	}
	if f.Username == "" {
		return bad(`field username is required (name the ACL user, "default" included)`)
	}
	if f.Probe == "" {
		f.Probe = "PING"
	}
	var probe []any
	for _, w := range strings.Fields(f.Probe) {
		probe = append(probe, w)
	}
	if f.PasswordPolicy != nil {
		if err := f.PasswordPolicy.Validate(); err != nil {
			return bad("password_policy: %v", err)
		}
	}
	return target{fields: f, probe: probe, Password: c.Secret["password"]}, nil
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
		f.Port = 6379
	}
	if f.Username == "" {
		f.Username = "default" // an admin is usually the default user with requirepass
	}
	return target{fields: f, Password: c.Secret["password"]}, true, nil
}
