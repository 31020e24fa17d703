package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// Check inspects the server for one credential and warns about a setup that
// would make a rotation fail or break consumers: a managing role without
// CREATEROLE, strategy users that do not exist or are not members of
// owner_role, an owner_role that can log in. It changes nothing.
func (r *Rotator) Check(ctx context.Context, req rotator.CheckRequest) (rotator.CheckResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.CheckResponse, error) {
		return r.check(ctx, req)
	})
}

func (r *Rotator) check(ctx context.Context, req rotator.CheckRequest) (resp rotator.CheckResponse, err error) {
	const op = "check"
	t, err := dbrot.Version(op, r.checkConfig, parse, req.Credential)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, t.Password) }()
	conn, release, err := r.manager(ctx, req.Resolver, t, op, t)
	if err != nil {
		return resp, err
	}
	defer func() { err = release(err) }()
	warn := func(format string, args ...any) { resp.Warnings = append(resp.Warnings, fmt.Sprintf(format, args...)) }

	var super, createrole bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").Scan(&super, &createrole); err != nil {
		return resp, classify(op, "", err)
	}
	if !super && !createrole && (len(t.StrategyUsers) > 0 || t.AdminCredential != "") {
		warn("the managing role lacks CREATEROLE: grant it (ALTER ROLE ... CREATEROLE) or set admin_credential to a role that has it")
	}
	if len(t.StrategyUsers) == 0 {
		return resp, nil
	}
	if _, err := t.other(op); err != nil {
		warn("%v", err)
	}
	if t.OwnerRole == "" {
		warn("owner_role is not set: both strategy users should be members of one NOLOGIN role that owns the objects")
	} else {
		var canLogin bool
		err := conn.QueryRow(ctx, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", t.OwnerRole).Scan(&canLogin)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			warn("owner_role %q does not exist", t.OwnerRole)
		case err != nil:
			return resp, classify(op, "", err)
		case canLogin:
			warn("owner_role %q can log in: make it NOLOGIN (ALTER ROLE %s NOLOGIN)", t.OwnerRole, ident(t.OwnerRole))
		}
	}
	for _, u := range t.StrategyUsers {
		var member bool
		err := conn.QueryRow(ctx, "SELECT CASE WHEN $2 = '' THEN true ELSE COALESCE(pg_has_role(oid, (SELECT oid FROM pg_roles WHERE rolname = $2), 'MEMBER'), false) END FROM pg_roles WHERE rolname = $1",
			u, t.OwnerRole).Scan(&member)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			warn("strategy user %q does not exist: CREATE ROLE %s NOLOGIN IN ROLE %s", u, ident(u), ident(t.OwnerRole))
		case err != nil:
			return resp, classify(op, "", err)
		case !member:
			warn("strategy user %q is not a member of owner_role %q: GRANT %s TO %s", u, t.OwnerRole, ident(t.OwnerRole), ident(u))
		}
	}
	return resp, nil
}
