package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
)

func pw(c rotator.Credential) secret.Value { return c.Secret["password"] }

// viaProxy points the credential and its admin at p.
func (e *env) viaProxy(c rotator.Credential, p *testenv.Proxy) (rotator.Credential, dbrottest.Resolver) {
	return dbrottest.ViaProxy(c, e.res, e.adminID, p)
}

// The server goes away between Apply and Verify: every later step is
// ClassTransient, and the server still accepts what it accepted.
func TestServerGoneMidRotation(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{ConnectTimeout: 10 * time.Second}) // generous: the proxy is closed, not hung
	for _, st := range []rotator.Strategy{rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.pg.Host, e.pg.Port))
			direct := e.alternatingCred(t, "")
			if st == rotator.InPlace {
				direct = e.inPlaceCred(t, "", false)
			}
			cur, res := e.viaProxy(direct, p)
			pend := stage(t, rot, res, cur, st)
			errs.ServerGone(t, dbrottest.Rotation{Rotator: rot, Resolver: res, Strategy: st, Grace: time.Hour}, p.Close,
				cur, pend, st == rotator.Alternating, pw(cur), pw(pend), secret.New(e.adminPW))
			// Nothing half-done: the pending version (applied) works directly.
			pendDirect := pend
			pendDirect.Fields = map[string]any{}
			for k, v := range pend.Fields {
				pendDirect.Fields[k] = v
			}
			pendDirect.Fields["host"], pendDirect.Fields["port"] = e.pg.Host, e.pg.Port
			if !authenticates(t, pendDirect) {
				t.Fatal("applied version does not log in")
			}
		})
	}
}

// A server that accepts TCP and never answers: the connect timeout ends the
// call with ClassTransient.
func TestServerHangs(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{ConnectTimeout: 300 * time.Millisecond})
	p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.pg.Host, e.pg.Port))
	p.Blackhole()
	cur, res := e.viaProxy(e.alternatingCred(t, ""), p)
	errs.ServerHangs(t, rot, res, cur, rotator.Alternating, 30*time.Second) // 100 times the timeouts: a hang lasts forever, a loaded machine does not
}

// An admin without CREATEROLE (from the start, or revoked mid-rotation) is
// ClassPermission naming CREATEROLE.
func TestPermissionDenied(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	cur := e.alternatingCred(t, "")
	pend := stage(t, rot, e.res, cur, rotator.Alternating)
	secrets := []secret.Value{pw(cur), pw(pend), secret.New(e.adminPW)}
	e.pg.Exec(t, "ALTER ROLE "+quote(e.admin)+" NOCREATEROLE") // revoked after stage
	_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, GraceEndsAt: time.Now().Add(time.Hour), Resolver: e.res})
	wantClass(t, "apply", err, rotator.ClassPermission, secrets...)
	if p := rotator.PrivilegeOf(err); p != "CREATEROLE" {
		t.Fatalf("privilege %q, want CREATEROLE", p)
	}
	_, err = rot.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, Resolver: e.res})
	wantClass(t, "revert", err, rotator.ClassPermission, secrets...)
	_, err = rot.Retire(ctx(t), rotator.RetireRequest{Old: pend, Current: cur, Strategy: rotator.Alternating, Resolver: e.res})
	wantClass(t, "retire", err, rotator.ClassPermission, secrets...)
	if !authenticates(t, cur) {
		t.Fatal("current version broken by a refused rotation")
	}
	e.pg.Exec(t, "ALTER ROLE "+quote(e.admin)+" CREATEROLE")
	if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, GraceEndsAt: time.Now().Add(time.Hour), Resolver: e.res}); err != nil {
		t.Fatalf("apply after the grant: %v", err)
	}

	// The role's own login lacks CREATEROLE (no admin_credential) for alternating.
	self := e.alternatingCred(t, "")
	delete(self.Fields, "admin_credential")
	p2 := stage(t, rot, e.res, self, rotator.Alternating)
	_, err = rot.Apply(ctx(t), rotator.ApplyRequest{Current: self, Pending: p2, Strategy: rotator.Alternating, Resolver: e.res})
	wantClass(t, "apply without admin", err, rotator.ClassPermission, pw(self), pw(p2))
	if rotator.PrivilegeOf(err) != "CREATEROLE" {
		t.Fatalf("privilege %q", rotator.PrivilegeOf(err))
	}
}

func TestVerifyClasses(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	verify := dbrottest.Verifier(t, rot, e.res)
	errs.WrongPassword(t, verify, e.inPlaceCred(t, "", false))

	nologin := e.alternatingCred(t, "")
	nologin.Fields["username"] = nologin.Fields["strategy_users"].([]any)[1]
	wantClass(t, "NOLOGIN role", verify(nologin), rotator.ClassRejected, pw(nologin))

	limited := e.inPlaceCred(t, "", false)
	e.pg.Exec(t, "ALTER ROLE "+quote(limited.String("username"))+" CONNECTION LIMIT 0")
	wantClass(t, "too many connections", verify(limited), rotator.ClassTransient, pw(limited))

	denied := e.inPlaceCred(t, "", false)
	tbl := testenv.UniqueName("private_")
	e.pg.Exec(t, "CREATE TABLE "+tbl+" (x int)")
	t.Cleanup(func() { e.pg.Exec(t, "DROP TABLE "+tbl) })
	denied.Fields["probe"] = "SELECT * FROM " + tbl
	err := verify(denied)
	wantClass(t, "probe denied", err, rotator.ClassPermission, pw(denied))
	if rotator.PrivilegeOf(err) == "" {
		t.Fatal("no privilege named")
	}

	nodb := e.inPlaceCred(t, "", false)
	nodb.Fields["database"] = "no_such_db"
	wantClass(t, "no database", verify(nodb), rotator.ClassConfig, pw(nodb))

	// The admin's own password is wrong: ClassAuth, not retryable.
	wrongAdmin := secret.New("wrong-admin-" + testenv.UniqueName(""))
	res := e.res.WithPassword(e.adminID, wrongAdmin)
	cur := e.alternatingCred(t, "")
	pend := stage(t, rot, res, cur, rotator.Alternating)
	_, err = rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, Resolver: res})
	wantClass(t, "admin wrong password", err, rotator.ClassAuth, pw(cur), pw(pend), wrongAdmin)

	// The admin credential is missing from the store.
	delete(res, e.adminID)
	_, err = rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, Resolver: res})
	wantClass(t, "admin missing", err, rotator.ClassConfig, pw(cur), pw(pend))
}

// In place with neither password working and no admin: ClassAuth, and the
// error names no secret.
func TestInPlaceNothingLogsIn(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	cur := e.inPlaceCred(t, "", false)
	pend := stage(t, rot, e.res, cur, rotator.InPlace)
	e.pg.Exec(t, "ALTER ROLE "+quote(cur.String("username"))+" PASSWORD NULL")
	_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.InPlace, Resolver: e.res})
	wantClass(t, "apply", err, rotator.ClassAuth, pw(cur), pw(pend))
	_, err = rot.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: rotator.InPlace, Resolver: e.res})
	wantClass(t, "revert", err, rotator.ClassAuth, pw(cur), pw(pend))
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	good := e.alternatingCred(t, "")
	resp, err := rot.Check(ctx(t), rotator.CheckRequest{Credential: good, Resolver: e.res})
	if err != nil || len(resp.Warnings) != 0 {
		t.Fatalf("good setup: warnings %q, err %v", resp.Warnings, err)
	}
	bad := e.alternatingCred(t, "")
	users := bad.Fields["strategy_users"].([]any)
	e.pg.Exec(t, "REVOKE "+quote(bad.String("owner_role"))+" FROM "+quote(users[1].(string)))
	e.pg.Exec(t, "ALTER ROLE "+quote(bad.String("owner_role"))+" LOGIN")
	resp, err = rot.Check(ctx(t), rotator.CheckRequest{Credential: bad, Resolver: e.res})
	if err != nil || len(resp.Warnings) != 2 {
		t.Fatalf("bad setup: warnings %q, err %v", resp.Warnings, err)
	}
	t.Logf("warnings: %q", resp.Warnings)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

var _ = context.Background

// The server freezes mid-rotation (blackhole: pooled admin connections hang
// inside their command): each later step ends at its deadline as
// ClassTransient naming the address and the step (issue 18).
func TestServerFreezesMidRotation(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{ConnectTimeout: time.Second})
	for _, st := range []rotator.Strategy{rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.pg.Host, e.pg.Port))
			direct := e.alternatingCred(t, "")
			if st == rotator.InPlace {
				direct = e.inPlaceCred(t, "", false)
			}
			cur, res := e.viaProxy(direct, p)
			pend := stage(t, rot, res, cur, st)
			errs.ServerFreezes(t, dbrottest.Rotation{Rotator: rot, Resolver: res, Strategy: st, Grace: time.Hour}, p.Blackhole,
				cur, pend, st == rotator.Alternating, pw(cur), pw(pend), secret.New(e.adminPW))
		})
	}
}
