package mysql_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/secret"
)

func pw(c rotator.Credential) secret.Value { return c.Secret["password"] }

// viaProxy points the credential and its admin at p.
func (e *env) viaProxy(c rotator.Credential, p *testenv.Proxy) (rotator.Credential, dbrottest.Resolver) {
	return dbrottest.ViaProxy(c, e.res, e.adminID, p)
}

func TestServerGoneMidRotation(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{ConnectTimeout: 10 * time.Second}) // generous: the proxy is closed, not hung
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.db.Host, e.db.Port))
			direct := e.single(t, "", true)
			if st == rotator.Alternating {
				direct = e.pair(t, "")
			}
			cur, res := e.viaProxy(direct, p)
			pend := stage(t, rot, res, cur, st)
			errs.ServerGone(t, dbrottest.Rotation{Rotator: rot, Resolver: res, Strategy: st}, p.Close,
				cur, pend, st != rotator.InPlace, pw(cur), pw(pend), secret.New(e.adminPW))
		})
	}
}

func TestServerHangs(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{ConnectTimeout: 300 * time.Millisecond, QueryTimeout: 300 * time.Millisecond})
	p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.db.Host, e.db.Port))
	p.Blackhole()
	cur, res := e.viaProxy(e.single(t, "", true), p)
	errs.ServerHangs(t, rot, res, cur, rotator.Dual, 30*time.Second) // 100 times the timeouts: a hang lasts forever, a loaded machine does not
}

// CREATE USER revoked from the admin after Stage: ClassPermission naming it.
func TestPermissionDenied(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			cur := e.single(t, "", true)
			if st == rotator.Alternating {
				cur = e.pair(t, "")
			}
			pend := stage(t, rot, e.res, cur, st)
			secrets := []secret.Value{pw(cur), pw(pend), secret.New(e.adminPW)}
			e.db.Exec(t, "REVOKE CREATE USER ON *.* FROM ?@?", e.admin, "%")
			defer e.db.Exec(t, "GRANT CREATE USER ON *.* TO ?@?", e.admin, "%")
			_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, Resolver: e.res})
			wantClass(t, "apply", err, rotator.ClassPermission, secrets...)
			if p := rotator.PrivilegeOf(err); p != "CREATE USER" {
				t.Fatalf("privilege %q, want CREATE USER", p)
			}
			if st != rotator.InPlace {
				_, err = rot.Retire(ctx(t), rotator.RetireRequest{Old: pend, Current: cur, Strategy: st, Resolver: e.res})
				wantClass(t, "retire", err, rotator.ClassPermission, secrets...)
			}
			if !authenticates(t, cur) {
				t.Fatal("current broken by a refused rotation")
			}
		})
	}
	// Dual without an admin, by an account lacking CREATE USER.
	self := e.single(t, "", false)
	pend := stage(t, rot, e.res, self, rotator.Dual)
	_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: self, Pending: pend, Strategy: rotator.Dual, Resolver: e.res})
	wantClass(t, "dual self", err, rotator.ClassPermission, pw(self), pw(pend))
	if rotator.PrivilegeOf(err) != "CREATE USER" {
		t.Fatalf("privilege %q", rotator.PrivilegeOf(err))
	}
}

func TestVerifyClasses(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	verify := dbrottest.Verifier(t, rot, e.res)
	errs.WrongPassword(t, verify, e.single(t, "", false))

	locked := e.single(t, "", false)
	e.db.Exec(t, "ALTER USER ?@? ACCOUNT LOCK", locked.String("username"), "%")
	wantClass(t, "locked", verify(locked), rotator.ClassRejected, pw(locked))

	limited := e.single(t, "", false)
	e.db.Exec(t, "ALTER USER ?@? WITH MAX_USER_CONNECTIONS 1", limited.String("username"), "%")
	_, done, err := login(ctx(t), limited)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, "too many connections", verify(limited), rotator.ClassTransient, pw(limited))
	done()

	denied := e.single(t, "", false)
	denied.Fields["probe"] = "SELECT COUNT(*) FROM mysql.user"
	err = verify(denied)
	wantClass(t, "probe denied", err, rotator.ClassPermission, pw(denied))

	nodb := e.single(t, "", false)
	nodb.Fields["database"] = e.db.CreateDatabase(t)
	wantClass(t, "database denied", verify(nodb), rotator.ClassPermission, pw(nodb))

	wrongAdmin := secret.New("wrong-admin-" + testenv.UniqueName(""))
	res := e.res.WithPassword(e.adminID, wrongAdmin)
	cur := e.single(t, "", true)
	pend := stage(t, rot, res, cur, rotator.Dual)
	_, err = rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: res})
	wantClass(t, "admin wrong password", err, rotator.ClassAuth, pw(cur), pw(pend), wrongAdmin)
}

func TestInPlaceNothingLogsIn(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	cur := e.single(t, "", false)
	pend := stage(t, rot, e.res, cur, rotator.InPlace)
	e.db.Exec(t, "ALTER USER ?@? IDENTIFIED BY ?", cur.String("username"), "%", "neither-"+testenv.UniqueName(""))
	_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.InPlace, Resolver: e.res})
	wantClass(t, "apply", err, rotator.ClassAuth, pw(cur), pw(pend))
	_, err = rot.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: rotator.InPlace, Resolver: e.res})
	wantClass(t, "revert", err, rotator.ClassAuth, pw(cur), pw(pend))
}

// The server freezes mid-rotation (blackhole: pooled admin connections hang
// inside their command): each later step ends at its deadline as
// ClassTransient naming the address and the step (issue 18).
func TestServerFreezesMidRotation(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{ConnectTimeout: time.Second})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			p := testenv.NewProxy(t, fmt.Sprintf("%s:%d", e.db.Host, e.db.Port))
			direct := e.single(t, "", true)
			if st == rotator.Alternating {
				direct = e.pair(t, "")
			}
			cur, res := e.viaProxy(direct, p)
			pend := stage(t, rot, res, cur, st)
			errs.ServerFreezes(t, dbrottest.Rotation{Rotator: rot, Resolver: res, Strategy: st}, p.Blackhole,
				cur, pend, st != rotator.InPlace, pw(cur), pw(pend), secret.New(e.adminPW))
		})
	}
}
