package redis

import (
	"context"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// The fields read from rotator.Credential.Fields are the common ones,
// dbrot.Fields; an admin credential without a username is the default user
// with requirepass.
var spec = dbrot.Spec{Port: 6379, Probe: "PING", AdminUsername: "default",
	UsernameHint: ` (name the ACL user, "default" included)`}

// target is one login.
type target struct {
	dbrot.Fields
	probe    []any
	Password secret.Value
}

func parse(c rotator.Credential, op string) (target, error) {
	var f dbrot.Fields
	if err := dbrot.Parse(c, op, &f, spec); err != nil {
		return target{}, err
	}
	var probe []any
	for _, w := range strings.Fields(f.Probe) {
		probe = append(probe, w)
	}
	return target{Fields: f, probe: probe, Password: c.Secret["password"]}, nil
}

// admin resolves admin_credential, which names its own host and port.
func admin(ctx context.Context, res rotator.Resolver, t target, op string) (target, bool, error) {
	var f dbrot.Fields
	c, ok, err := dbrot.Admin(ctx, res, op, t.Fields, &f, spec)
	if !ok || err != nil {
		return target{}, false, err
	}
	return target{Fields: f, Password: c.Secret["password"]}, true, nil
}

// Binding reports the admin_credential c names, its server and the ACL users
// a rotation changes (rotator.Binder).
func (r *Rotator) Binding(c rotator.Credential) (rotator.Binding, error) {
	return dbrot.BindingOf(c, spec)
}

// Scope reads the scope an admin credential declares (rotator.Binder).
func (r *Rotator) Scope(field string, admin rotator.Credential) (rotator.Scope, error) {
	return dbrot.AdminScope(admin, spec)
}
