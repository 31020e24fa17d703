package credential_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	mysqlrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
	pgrot "github.com/nebula-credential/nebula-credential/rotator/postgres"
	redisrot "github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	pgstore "github.com/nebula-credential/nebula-credential/store/postgres"
)

// as returns ctx carrying an API principal with grants.
func as(ctx context.Context, actor string, grants ...string) context.Context {
	var gs []acl.Grant
	for _, g := range grants {
		gr, err := acl.ParseGrant(g)
		if err != nil {
			panic(err)
		}
		gs = append(gs, gr)
	}
	return acl.WithPrincipal(ctx, acl.Principal{Actor: actor, Grants: gs})
}

// withRotators registers the real database rotators (no server is needed to
// check a binding).
func withRotators(c *credential.Config) {
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), pgrot.New(pgrot.Config{}))
	reg.Register(string(credential.MySQL), mysqlrot.New(mysqlrot.Config{}))
	reg.Register(string(credential.Redis), redisrot.New(redisrot.Config{}))
	c.Rotators = reg
}

// TestBindingTable: actor grants × admin scope × target account → allowed
// or refused, with the error text. The checks need no live server: they run
// when the credential is written.
func TestBindingTable(t *testing.T) {
	writer := []string{"read:az/", "write:az/"}
	withUse := append([]string{"use:platform/pg-admin"}, writer...)
	scope := func(extra map[string]any) map[string]any {
		f := map[string]any{"host": "db.internal", "port": 5432, "username": "platform_admin"}
		for k, v := range extra {
			f[k] = v
		}
		return f
	}
	app := func(user string, extra map[string]any) map[string]any {
		f := map[string]any{"host": "db.internal", "port": 5432, "username": user, "admin_credential": "platform/pg-admin"}
		for k, v := range extra {
			f[k] = v
		}
		return f
	}
	cases := []struct {
		name   string
		grants []string // nil: the local operator
		admin  map[string]any
		app    map[string]any
		want   string // "" allowed, else a substring of the error
	}{
		{"read+write without use", writer, scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), "has no use grant on platform/pg-admin"},
		{"read on the admin is not use", append([]string{"read:platform/"}, writer...), scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), "has no use grant"},
		{"use, account matches a pattern", withUse, scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), ""},
		{"use, account named exactly", withUse, scope(map[string]any{"manages": "app_orders, app_billing"}), app("app_billing", nil), ""},
		{"use, admin manages nothing (the default)", withUse, scope(nil), app("app_orders", nil), `does not manage account "app_orders" of credential az/evil (its manages: none)`},
		{"use, victim role outside the scope", withUse, scope(map[string]any{"manages": []any{"app_*"}}), app("victim", nil), `does not manage account "victim"`},
		{"use, the admin's own role", withUse, scope(map[string]any{"manages": []any{"*"}}), app("platform_admin", nil), `"platform_admin" is admin credential platform/pg-admin's own login`},
		{"use, own role with manage_self", withUse, scope(map[string]any{"manages": []any{"app_*"}, "manage_self": true}), app("platform_admin", nil), ""},
		{"use, a foreign host", withUse, scope(map[string]any{"manages": []any{"*"}}), app("app_orders", map[string]any{"host": "evil.example"}), "targets evil.example:5432 but admin credential platform/pg-admin manages accounts on db.internal:5432 only"},
		{"use, a foreign port", withUse, scope(map[string]any{"manages": []any{"*"}}), app("app_orders", map[string]any{"port": 6543}), "targets db.internal:6543"},
		{"use, strategy_users partly outside", withUse, scope(map[string]any{"manages": []any{"app_*"}}), app("app_a", map[string]any{"strategy_users": []any{"app_a", "victim"}}), `does not manage account "victim"`},
		{"use on a wider prefix", append([]string{"use:platform/"}, writer...), scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), ""},
		{"admin grant implies use", []string{"admin:*"}, scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), ""},
		{"admin grant does not widen the scope", []string{"admin:*"}, scope(map[string]any{"manages": []any{"app_*"}}), app("victim", nil), `does not manage account "victim"`},
		{"local operator, in scope", nil, scope(map[string]any{"manages": []any{"app_*"}}), app("app_orders", nil), ""},
		{"local operator, out of scope", nil, scope(map[string]any{"manages": []any{"app_*"}}), app("victim", nil), `does not manage account "victim"`},
		{"an admin that does not exist", withUse, nil, app("app_orders", nil), "admin credential platform/pg-admin (named by admin_credential) does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := openAt(t, t.TempDir(), true, withRotators)
			ctx := context.Background()
			if tc.admin != nil {
				if _, err := m.Put(ctx, "platform/pg-admin", credential.PutRequest{Type: credential.Postgres, Fields: tc.admin, Secret: secret.Map{"password": secret.New("admin-pw")}}); err != nil {
					t.Fatal(err)
				}
			}
			wctx := ctx
			if tc.grants != nil {
				wctx = as(ctx, "token:t1", tc.grants...)
			}
			_, err := m.Put(wctx, "az/evil", credential.PutRequest{Type: credential.Postgres, Fields: tc.app, Secret: secret.Map{"password": secret.New("x")}, Actor: "token:t1"})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("allowed, want refusal %q", tc.want)
			case tc.want != "":
				if !errors.Is(err, credential.ErrPermission) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v\nwant ErrPermission containing %q", err, tc.want)
				}
				if _, gerr := m.Get(ctx, "az/evil", credential.GetOptions{}); !errors.Is(gerr, credential.ErrNotFound) {
					t.Fatalf("refused put stored something: %v", gerr)
				}
			}
		})
	}
}

// TestBindingSharedAccount: an account another stored credential manages is
// refused unless the admin sets manage_shared.
func TestBindingSharedAccount(t *testing.T) {
	m := openAt(t, t.TempDir(), true, withRotators)
	ctx := context.Background()
	admin := map[string]any{"host": "db.internal", "username": "platform_admin", "manages": []any{"*"}}
	put := func(id string, f map[string]any) error {
		_, err := m.Put(ctx, id, credential.PutRequest{Type: credential.Postgres, Fields: f, Secret: secret.Map{"password": secret.New("pw")}})
		return err
	}
	if err := put("platform/pg-admin", admin); err != nil {
		t.Fatal(err)
	}
	// The victim rotates itself (no admin).
	if err := put("prod/orders", map[string]any{"host": "db.internal", "username": "orders"}); err != nil {
		t.Fatal(err)
	}
	err := put("az/evil", map[string]any{"host": "db.internal", "username": "orders", "admin_credential": "platform/pg-admin"})
	if !errors.Is(err, credential.ErrPermission) || !strings.Contains(err.Error(), `account "orders" on db.internal:5432 is already managed by credential prod/orders`) {
		t.Fatalf("shared account: %v", err)
	}
	admin["manage_shared"] = true
	if err := put("platform/pg-admin", admin); err != nil {
		t.Fatal(err)
	}
	if err := put("az/evil", map[string]any{"host": "db.internal", "username": "orders", "admin_credential": "platform/pg-admin"}); err != nil {
		t.Fatalf("manage_shared: %v", err)
	}
}

// TestBindingRecheckedAtRotation: narrowing the admin's scope, revoking the
// binder's grant, or a binding never approved (an upgraded store) stops
// rotations, scheduled ones included, with a permission error, an audit
// entry and a doctor finding; a scheduled one is pushed back instead of
// retried every tick; ApproveBindings (`admin approve`) with use on the admin
// restores it.
func TestBindingRecheckedAtRotation(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		clk := newClock()
		testBindingRechecked(t, clk, openAt(t, t.TempDir(), true, func(c *credential.Config) { withRotators(c); c.Clock = clk.Now }))
	})
	// On PostgreSQL a failed statement ends the transaction: the checks
	// must only ask questions whose "no" is an answer.
	t.Run("postgres", func(t *testing.T) {
		clk := newClock()
		st, err := pgstore.Open(context.Background(), testenv.PGStoreDB(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg := credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(t.TempDir(), "creds.key"), Create: true, Clock: clk.Now}
		withRotators(&cfg)
		m, err := credential.Open(context.Background(), cfg)
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		testBindingRechecked(t, clk, m)
	})
}

func testBindingRechecked(t *testing.T, clk *clock, m *credential.Manager) {
	ctx := context.Background()
	putToken := func(id string, grants ...string) {
		t.Helper()
		var gs []acl.Grant
		for _, g := range grants {
			gr, _ := acl.ParseGrant(g)
			gs = append(gs, gr)
		}
		b, _ := acl.Encode(gs)
		if err := m.Store().Update(ctx, func(tx store.Tx) error {
			return tx.PutToken(ctx, &store.Token{ID: id, Name: id, Hash: []byte(id), Grants: b, CreatedAt: clk.Now()})
		}); err != nil {
			t.Fatal(err)
		}
	}
	writer := []string{"write:az/", "use:platform/pg-admin"}
	putToken("t1", writer...)
	admin := map[string]any{"host": "127.0.0.1", "port": 1, "username": "platform_admin", "manages": []any{"app_*"}}
	putAdmin := func() {
		t.Helper()
		if _, err := m.Put(ctx, "platform/pg-admin", credential.PutRequest{Type: credential.Postgres, Fields: admin, Secret: secret.Map{"password": secret.New("admin-pw")}}); err != nil {
			t.Fatal(err)
		}
	}
	putAdmin()
	settings := &credential.Settings{Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(time.Hour)}}}
	if _, err := m.Put(as(ctx, "token:t1", writer...), "az/app", credential.PutRequest{Type: credential.Postgres,
		Fields:   map[string]any{"host": "127.0.0.1", "port": 1, "username": "app_orders", "admin_credential": "platform/pg-admin"},
		Secret:   secret.Map{"password": secret.New("pw")},
		Settings: settings, Actor: "token:t1"}); err != nil {
		t.Fatal(err)
	}
	bindingFinding := func() string {
		t.Helper()
		rep, err := m.Doctor(ctx, "az/app")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range rep.Findings {
			if strings.Contains(f.Title, "not allowed to use admin credential") {
				return f.Detail + " | fix: " + f.Fix
			}
		}
		return ""
	}
	if f := bindingFinding(); f != "" {
		t.Fatalf("allowed binding has a finding: %s", f)
	}
	refused := func(want string) {
		t.Helper()
		_, err := m.Rotate(ctx, "az/app", credential.RotateOptions{})
		if !errors.Is(err, credential.ErrPermission) || rotator.ClassOf(err) != rotator.ClassPermission || !strings.Contains(err.Error(), want) {
			t.Fatalf("rotate: %v\nwant a permission error containing %q", err, want)
		}
		if f := bindingFinding(); !strings.Contains(f, want) {
			t.Fatalf("doctor finding %q, want %q", f, want)
		}
		rots, err := m.Rotations(ctx, "az/app", false, 10)
		if err != nil || len(rots) != 0 {
			t.Fatalf("a refused rotation left a journal row: %v %v", rots, err)
		}
	}

	// Narrowing the scope stops rotations, manual and scheduled.
	admin["manages"] = []any{"billing_*"}
	putAdmin()
	refused(`does not manage account "app_orders"`)
	clk.Advance(2 * time.Hour)
	if _, err := m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := m.Get(ctx, "az/app", credential.GetOptions{})
	if err != nil || c.NextDueAt == nil || !c.NextDueAt.After(clk.Now().Add(50*time.Minute)) {
		t.Fatalf("a refused scheduled rotation must be pushed back: next due %v (now %v), %v", c.NextDueAt, clk.Now(), err)
	}
	if n, err := m.Engine().Tick(ctx); err != nil || n != 0 {
		t.Fatalf("the pushed-back credential ran again: %d %v", n, err)
	}
	recs, err := audit.List(ctx, m.Store(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var refusals []string
	for _, r := range recs {
		if r.Entry.Action == "rotate.refused" && r.Entry.CredentialID == "az/app" {
			refusals = append(refusals, r.Entry.Actor+": "+r.Entry.Detail)
		}
	}
	if len(refusals) != 2 || !strings.HasPrefix(refusals[1], "scheduler: ") {
		t.Fatalf("audit entries of refusals: %q", refusals)
	}

	// Restore the scope; revoke the binder's use grant.
	admin["manages"] = []any{"app_*"}
	putAdmin()
	putToken("t1", "write:az/")
	refused("token t1, which bound az/app to admin credential platform/pg-admin, no longer holds use:platform/pg-admin")
	if err := m.Store().Update(ctx, func(tx store.Tx) error { return tx.DeleteToken(ctx, "t1") }); err != nil {
		t.Fatal(err)
	}
	refused("token t1, which bound az/app to admin credential platform/pg-admin, no longer exists")

	// Approving needs use on the admin; then rotations are allowed again.
	putToken("t2", "write:az/")
	if _, err := m.ApproveBindings(as(ctx, "token:t2", "write:az/"), "az/app"); !errors.Is(err, credential.ErrPermission) {
		t.Fatalf("approve without use: %v", err)
	}
	putToken("t3", "use:platform/")
	recsB, err := m.ApproveBindings(as(ctx, "token:t3", "use:platform/"), "az/app")
	if err != nil || len(recsB) != 1 || recsB[0].By != "token:t3" || recsB[0].Admin != "platform/pg-admin" {
		t.Fatalf("approve: %+v %v", recsB, err)
	}
	if f := bindingFinding(); f != "" {
		t.Fatalf("approved binding has a finding: %s", f)
	}
}

// TestBindingUpgrade: a binding made before bindings were checked (no
// record) is treated as unapproved: doctor names it and the command that
// approves it, rotations are refused until it runs.
func TestBindingUpgrade(t *testing.T) {
	m := openAt(t, t.TempDir(), true, withRotators)
	ctx := context.Background()
	if _, err := m.Put(ctx, "platform/pg-admin", credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "127.0.0.1", "port": 1, "username": "platform_admin", "manages": []any{"app_*"}}, Secret: secret.Map{"password": secret.New("a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, "az/app", credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "127.0.0.1", "port": 1, "username": "app_orders", "admin_credential": "platform/pg-admin"}, Secret: secret.Map{"password": secret.New("p")}}); err != nil {
		t.Fatal(err)
	}
	// A store from before this change has no binding record.
	if err := m.Store().Update(ctx, func(tx store.Tx) error { return m.Engine().Unbind(ctx, tx, "az/app") }); err != nil {
		t.Fatal(err)
	}
	rep, err := m.Doctor(ctx, "az/app")
	if err != nil {
		t.Fatal(err)
	}
	var fix string
	for _, f := range rep.Findings {
		if strings.Contains(f.Title, "not allowed to use admin credential platform/pg-admin") {
			fix = f.Fix
			if !strings.Contains(f.Detail, "was never approved") {
				t.Fatalf("finding detail: %s", f.Detail)
			}
		}
	}
	if fix != "nebula-credential admin approve az/app" {
		t.Fatalf("doctor fix %q (findings %+v)", fix, rep.Findings)
	}
	if _, err := m.Rotate(ctx, "az/app", credential.RotateOptions{}); !errors.Is(err, credential.ErrPermission) || !strings.Contains(err.Error(), "nebula-credential admin approve az/app") {
		t.Fatalf("rotate of an unapproved binding: %v", err)
	}
	if _, err := m.ApproveBindings(ctx, "az/app"); err != nil {
		t.Fatal(err)
	}
	rep, _ = m.Doctor(ctx, "az/app")
	for _, f := range rep.Findings {
		if strings.Contains(f.Title, "not allowed to use admin") {
			t.Fatalf("after approve: %+v", f)
		}
	}
}

// TestBindingResolverRefusesMidRotation: the scope is rechecked at every
// resolve of the admin, not only when a rotation is planned: narrowing the
// admin's scope between planning and apply (here from the engine's step
// hook, against a real PostgreSQL) makes the apply fail with a permission
// error before the admin is used, and the application still logs in.
func TestBindingResolverRefusesMidRotation(t *testing.T) {
	tg := pgTarget(t)
	dir := setupReal(t, tg)
	cfg := realConfig(dir, false)
	var m *credential.Manager
	narrowed := false
	cfg.Engine.AfterStep = func(_, step string) {
		if step != rotation.StepStaged || narrowed {
			return
		}
		narrowed = true
		adm := tg.admin
		f := map[string]any{}
		for k, v := range adm.Fields {
			f[k] = v
		}
		f["manages"] = []any{"billing_*"}
		adm.Fields = f
		if _, err := m.Put(context.Background(), "admin/db", adm); err != nil {
			t.Errorf("narrow the scope: %v", err)
		}
	}
	var err error
	if m, err = credential.Open(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	before, _ := m.Get(ctx, "app/db", credential.GetOptions{})
	_, err = m.Rotate(ctx, "app/db", credential.RotateOptions{})
	// The apply and the revert both refuse to use the admin: the rotation
	// stops for a person (nothing was changed on the target).
	if !narrowed || err == nil || !strings.Contains(err.Error(), "(permission)") || !strings.Contains(err.Error(), "does not manage account") {
		t.Fatalf("narrowed %v; rotate: %v", narrowed, err)
	}
	if err := tg.login(ctx, before); err != nil {
		t.Fatalf("the application no longer logs in: %v", err)
	}
}

// BenchmarkPutBinding compares a put that binds to an admin (use grant,
// scope, and the scan for an account another credential manages) with one
// that binds nothing, in a store of 1,000 other PostgreSQL credentials:
//
//	go test -run '^$' -bench BenchmarkPutBinding -benchtime 200x .
func BenchmarkPutBinding(b *testing.B) {
	m := openAt(b, b.TempDir(), true, withRotators)
	ctx := context.Background()
	if _, err := m.Put(ctx, "platform/pg-admin", credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "db", "username": "platform_admin", "manages": []any{"app_*"}}, Secret: secret.Map{"password": secret.New("a")}}); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := m.Put(ctx, fmt.Sprintf("other/%04d", i), credential.PutRequest{Type: credential.Postgres,
			Fields: map[string]any{"host": "db", "username": fmt.Sprintf("other_%d", i)}, Secret: secret.Map{"password": secret.New("p")}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, bound := range []bool{false, true} {
		b.Run(map[bool]string{false: "unbound", true: "bound"}[bound], func(b *testing.B) {
			f := map[string]any{"host": "db", "username": "app_orders"}
			if bound {
				f["admin_credential"] = "platform/pg-admin"
			}
			for b.Loop() {
				if _, err := m.Put(ctx, "az/app", credential.PutRequest{Type: credential.Postgres, Fields: f, Secret: secret.Map{"password": secret.New("p")}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
