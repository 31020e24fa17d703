package credential_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	mysqlrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
	pgrot "github.com/nebula-credential/nebula-credential/rotator/postgres"
	redisrot "github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// realConfig opens the store in dir with the real database rotators.
func realConfig(dir string, create bool) credential.Config {
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		panic(err)
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), pgrot.New(pgrot.Config{}))
	reg.Register(string(credential.MySQL), mysqlrot.New(mysqlrot.Config{}))
	reg.Register(string(credential.Redis), redisrot.New(redisrot.Config{}))
	return credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: create, Rotators: reg}
}

// realTarget is one real server with an admin and an application credential.
type realTarget struct {
	typ   credential.Type
	admin credential.PutRequest
	app   credential.PutRequest
	login func(ctx context.Context, c *credential.Credential) error // independent of the rotator
}

func pgTarget(t testing.TB) realTarget { return pgTargetFrom(t, testenv.Postgres(t)) }

// pgTargetFrom is the alternating layout of testenv.AlternatingRoles on cluster pg.
func pgTargetFrom(t testing.TB, pg *testenv.PG) realTarget {
	r := pg.AlternatingRoles(t)
	return realTarget{
		typ:   credential.Postgres,
		admin: credential.PutRequest{Type: credential.Postgres, Fields: r.AdminFields(), Secret: secret.Map{"password": secret.New(r.AdminPassword)}},
		app:   credential.PutRequest{Type: credential.Postgres, Fields: r.AppFields("admin/db"), Secret: secret.Map{"password": secret.New(r.APassword)}},
		login: pgLogin,
	}
}

// pgLogin logs in as c with a client of its own.
func pgLogin(ctx context.Context, c *credential.Credential) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%v port=%v dbname=postgres sslmode=disable connect_timeout=5", c.Fields["host"], c.Fields["port"]))
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = c.Fields["username"].(string), c.Secret["password"].Reveal()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

func mariaTarget(t testing.TB) realTarget {
	db := testenv.MariaDB(t)
	admin, adminPW := testenv.UniqueName("nc_admin_"), testenv.UniqueName("admin-pw-")
	db.CreateUser(t, admin, "%", adminPW, "GRANT CREATE USER ON *.* TO ?@?")
	u, pw := testenv.UniqueName("u_"), testenv.UniqueName("pw-")
	db.CreateUser(t, u, "%", pw)
	f := func(user string, extra map[string]any) map[string]any {
		out := map[string]any{"host": db.Host, "port": db.Port, "username": user, "user_host": "%"}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	return realTarget{
		typ:   credential.MySQL,
		admin: credential.PutRequest{Type: credential.MySQL, Fields: f(admin, map[string]any{"manages": []any{u}}), Secret: secret.Map{"password": secret.New(adminPW)}},
		app:   credential.PutRequest{Type: credential.MySQL, Fields: f(u, map[string]any{"admin_credential": "admin/db"}), Secret: secret.Map{"password": secret.New(pw)}},
		login: func(ctx context.Context, c *credential.Credential) error {
			cfg := mysql.NewConfig()
			cfg.Net, cfg.Addr = "tcp", fmt.Sprintf("%v:%v", c.Fields["host"], c.Fields["port"])
			cfg.User, cfg.Passwd = c.Fields["username"].(string), c.Secret["password"].Reveal()
			cfg.Timeout = 5 * time.Second
			conn, err := sql.Open("mysql", cfg.FormatDSN())
			if err != nil {
				return err
			}
			defer conn.Close()
			return conn.PingContext(ctx)
		},
	}
}

func redisTarget(t testing.TB) realTarget { return redisTargetFrom(t, testenv.Redis(t, true), "app") }

// redisLogin logs in as c with a client of its own.
func redisLogin(ctx context.Context, c *credential.Credential) error {
	cl := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("%v:%v", c.Fields["host"], c.Fields["port"]), Username: c.Fields["username"].(string),
		Password: c.Secret["password"].Reveal(), MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
	defer cl.Close()
	return cl.Ping(ctx).Err()
}

func realTargets() map[string]func(testing.TB) realTarget {
	return map[string]func(testing.TB) realTarget{"postgres": pgTarget, "mariadb": mariaTarget, "redis": redisTarget}
}

func setupReal(t testing.TB, tg realTarget) string {
	dir := t.TempDir()
	m, err := credential.Open(context.Background(), realConfig(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Put(context.Background(), "admin/db", tg.admin); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(context.Background(), "app/db", tg.app); err != nil {
		t.Fatal(err)
	}
	return dir
}

// openReal stores tg's credentials in a new store and opens it on a clock
// that starts now and moves only when the test advances it; the manager is
// closed at the end of the test.
func openReal(t testing.TB, tg realTarget) (*credential.Manager, *clock) {
	t.Helper()
	dir := setupReal(t, tg)
	clk := newClock()
	clk.now = time.Now().UTC()
	cfg := realConfig(dir, false)
	cfg.Clock = clk.Now
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, clk
}

// TestRealRotateGraceRetire drives the engine against each real server: both
// versions log in during grace, the old one stops at retire and not before.
func TestRealRotateGraceRetire(t *testing.T) {
	for name, mk := range realTargets() {
		t.Run(name, func(t *testing.T) {
			tg := mk(t)
			m, clk := openReal(t, tg)
			ctx := context.Background()
			v1, _ := m.Get(ctx, "app/db", credential.GetOptions{})
			if _, err := m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			v2, _ := m.Get(ctx, "app/db", credential.GetOptions{})
			if err := tg.login(ctx, v2); err != nil {
				t.Fatalf("new version: %v", err)
			}
			if err := tg.login(ctx, v1); err != nil {
				t.Fatalf("old version during grace: %v", err)
			}
			clk.Advance(59 * time.Minute)
			m.Engine().Tick(ctx)
			if err := tg.login(ctx, v1); err != nil {
				t.Fatalf("old version retired before grace ended: %v", err)
			}
			clk.Advance(2 * time.Minute)
			if _, err := m.Engine().Tick(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tg.login(ctx, v1); err == nil {
				t.Fatal("old version still logs in after retire")
			}
			if err := tg.login(ctx, v2); err != nil {
				t.Fatalf("new version after retire: %v", err)
			}
			if rep, _ := m.Doctor(ctx, "app/db"); !rep.Healthy {
				t.Fatalf("doctor: %+v", rep.Findings)
			}
		})
	}
}

// TestCrashChildReal is the child of TestRealCrashAtEveryStep.
func TestCrashChildReal(t *testing.T) {
	dir := os.Getenv("NC_REAL_CHILD_DIR")
	if dir == "" {
		return
	}
	step := os.Getenv("NC_KILL_STEP")
	cfg := realConfig(dir, false)
	cfg.Engine.AfterStep = func(_, s string) {
		if s == step {
			killSelf()
		}
	}
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	zero := time.Duration(0)
	_, err = m.Rotate(context.Background(), "app/db", credential.RotateOptions{Grace: &zero})
	fmt.Println("not killed:", err)
	os.Exit(3)
}

// TestRealCrashAtEveryStep SIGKILLs a child rotating a real credential after
// each journal step; after recovery the stored current logs in, the old one no
// longer does, and nothing is stuck.
func TestRealCrashAtEveryStep(t *testing.T) {
	steps := []string{rotation.StepPlanned, rotation.StepStaged, rotation.StepApplied, rotation.StepVerified, rotation.StepCommitted, rotation.StepGrace, rotation.StepRetired}
	for name, mk := range realTargets() {
		t.Run(name, func(t *testing.T) {
			tg := mk(t)
			dir := setupReal(t, tg)
			ctx := context.Background()
			for _, step := range steps {
				m, err := credential.Open(ctx, realConfig(dir, false))
				if err != nil {
					t.Fatal(err)
				}
				before, _ := m.Get(ctx, "app/db", credential.GetOptions{})
				m.Close()

				out, code := runChild(t, "TestCrashChildReal", "NC_REAL_CHILD_DIR="+dir, "NC_KILL_STEP="+step)
				if code != -9 {
					t.Fatalf("%s: child not killed (exit %d): %s", step, code, out)
				}
				m, err = credential.Open(ctx, realConfig(dir, false)) // recovery
				if err != nil {
					t.Fatalf("%s: reopen: %v", step, err)
				}
				m.Engine().Tick(ctx)
				open, _ := m.Rotations(ctx, "app/db", true, 5)
				after, err := m.Get(ctx, "app/db", credential.GetOptions{})
				m.Close()
				if err != nil || len(open) != 0 {
					t.Fatalf("%s: after recovery: %v, open rotations %d", step, err, len(open))
				}
				if after.Version <= before.Version {
					t.Fatalf("%s: rotation lost: version %d → %d", step, before.Version, after.Version)
				}
				if err := tg.login(ctx, after); err != nil {
					t.Fatalf("%s: current version %d does not log in: %v", step, after.Version, err)
				}
				if err := tg.login(ctx, before); err == nil {
					t.Fatalf("%s: retired version %d still logs in", step, before.Version)
				}
			}
		})
	}
}

// TestRealTargetDownMidRotation stops answering (closed port) between stage
// and apply: the rotation is retried with backoff, and when the server is back
// it completes; the store stays consistent throughout.
func TestRealTargetDownMidRotation(t *testing.T) {
	tg := mariaTarget(t)
	dir := setupReal(t, tg)
	ctx := context.Background()
	// Route the credential through a proxy we can close.
	m, err := credential.Open(ctx, realConfig(dir, false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	app, _ := m.Get(ctx, "app/db", credential.GetOptions{})
	proxy := testenv.NewProxy(t, fmt.Sprintf("%v:%v", app.Fields["host"], app.Fields["port"]))
	host, port := proxy.Host, proxy.Port
	for _, id := range []string{"admin/db", "app/db"} {
		c, _ := m.Get(ctx, id, credential.GetOptions{})
		c.Fields["host"], c.Fields["port"] = host, port
		if _, err := m.Put(ctx, id, credential.PutRequest{Type: c.Type, Fields: c.Fields, Secret: c.Secret}); err != nil {
			t.Fatal(err)
		}
	}
	v1, _ := m.Get(ctx, "app/db", credential.GetOptions{})
	proxy.Close()
	_, err = m.Rotate(ctx, "app/db", credential.RotateOptions{})
	if !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatalf("want a scheduled retry while the server is unreachable, got %v", err)
	}
	if c, _ := m.Get(ctx, "app/db", credential.GetOptions{}); c.Version != v1.Version {
		t.Fatal("current moved while the target was down")
	}
	proxy.Reopen(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m.Engine().Tick(ctx)
		c, _ := m.Get(ctx, "app/db", credential.GetOptions{})
		if c.Version > v1.Version && c.State == credential.StateGrace {
			if err := tg.login(ctx, c); err != nil {
				t.Fatalf("new version: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			rs, _ := m.Rotations(ctx, "app/db", false, 1)
			t.Fatalf("rotation did not complete after the server came back: %+v", rs[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runChild runs this test binary's test named fn with env; it returns the
// output and the exit code (-9 for SIGKILL).
func runChild(t *testing.T, fn string, env ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+fn+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return string(out), -int(st.Signal())
		}
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func killSelf() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
