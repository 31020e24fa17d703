package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	pgrot "github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
)

func TestMain(m *testing.M) {
	if p := os.Getenv("NC_AGENT_CHILD_CONFIG"); p != "" {
		os.Exit(childMain(p))
	}
	// Started under nohup, this binary ignores SIGHUP, and every shell the
	// tests start would inherit that and could not trap the HUP they are
	// sent. Handling it here makes the children start with the default, as
	// `run` does for its child by forwarding signals.
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
	testenv.Main(m)
}

// rotations is how many rotations the real proofs run (100; 10 with -short).
func rotations() int {
	if testing.Short() {
		return 10
	}
	return 100
}

// realPG is a real scram-sha-256 PostgreSQL with an alternating credential
// app/db served by an in-process server that ends grace early once every
// live consumer confirmed, but never before min after the commit.
func realPG(t *testing.T, min time.Duration) (*srv, *testenv.PG) {
	t.Helper()
	if _, err := exec.LookPath("psql"); err != nil {
		if testenv.CI() {
			t.Fatal("psql is not installed")
		}
		t.Skip("psql is not installed")
	}
	pg := testenv.Postgres(t)
	s := newSrvWith(t, server.ConsumerConfig{EarlyRetire: true, EarlyRetireMin: min, CheckInterval: 20 * time.Millisecond, Timeout: 30 * time.Second}, pgrot.New(pgrot.Config{}))
	r := pg.AlternatingRoles(t)
	ctx := context.Background()
	if _, err := s.m.Put(ctx, "admin/db", credential.PutRequest{Type: credential.Postgres, Fields: r.AdminFields(), Secret: secret.Map{"password": secret.New(r.AdminPassword)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.m.Put(ctx, "app/db", credential.PutRequest{Type: credential.Postgres, Fields: r.AppFields("admin/db"), Secret: secret.Map{"password": secret.New(r.APassword)}}); err != nil {
		t.Fatal(err)
	}
	return s, pg
}

// rotateAll rotates app/db n times, each time waiting until the agents
// confirmed and the server ended grace early. It returns the passwords seen.
func rotateAll(t *testing.T, s *srv, n int, each func(i int, committed time.Time)) []string {
	t.Helper()
	ctx := context.Background()
	grace := 2 * time.Minute
	var pws []string
	for i := range n {
		r, err := s.m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: &grace, Reason: "agent proof"})
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		committed := time.Now()
		_ = r
		cur, err := s.m.Get(ctx, "app/db", credential.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pws = append(pws, cur.Secret["password"].Reveal())
		if each != nil {
			each(i, committed)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			open, err := s.m.Rotations(ctx, "app/db", true, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(open) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rotation %d: grace never ended early: %+v", i, open[0])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return pws
}

// psqlLoop runs psql, a new process and connection per query, until stop.
type psqlLoop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	done       chan struct{}
}

func startPsql(t *testing.T, env []string, args ...string) *psqlLoop {
	return startPsqlWith(t, env, func() ([]string, error) { return args, nil })
}

// startPsqlWith takes psql's arguments anew before every query.
func startPsqlWith(t *testing.T, env []string, argsf func() ([]string, error)) *psqlLoop {
	l := &psqlLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			args, err := argsf()
			if err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				l.errs = append(l.errs, err.Error())
				l.mu.Unlock()
				continue
			}
			cmd := exec.Command("psql", append([]string{"-w", "-X", "-A", "-t", "-c", "select 1"}, args...)...)
			cmd.Env = append(os.Environ(), env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "1" {
				l.failed.Add(1)
				l.mu.Lock()
				l.errs = append(l.errs, strings.TrimSpace(out.String()))
				l.mu.Unlock()
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

func (l *psqlLoop) end() { close(l.stop); <-l.done }

// TestPsqlThroughAgentRotations: two real psql loops, a new process and
// connection per query, while the alternating credential is rotated 100
// times. One reads user and password from the pg_service.conf the agent
// renders. The other reads the password from the .pgpass the agent renders
// (PGPASSFILE; psql says "password retrieved from file") and host, port and
// user from a service file without a password, rendered after the .pgpass in
// the same pass. No login fails.
func TestPsqlThroughAgentRotations(t *testing.T) {
	s, _ := realPG(t, time.Second)
	dir := t.TempDir()
	cfg := loadCfg(t, dir, fmt.Sprintf(`
name: psql-proof
servers: [%s]
templates:
  - contents: '{{ pgservice "app" "app/db" }}'
    destination: pg_service.conf
  # the .pgpass first: while the user file still names the previous user,
  # the new .pgpass still holds that user's line (grace)
  - contents: '{{ pgpass "app/db" }}'
    destination: .pgpass
  - contents: |
      [app]
      host={{ field "app/db" "host" }}
      port={{ field "app/db" "port" }}
      dbname=postgres
      user={{ field "app/db" "username" }}
    destination: user_service.conf
`, s.ts.URL))
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "app/db", 1)
	pgpass := filepath.Join(dir, ".pgpass")
	service := startPsql(t, []string{"PGSERVICEFILE=" + filepath.Join(dir, "pg_service.conf"), "PGCONNECT_TIMEOUT=10"}, "service=app")
	passfile := startPsql(t, []string{"PGSERVICEFILE=" + filepath.Join(dir, "user_service.conf"), "PGPASSFILE=" + pgpass, "PGCONNECT_TIMEOUT=10"}, "service=app")
	// during grace the .pgpass lists the previous user's line too
	var most atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			b, _ := os.ReadFile(pgpass)
			if n := int64(strings.Count(string(b), "\n")); n > most.Load() {
				most.Store(n)
			}
		}
	}()
	pws := rotateAll(t, s, rotations(), nil)
	close(stopSampling)
	<-sampled
	service.end()
	passfile.end()
	if most.Load() != 2 {
		t.Errorf("the .pgpass held at most %d lines, want 2 during grace (current and previous user)", most.Load())
	}
	for name, l := range map[string]*psqlLoop{"pg_service.conf": service, ".pgpass": passfile} {
		if l.failed.Load() != 0 || l.ok.Load() < int64(rotations()) {
			t.Errorf("psql through %s: %d ok, %d failed: %q", name, l.ok.Load(), l.failed.Load(), l.errs[:min(5, len(l.errs))])
		}
		t.Logf("psql through %s: %d rotations, %d logins, %d failed", name, rotations(), l.ok.Load(), l.failed.Load())
	}
	if fi, err := os.Stat(pgpass); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf(".pgpass: %v %v (psql ignores a .pgpass readable by others)", fi, err)
	}
	for _, pw := range pws {
		if strings.Contains(st.log.String(), pw) {
			t.Fatal("a password is in the agent's log")
		}
	}
}

// TestPsqlThroughRunRestarts: the same with `run`: the child is a shell loop
// of psql with PGUSER and PGPASSWORD from run's --env, restarted on each
// rotation.
func TestPsqlThroughRunRestarts(t *testing.T) {
	s, pg := realPG(t, time.Second)
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	script := `while :; do if out=$(psql -w -X -A -t -c 'select 1' 2>&1) && [ "$out" = 1 ]; then echo ok >> "$RESULTS"; else echo "FAIL $out" >> "$RESULTS"; fi; done`
	cfg := &Config{Servers: []string{s.ts.URL},
		Env:  []EnvVar{{Name: "PGUSER", ID: "app/db", Field: "username"}, {Name: "PGPASSWORD", ID: "app/db", Field: "password"}},
		Exec: &Exec{Command: []string{"sh", "-c", script}, KillTimeout: Duration(10 * time.Second)}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RESULTS", results)
	t.Setenv("PGHOST", pg.Host)
	t.Setenv("PGPORT", strconv.Itoa(pg.Port))
	t.Setenv("PGDATABASE", "postgres")
	t.Setenv("PGCONNECT_TIMEOUT", "10")
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "app/db", 1)
	var restarts int
	rotateAll(t, s, rotations(), func(i int, _ time.Time) {
		st.waitVersion(t, "app/db", i+2)
		restarts++
	})
	st.stop(t)
	b, _ := os.ReadFile(results)
	ok, failed := strings.Count(string(b), "ok\n"), strings.Count(string(b), "FAIL")
	if failed != 0 || ok < rotations() {
		i := strings.Index(string(b), "FAIL")
		t.Fatalf("psql under run: %d ok, %d failed: %.300s", ok, failed, string(b)[max(i, 0):])
	}
	if n := strings.Count(st.log.String(), "started the child"); n != rotations()+1 {
		t.Errorf("the child started %d times, want %d", n, rotations()+1)
	}
	t.Logf("%d rotations, %d restarts, %d psql logins, 0 failed", rotations(), restarts, ok)
}
