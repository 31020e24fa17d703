package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The helpers all database rotators' tests share, under the names used here.
var (
	ctx   = dbrottest.Ctx
	stage = dbrottest.Stage
	// No error may show a password, nor a SCRAM verifier.
	errs      = dbrottest.Errors{Markers: []string{"SCRAM-SHA-256$"}}
	wantClass = errs.WantClass
)

type env struct {
	pg      *testenv.PG
	res     dbrottest.Resolver
	adminID string
	adminPW string
	admin   string // admin role name
}

// newEnv creates an admin role with CREATEROLE (not a superuser) and a
// resolver holding its credential.
func newEnv(t testing.TB) *env {
	pg := testenv.Postgres(t)
	e := &env{pg: pg, res: dbrottest.Resolver{}, adminID: "admin/" + testenv.UniqueName(""), adminPW: testenv.UniqueName("admin-pw-")}
	e.admin = pg.CreateRole(t, testenv.UniqueName("nc_admin_"), e.adminPW, "LOGIN CREATEROLE")
	e.res[e.adminID] = rotator.Credential{ID: e.adminID, Type: "postgres",
		Fields: map[string]any{"host": pg.Host, "port": pg.Port, "username": e.admin},
		Secret: secret.Map{"password": secret.New(e.adminPW)}}
	return e
}

func (e *env) fields(user string) map[string]any {
	// port as a string on purpose: both forms must work.
	return map[string]any{"host": e.pg.Host, "port": fmt.Sprint(e.pg.Port), "database": "postgres", "username": user}
}

// alternatingCred creates owner (NOLOGIN), a (LOGIN, password) and b
// (NOLOGIN), both members of owner.
func (e *env) alternatingCred(t testing.TB, prefix string) rotator.Credential {
	owner := e.pg.CreateRole(t, prefix+testenv.UniqueName("own_"), "", "NOLOGIN")
	pw := testenv.UniqueName("pw-a-")
	a := e.pg.CreateRole(t, prefix+testenv.UniqueName("a_"), pw, "LOGIN IN ROLE "+pgx.Identifier{owner}.Sanitize())
	b := e.pg.CreateRole(t, prefix+testenv.UniqueName("b_"), "", "NOLOGIN IN ROLE "+pgx.Identifier{owner}.Sanitize())
	f := e.fields(a)
	f["strategy_users"] = []any{a, b}
	f["owner_role"] = owner
	f["admin_credential"] = e.adminID
	return rotator.Credential{ID: "db/" + a, Type: "postgres", Version: 1, Fields: f, Secret: secret.Map{"password": secret.New(pw)}}
}

// inPlaceCred creates one LOGIN role; withAdmin makes rotations go through the admin.
func (e *env) inPlaceCred(t testing.TB, prefix string, withAdmin bool) rotator.Credential {
	pw := testenv.UniqueName("pw-u-")
	u := e.pg.CreateRole(t, prefix+testenv.UniqueName("u_"), pw, "LOGIN")
	f := e.fields(u)
	if withAdmin {
		f["admin_credential"] = e.adminID
	}
	return rotator.Credential{ID: "db/" + u, Type: "postgres", Version: 1, Fields: f, Secret: secret.Map{"password": secret.New(pw)}}
}

// login connects with c directly through pgx, without the rotator.
func login(ctx context.Context, c rotator.Credential) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%v port=%v dbname=postgres sslmode=disable", c.Fields["host"], c.Fields["port"]))
	if err != nil {
		return nil, err
	}
	cfg.User = c.String("username")
	cfg.Password = c.Secret["password"].Reveal()
	return pgx.ConnectConfig(ctx, cfg)
}

func authenticates(t *testing.T, c rotator.Credential) bool {
	t.Helper()
	conn, err := login(context.Background(), c)
	if err == nil {
		conn.Close(context.Background())
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000") {
		return false
	}
	t.Fatalf("login as %q: %v", c.String("username"), err)
	return false
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	t.Run("alternating", func(t *testing.T) {
		rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
			Strategies:    []rotator.Strategy{rotator.Alternating},
			NewCredential: func(t *testing.T) rotator.Credential { return e.alternatingCred(t, "") }})
	})
	t.Run("in_place_self", func(t *testing.T) {
		rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
			Strategies:    []rotator.Strategy{rotator.InPlace},
			NewCredential: func(t *testing.T) rotator.Credential { return e.inPlaceCred(t, "", false) }})
	})
	t.Run("in_place_admin", func(t *testing.T) {
		rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
			Strategies:    []rotator.Strategy{rotator.InPlace},
			NewCredential: func(t *testing.T) rotator.Credential { return e.inPlaceCred(t, "", true) }})
	})
	t.Run("sanitized", func(t *testing.T) { // as the registry wraps it
		rotatortest.Run(t, rotatortest.Harness{Rotator: rotator.Sanitize(rot), Resolver: e.res, Authenticates: authenticates,
			Strategies:    []rotator.Strategy{rotator.Alternating},
			NewCredential: func(t *testing.T) rotator.Credential { return e.alternatingCred(t, "") }})
	})
}

// Role names with quotes, backslashes, spaces and an injection attempt work and
// inject nothing: the victim role survives every rotation.
func TestHostileRoleNames(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	victim := e.pg.CreateRole(t, testenv.UniqueName("victim_"), "", "NOLOGIN")
	for _, prefix := range []string{
		`it's "q" \ `,
		`"; DROP ROLE ` + victim + `; --`,
		`'); DROP ROLE ` + victim + `; --`,
		`\' OR 1=1 `,
	} {
		t.Run(prefix, func(t *testing.T) {
			rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
				NewCredential: func(t *testing.T) rotator.Credential {
					if strings.Contains(t.Name(), "alternating") {
						return e.alternatingCred(t, prefix)
					}
					return e.inPlaceCred(t, prefix, false)
				}})
		})
	}
	var n int
	if err := e.pg.Connect(t).QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", victim).Scan(&n); err != nil || n != 1 {
		t.Fatalf("victim role gone (count %d, err %v): injection", n, err)
	}
}

// The database ends the retiring role at GraceEndsAt by itself, with no retire.
func TestValidUntilEndsOldRole(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	cur := e.alternatingCred(t, "")
	pend := stage(t, rot, e.res, cur, rotator.Alternating)
	grace := time.Now().Add(1500 * time.Millisecond)
	if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, GraceEndsAt: grace, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
	var until time.Time
	if err := e.pg.Connect(t).QueryRow(ctx(t), "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", cur.String("username")).Scan(&until); err != nil {
		t.Fatal(err)
	}
	if d := until.Sub(grace); d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("VALID UNTIL %v, want %v", until, grace)
	}
	if !authenticates(t, cur) || !authenticates(t, pend) {
		t.Fatal("both versions must log in during grace")
	}
	// A session opened before the deadline survives it (VALID UNTIL is checked at login).
	sess, err := login(ctx(t), cur)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(context.Background())
	time.Sleep(time.Until(grace) + 200*time.Millisecond)
	if authenticates(t, cur) {
		t.Fatal("the retiring role still logs in after its VALID UNTIL")
	}
	if !authenticates(t, pend) {
		t.Fatal("the new role stopped logging in")
	}
	if _, err := sess.Exec(ctx(t), "SELECT 1"); err != nil {
		t.Fatalf("an open session was ended: %v", err)
	}
	// A rollback within the engine (retire the new version, keep the old)
	// gives the old role its login back.
	if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: pend, Current: cur, Strategy: rotator.Alternating, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
	if !authenticates(t, cur) || authenticates(t, pend) {
		t.Fatal("retire of the new version did not restore the old one")
	}
}

func TestStageValidatesPolicyAndFields(t *testing.T) {
	rot := postgres.New(postgres.Config{})
	base := map[string]any{"host": "127.0.0.1", "port": 1, "username": "u"}
	dbrottest.StageRefuses(t, rot, base, rotator.InPlace, map[string]map[string]any{
		"short":          {"password_policy": map[string]any{"length": 8}},
		"non-ascii":      {"password_policy": map[string]any{"alphabet": "abcdefghijé"}},
		"space":          {"password_policy": map[string]any{"alphabet": "abcdefghij k"}},
		"bad port":       {"port": "http"},
		"bad sslmode":    {"sslmode": "sometimes"},
		"one user":       {"strategy_users": []any{"u"}},
		"not in users":   {"strategy_users": []any{"a", "b"}},
		"no username":    {"username": ""},
		"port too large": {"port": 70000},
	})
	resp, err := rot.Stage(context.Background(), rotator.StageRequest{Strategy: rotator.InPlace, Current: rotator.Credential{
		Fields: map[string]any{"username": "u", "password_policy": map[string]any{"length": 40, "min_symbols": 3}}}})
	if err != nil {
		t.Fatal(err)
	}
	if pw := resp.Secret["password"].Reveal(); len(pw) != 40 || !strings.ContainsAny(pw, secret.Symbols) {
		t.Fatalf("generated password does not follow the policy (len %d)", len(pw))
	}
	if _, err := rot.Stage(context.Background(), rotator.StageRequest{Strategy: rotator.Dual, Current: rotator.Credential{Fields: base}}); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("dual: err = %v, want ClassConfig", err)
	}
}
