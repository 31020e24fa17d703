package redis_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	rrot "github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

// The helpers all database rotators' tests share, under the names used here.
var (
	ctx = dbrottest.Ctx
	// No error may show a password, nor the SHA-256 hash ACL rules carry.
	errs = dbrottest.Errors{Derived: func(p string) []string {
		sum := sha256.Sum256([]byte(p))
		return []string{hex.EncodeToString(sum[:])}
	}}
	wantClass = errs.WantClass
)

type env struct {
	srv     *testenv.RedisServer
	res     dbrottest.Resolver
	adminID string
}

func newEnv(t testing.TB, aclFile bool) *env {
	srv := testenv.Redis(t, aclFile)
	e := &env{srv: srv, res: dbrottest.Resolver{}, adminID: "admin/" + testenv.UniqueName("")}
	e.res[e.adminID] = rotator.Credential{ID: e.adminID, Type: "redis",
		Fields: map[string]any{"host": srv.Host, "port": srv.Port, "username": srv.AdminUser},
		Secret: secret.Map{"password": secret.New(srv.AdminPassword)}}
	return e
}

// user creates an ACL user; withAdmin routes changes through the admin,
// otherwise the user needs (and gets) the ACL commands itself.
func (e *env) user(t testing.TB, name string, withAdmin bool) rotator.Credential {
	pw := testenv.UniqueName("pw-")
	e.srv.Do(t, "ACL", "SETUSER", name, "reset", "on", ">"+pw, "~*", "&*", "+@all")
	f := map[string]any{"host": e.srv.Host, "port": fmt.Sprint(e.srv.Port), "username": name}
	if withAdmin {
		f["admin_credential"] = e.adminID
	}
	return rotator.Credential{ID: "cache/" + name, Type: "redis", Version: 1, Fields: f, Secret: secret.Map{"password": secret.New(pw)}}
}

func (e *env) authenticates(t *testing.T, c rotator.Credential) bool {
	t.Helper()
	cl := goredis.NewClient(&goredis.Options{Addr: e.srv.Addr(), Username: c.String("username"), Password: c.Secret["password"].Reveal(),
		MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
	defer cl.Close()
	err := cl.Ping(context.Background()).Err()
	if err == nil {
		return true
	}
	if goredis.IsAuthError(err) {
		return false
	}
	t.Fatalf("login as %q: %v", c.String("username"), err)
	return false
}

func TestConformance(t *testing.T) {
	rot := rrot.New(rrot.Config{})
	for _, tc := range []struct {
		name           string
		aclFile, admin bool
	}{{"aclfile_admin", true, true}, {"aclfile_self", true, false}, {"noaclfile_admin", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.aclFile)
			rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: e.authenticates,
				NewCredential: func(t *testing.T) rotator.Credential { return e.user(t, testenv.UniqueName("u_"), tc.admin) }})
		})
	}
	t.Run("sanitized", func(t *testing.T) {
		e := newEnv(t, true)
		rotatortest.Run(t, rotatortest.Harness{Rotator: rotator.Sanitize(rot), Resolver: e.res, Authenticates: e.authenticates,
			NewCredential: func(t *testing.T) rotator.Credential { return e.user(t, testenv.UniqueName("u_"), true) }})
	})
}

// User names that look like quotes, escapes, injections or ACL rules are
// only names: the victim keeps its password and no rule leaks into the user.
func TestHostileUserNames(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	victim := e.user(t, "victim", true)
	for _, name := range []string{`it's"q"\`, `"';ACL_DELUSER_victim;--`, `nopass`, `>x`, `allcommands`, `#0000`, `on`, `resetpass`} {
		t.Run(name, func(t *testing.T) {
			rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: e.authenticates,
				NewCredential: func(t *testing.T) rotator.Credential { return e.user(t, name, true) }})
			u := e.srv.Do(t, "ACL", "GETUSER", name).(map[any]any) // RESP3 map
			if slices.Contains(u["flags"].([]any), any("nopass")) {
				t.Fatalf("user %q got nopass", name)
			}
		})
	}
	if !e.authenticates(t, victim) {
		t.Fatal("victim lost its password")
	}
	// Names Redis refuses (spaces) are a config error and create nothing.
	bad := e.user(t, "plain", true)
	bad.Fields["username"] = "has space"
	pend := bad
	pend.Secret = secret.Map{"password": secret.New(testenv.UniqueName("p-"))}
	_, err := rot.Apply(context.Background(), rotator.ApplyRequest{Current: bad, Pending: pend, Strategy: rotator.Dual, Resolver: e.res})
	if rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("err = %v, want ClassConfig", err)
	}
}

// stage stages the next version for the one strategy, dual.
func stage(t testing.TB, rot rotator.Rotator, res rotator.Resolver, cur rotator.Credential) rotator.Credential {
	t.Helper()
	return dbrottest.Stage(t, rot, res, cur, rotator.Dual)
}

// rotate runs one whole dual rotation and returns the new version.
func rotate(t testing.TB, rot rotator.Rotator, res rotator.Resolver, cur rotator.Credential) rotator.Credential {
	t.Helper()
	return dbrottest.Rotation{Rotator: rot, Resolver: res, Strategy: rotator.Dual}.Run(t, cur)
}

// With an ACL file a rotation survives a restart; the plaintext is not in it.
func TestPersistenceAcrossRestart(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	cur := e.user(t, "app", true)
	next := rotate(t, rot, e.res, cur)
	e.srv.Restart(t)
	if !e.authenticates(t, next) {
		t.Fatal("the new password does not work after a restart")
	}
	if e.authenticates(t, cur) {
		t.Fatal("the retired password works again after a restart")
	}
	resp, err := rot.Check(ctx(t), rotator.CheckRequest{Credential: next, Resolver: e.res})
	if err != nil || len(resp.Warnings) != 0 {
		t.Fatalf("check: %q %v", resp.Warnings, err)
	}
}

// Without an ACL file, Check warns, and a restart indeed reverts the rotation.
func TestNoACLFileWarns(t *testing.T) {
	e := newEnv(t, false)
	rot := rrot.New(rrot.Config{})
	cur := e.user(t, "app", true)
	resp, err := rot.Check(ctx(t), rotator.CheckRequest{Credential: cur, Resolver: e.res})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "--aclfile") {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	t.Logf("warning: %s", resp.Warnings[0])
	next := rotate(t, rot, e.res, cur)
	e.srv.Restart(t)
	if e.authenticates(t, next) {
		t.Fatal("expected the rotation to be lost without an ACL file")
	}
}

func TestCheckWarnings(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	c := e.user(t, "loose", true)
	e.srv.Do(t, "ACL", "SETUSER", "loose", "nopass", "off")
	resp, err := rot.Check(ctx(t), rotator.CheckRequest{Credential: c, Resolver: e.res})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warnings: %q", resp.Warnings)
	if len(resp.Warnings) != 2 { // nopass, off
		t.Fatalf("warnings %q", resp.Warnings)
	}
	many := e.user(t, "many", true)
	e.srv.Do(t, "ACL", "SETUSER", "many", ">a1-aaaaaa", ">a2-bbbbbb")
	if resp, _ = rot.Check(ctx(t), rotator.CheckRequest{Credential: many, Resolver: e.res}); len(resp.Warnings) != 1 {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	c.Fields["username"] = "ghost"
	resp, _ = rot.Check(ctx(t), rotator.CheckRequest{Credential: c, Resolver: e.res})
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "does not exist") {
		t.Fatalf("warnings %q", resp.Warnings)
	}
}

// The password reaches the server only as a hash: the ACL file and ACL LIST
// hold no plaintext.
func TestNoPlaintextOnServer(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	next := rotate(t, rot, e.res, e.user(t, "app", true))
	list := fmt.Sprint(e.srv.Do(t, "ACL", "LIST"))
	if strings.Contains(list, next.Secret["password"].Reveal()) {
		t.Fatal("plaintext in ACL LIST")
	}
}
