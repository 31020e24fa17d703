package testenv

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

// PGAlternating is the role layout of docs/targets/postgresql.md on a
// throwaway cluster: an admin with CREATEROLE that manages two login roles A
// and B (the alternating strategy's users), both members of Owner, which owns
// the application's objects. A logs in with APassword; B has no password yet.
// Every role is dropped at the end of the test.
type PGAlternating struct {
	Host          string
	Port          int
	Admin         string
	AdminPassword string
	Owner         string
	A, B          string
	APassword     string
}

// AlternatingRoles creates the roles of PGAlternating with unique names.
func (p *PG) AlternatingRoles(t testing.TB) PGAlternating {
	t.Helper()
	r := PGAlternating{Host: p.Host, Port: p.Port, AdminPassword: UniqueName("admin-pw-"), APassword: UniqueName("pw-a-")}
	r.Admin = p.CreateRole(t, UniqueName("nc_admin_"), r.AdminPassword, "LOGIN CREATEROLE")
	r.Owner = p.CreateRole(t, UniqueName("own_"), "", "NOLOGIN")
	inOwner := " IN ROLE " + pgx.Identifier{r.Owner}.Sanitize()
	r.A = p.CreateRole(t, UniqueName("a_"), r.APassword, "LOGIN"+inOwner)
	r.B = p.CreateRole(t, UniqueName("b_"), "", "NOLOGIN"+inOwner)
	return r
}

// AdminFields are the fields of the admin credential (password: AdminPassword).
func (r PGAlternating) AdminFields() map[string]any {
	return r.fields(map[string]any{"username": r.Admin, "manages": []any{r.A, r.B}})
}

// AppFields are the fields of the application credential (password:
// APassword) whose rotations go through the admin credential adminID.
func (r PGAlternating) AppFields(adminID string) map[string]any {
	return r.fields(map[string]any{"username": r.A, "strategy_users": []any{r.A, r.B}, "owner_role": r.Owner, "admin_credential": adminID})
}

func (r PGAlternating) fields(extra map[string]any) map[string]any {
	out := map[string]any{"host": r.Host, "port": r.Port, "database": "postgres"}
	for k, v := range extra {
		out[k] = v
	}
	return out
}
