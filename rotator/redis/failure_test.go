package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	rrot "github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/secret"
)

func pw(c rotator.Credential) secret.Value { return c.Secret["password"] }

// The server is killed between Apply and Verify: every later step is
// ClassTransient; after a restart (with its ACL file) the rotation finishes.
func TestServerStoppedMidRotation(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{ConnectTimeout: time.Second})
	cur := e.user(t, "app", true)
	e.srv.Do(t, "ACL", "SAVE")
	pend := stage(t, rot, e.res, cur)
	errs.ServerGone(t, dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Dual}, e.srv.Stop,
		cur, pend, true, pw(cur), pw(pend), secret.New(e.srv.AdminPassword))

	e.srv.Restart(t) // Apply saved the ACL: both versions work, the retry succeeds
	if !e.authenticates(t, cur) || !e.authenticates(t, pend) {
		t.Fatal("after restart both versions must log in")
	}
	if _, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
	if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
}

func TestServerHangs(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{ConnectTimeout: 300 * time.Millisecond, CommandTimeout: 300 * time.Millisecond})
	p := testenv.NewProxy(t, e.srv.Addr())
	p.Blackhole()
	cur := e.user(t, "app", true)
	cur.Fields["host"], cur.Fields["port"] = p.Host, p.Port
	start := time.Now()
	_, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: cur, Resolver: e.res})
	wantClass(t, "verify", err, rotator.ClassTransient, pw(cur))
	dbrottest.NamesAddr(t, "verify", err, cur)
	// The timeouts apply: a hang would last forever, so a bound 100 times the
	// timeouts tells the two apart however loaded the machine is.
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %v", d)
	}
}

// The admin loses ACL SETUSER after Stage: ClassPermission naming it; with no
// ACL permission at all, the first command it needs is named.
func TestPermissionDenied(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	adminPW := testenv.UniqueName("rotadmin-")
	e.srv.Do(t, "ACL", "SETUSER", "rotadmin", "on", ">"+adminPW, "+ping", "+acl|getuser", "+acl|setuser", "+acl|save", "+config|get")
	res := dbrottest.Resolver{"rotadmin": {ID: "rotadmin", Fields: map[string]any{"host": e.srv.Host, "port": e.srv.Port, "username": "rotadmin"}, Secret: secret.Map{"password": secret.New(adminPW)}}}
	cur := e.user(t, "app", false)
	cur.Fields["admin_credential"] = "rotadmin"
	if _, err := rot.Check(ctx(t), rotator.CheckRequest{Credential: cur, Resolver: res}); err != nil {
		t.Fatalf("a least-privilege admin must be enough: %v", err)
	}
	pend := stage(t, rot, res, cur)
	secrets := []secret.Value{pw(cur), pw(pend), secret.New(adminPW)}
	e.srv.Do(t, "ACL", "SETUSER", "rotadmin", "-acl|setuser")
	_, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: res})
	wantClass(t, "apply", err, rotator.ClassPermission, secrets...)
	if p := rotator.PrivilegeOf(err); p != "ACL SETUSER" {
		t.Fatalf("privilege %q, want ACL SETUSER", p)
	}
	e.srv.Do(t, "ACL", "SETUSER", "rotadmin", "-@all", "+ping")
	_, err = rot.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: res})
	wantClass(t, "revert", err, rotator.ClassPermission, secrets...)
	if p := rotator.PrivilegeOf(err); p != "ACL GETUSER" {
		t.Fatalf("privilege %q, want ACL GETUSER", p)
	}
	if !e.authenticates(t, cur) {
		t.Fatal("current broken")
	}
}

func TestVerifyClasses(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	verify := dbrottest.Verifier(t, rot, e.res)
	errs.WrongPassword(t, verify, e.user(t, "good", false))

	off := e.user(t, "off", false)
	e.srv.Do(t, "ACL", "SETUSER", "off", "off")
	wantClass(t, "user off", verify(off), rotator.ClassRejected, pw(off))

	denied := e.user(t, "denied", false)
	e.srv.Do(t, "ACL", "SETUSER", "denied", "-get")
	denied.Fields["probe"] = "GET somekey"
	err := verify(denied)
	wantClass(t, "probe denied", err, rotator.ClassPermission, pw(denied))
	if rotator.PrivilegeOf(err) != "GET" {
		t.Fatalf("privilege %q", rotator.PrivilegeOf(err))
	}

	full := e.user(t, "full", false)
	e.srv.Do(t, "CONFIG", "SET", "maxclients", "1")
	hold := goredis.NewClient(&goredis.Options{Addr: e.srv.Addr(), Password: e.srv.AdminPassword, PoolSize: 1, DisableIdentity: true, MaxRetries: -1})
	defer hold.Close()
	hold.Ping(context.Background())
	wantClass(t, "max clients", verify(full), rotator.ClassTransient, pw(full))
	hold.Do(context.Background(), "CONFIG", "SET", "maxclients", "1000")

	wrongAdmin := secret.New("wrong-admin-" + testenv.UniqueName(""))
	res := e.res.WithPassword(e.adminID, wrongAdmin)
	cur := e.user(t, "app", true)
	pend := stage(t, rot, res, cur)
	_, err = rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: res})
	wantClass(t, "admin wrong password", err, rotator.ClassAuth, pw(cur), pw(pend), wrongAdmin)
}

// Retire refuses when the current password is not on the user: it would
// otherwise remove the last working one.
func TestRetireGuardsCurrent(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	cur := e.user(t, "app", true)
	pend := stage(t, rot, e.res, cur) // never applied
	_, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual, Resolver: e.res})
	wantClass(t, "retire", err, rotator.ClassUnknown, pw(cur), pw(pend))
	if !e.authenticates(t, cur) {
		t.Fatal("the only working password was removed")
	}
}

var _ = context.Background

// The server freezes (SIGSTOP) mid-rotation: pooled admin connections hang
// inside their command; each later step ends at its deadline as
// ClassTransient naming the address and the step (issue 18).
func TestServerFreezesMidRotation(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{ConnectTimeout: time.Second})
	cur := e.user(t, "app", true)
	e.srv.Do(t, "ACL", "SAVE")
	pend := stage(t, rot, e.res, cur)
	t.Cleanup(e.srv.Thaw)
	errs.ServerFreezes(t, dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Dual}, e.srv.Freeze,
		cur, pend, true, pw(cur), pw(pend), secret.New(e.srv.AdminPassword))
}
