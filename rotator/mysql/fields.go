package mysql

import (
	"context"
	"slices"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Field names read from rotator.Credential.Fields: the common ones in
// dbrot.Fields, and these.
type fields struct {
	dbrot.Fields
	Database      string      `json:"database"`
	UserHost      string      `json:"user_host"`
	TLS           string      `json:"tls"`
	StrategyUsers dbrot.Users `json:"strategy_users"`
}

var spec = dbrot.Spec{Port: 3306, Probe: "SELECT 1", Policy: dbrot.PrintablePolicy}

// TLS settings the driver understands by name.
var tlsModes = []string{"", "false", "true", "skip-verify", "preferred"}

// target is one login: where, who, and with which password.
type target struct {
	fields
	Password secret.Value
}

func parse(c rotator.Credential, op string) (target, error) {
	var f fields
	if err := dbrot.Parse(c, op, &f, spec); err != nil {
		return target{}, err
	}
	if f.UserHost == "" {
		f.UserHost = "%"
	}
	if !slices.Contains(tlsModes, f.TLS) {
		return target{}, dbrot.Invalid(op, c.ID, "tls %q is not one of false, true, skip-verify, preferred", f.TLS)
	}
	return target{fields: f, Password: c.Secret["password"]}, nil
}

// other checks strategy_users and returns the user that is not t's.
func (t target) other(op string) (string, error) {
	return t.StrategyUsers.Other(op, t.Username, "user")
}

// admin resolves admin_credential, which names its own host, port and tls.
func admin(ctx context.Context, res rotator.Resolver, t target, op string) (target, bool, error) {
	var f fields
	c, ok, err := dbrot.Admin(ctx, res, op, t.Fields, &f, spec)
	if !ok || err != nil {
		return target{}, false, err
	}
	if !slices.Contains(tlsModes, f.TLS) {
		return target{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: tls %q is not valid", c.ID, f.TLS)
	}
	f.Database = "" // the admin needs no database
	return target{fields: f, Password: c.Secret["password"]}, true, nil
}

// Binding reports the admin_credential c names, its server and the users a
// rotation changes (rotator.Binder).
func (r *Rotator) Binding(c rotator.Credential) (rotator.Binding, error) {
	return dbrot.BindingOf(c, spec)
}

// Scope reads the scope an admin credential declares (rotator.Binder).
func (r *Rotator) Scope(field string, admin rotator.Credential) (rotator.Scope, error) {
	return dbrot.AdminScope(admin, spec)
}
