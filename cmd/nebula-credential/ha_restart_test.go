package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
)

// TestServeSurvivesStoreRestart: two serve processes share a store on a
// private PostgreSQL cluster, which is stopped twice mid-run (a fast shutdown,
// then an immediate one, as a crash). While it is down both instances answer
// /readyz 503 and every API call 503 with Retry-After, never 500. When it is
// back both turn ready again without a restart, the scheduler commits
// rotations again, every version of every credential decrypts and the audit
// chain verifies.
func TestServeSurvivesStoreRestart(t *testing.T) {
	t.Parallel() // mostly waits on other processes
	pg := testenv.PrivatePostgres(t)
	// A commit acknowledged to the store must survive the immediate shutdown.
	pg.Exec(t, "ALTER SYSTEM SET synchronous_commit = on")
	pg.Exec(t, "SELECT pg_reload_conf()")
	const creds = 4
	ids := make([]string, creds)
	c := newHACluster(t, pg.DSN(), func(ctx context.Context, m *credential.Manager) {
		grace := rotation.Duration(0)
		for i := range ids {
			ids[i] = fmt.Sprintf("restart/c%d", i)
			if _, err := m.Put(ctx, ids[i], credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"key": secret.New(fmt.Sprintf("initial-%d", i))},
				Settings: &credential.Settings{Grace: &grace, Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(2 * time.Second)}}}}); err != nil {
				t.Fatal(err)
			}
		}
	})
	flags := []string{"--lease-ttl", "4s", "--probe-timeout", "2s", "--heartbeat-interval", "1s"}
	procs := []*haProc{c.start(flags...), c.start(flags...)}
	ctx := context.Background()
	m := c.open(false)
	defer m.Close()

	// scheduledAfter waits until a scheduled rotation started after since has
	// committed (on either instance).
	scheduledAfter := func(since time.Time) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			rs, err := m.Rotations(ctx, "", false, 1000)
			if err == nil {
				for _, r := range rs {
					if strings.HasPrefix(r.Reason, "policy: due ") && r.StartedAt.After(since) && !r.Open && r.Step == rotation.StepRetired {
						return
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no scheduled rotation committed since %s (last error: %v)", since.Format(time.RFC3339Nano), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	work := func() {
		t.Helper()
		for _, p := range procs {
			for _, id := range ids {
				r, err := c.do(ctx, "GET", p.base+"/v1/credentials/"+id, nil)
				if err != nil || r.status != 200 {
					t.Fatalf("GET %s on %s: %v %d %s", id, p.base, err, r.status, r.code)
				}
			}
		}
		r, err := c.do(ctx, "POST", procs[0].base+"/v1/rotate/"+ids[0], nil)
		if err != nil || (r.status != 200 && r.status != 409) {
			t.Fatalf("rotate: %v %d %s", err, r.status, r.code)
		}
	}
	work()
	scheduledAfter(time.Now())

	for _, stop := range []struct {
		name string
		down func(testing.TB)
	}{{"fast", pg.DownFast}, {"immediate", pg.Down}} {
		stopped := time.Now()
		stop.down(t)
		for _, p := range procs {
			d := c.waitReady(p, 503)
			t.Logf("%s shutdown: %s /readyz 503 after %s", stop.name, p.base, d.Round(time.Millisecond))
		}
		// Every kind of call answers 503 with Retry-After while the store is down.
		for _, p := range procs {
			for _, call := range []struct{ method, path string }{
				{"GET", "/v1/credentials/" + ids[1]},
				{"GET", "/v1/credentials"},
				{"POST", "/v1/rotate/" + ids[2]},
				{"GET", "/v1/history/" + ids[1]},
				{"GET", "/v1/status"},
			} {
				r, err := c.do(ctx, call.method, p.base+call.path, nil)
				if err != nil {
					t.Fatalf("%s %s on %s with the store down: %v", call.method, call.path, p.base, err)
				}
				if r.status != 503 || r.retryAfter == "" {
					t.Errorf("%s %s on %s with the store down: %d %s (Retry-After %q), want 503 with Retry-After", call.method, call.path, p.base, r.status, r.body, r.retryAfter)
				}
			}
		}
		pg.Start(t)
		back := time.Now()
		for _, p := range procs {
			d := c.waitReady(p, 200)
			t.Logf("%s shutdown: %s /readyz 200 %s after the store was back (down %s)", stop.name, p.base, d.Round(time.Millisecond), back.Sub(stopped).Round(time.Millisecond))
		}
		scheduledAfter(back)
		t.Logf("%s shutdown: a scheduled rotation committed %s after the store was back", stop.name, time.Since(back).Round(time.Millisecond))
		work()
	}

	// Nothing lost: every stored version of every credential decrypts, and
	// nothing is stuck open once the policies are removed.
	for _, id := range ids {
		vs, err := m.Versions(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if _, err := m.Get(ctx, id, credential.GetOptions{Version: v.Version}); err != nil {
				t.Errorf("%s v%d does not decrypt: %v", id, v.Version, err)
			}
		}
		rs, err := m.Rotations(ctx, id, false, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Step == rotation.StepNeedsAttention {
				t.Errorf("%s rotation %d parked: %s", id, r.ID, r.LastError)
			}
		}
	}
	for _, p := range procs {
		p.kill()
	}
	cmd := exec.Command(c.bin, "audit", "verify", "--store", c.dsn, "--key-file", c.keyFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("audit verify after two store restarts: %v\n%s", err, out)
	}
}
