package postgres

import (
	"context"
	"slices"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Field names read from rotator.Credential.Fields: the common ones in
// dbrot.Fields, and these.
type fields struct {
	dbrot.Fields
	Database      string      `json:"database"`
	SSLMode       string      `json:"sslmode"`
	StrategyUsers dbrot.Users `json:"strategy_users"`
	OwnerRole     string      `json:"owner_role"`
}

var spec = dbrot.Spec{Port: 5432, Probe: "SELECT 1", Policy: dbrot.PrintablePolicy}

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

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
	if f.SSLMode == "" {
		f.SSLMode = "disable"
	}
	if !slices.Contains(sslModes, f.SSLMode) {
		return target{}, dbrot.Invalid(op, c.ID, "sslmode %q is not one of %s", f.SSLMode, strings.Join(sslModes, ", "))
	}
	if f.Database == "" {
		f.Database = "postgres"
	}
	return target{fields: f, Password: c.Secret["password"]}, nil
}

// other checks the strategy_users setting and returns the other role.
func (t target) other(op string) (string, error) {
	return t.StrategyUsers.Other(op, t.Username, "role")
}

// admin resolves the admin_credential. The admin names its own host, port and
// sslmode (sslmode defaults to disable, as for any credential); only the
// database it connects to defaults to the target's.
func admin(ctx context.Context, res rotator.Resolver, t target, op string) (target, bool, error) {
	var f fields
	c, ok, err := dbrot.Admin(ctx, res, op, t.Fields, &f, spec)
	if !ok || err != nil {
		return target{}, false, err
	}
	if f.Database == "" {
		f.Database = t.Database
	}
	if f.SSLMode == "" {
		f.SSLMode = "disable"
	}
	if !slices.Contains(sslModes, f.SSLMode) {
		return target{}, false, rotator.Errorf(rotator.ClassConfig, op, "admin credential %s: sslmode %q is not valid", c.ID, f.SSLMode)
	}
	return target{fields: f, Password: c.Secret["password"]}, true, nil
}

// Binding reports the admin_credential c names, its server and the roles a
// rotation changes (rotator.Binder).
func (r *Rotator) Binding(c rotator.Credential) (rotator.Binding, error) {
	return dbrot.BindingOf(c, spec)
}

// Scope reads the scope an admin credential declares (rotator.Binder).
func (r *Rotator) Scope(field string, admin rotator.Credential) (rotator.Scope, error) {
	return dbrot.AdminScope(admin, spec)
}
