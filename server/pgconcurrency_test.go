package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// newPGEnvs starts n servers, each with its own Manager and store connection
// pool, on one PostgreSQL database of the test's own, sharing the key file:
// n instances of a shared deployment.
func newPGEnvs(t *testing.T, n int, opts ...envOpt) []*env {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.PGStoreDB(t)
	dir := t.TempDir()
	var envs []*env
	var admin string
	for i := range n {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		logs := &testenv.Buffer{}
		logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		target := rotatortest.NewTarget("")
		reg := rotator.NewRegistry()
		reg.Register(string(credential.Postgres), target.Rotator())
		m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: i == 0, Rotators: reg, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		// Generous request timeouts: under -race on a loaded machine, 128
		// conflicting writers queue for a while; the test is about errors.
		cfg := Config{Manager: m, Logger: logger, RateLimit: rate.Inf, WatchPollInterval: 50 * time.Millisecond,
			RequestTimeout: 5 * time.Minute, LongRequestTimeout: 5 * time.Minute}
		for _, o := range opts {
			o(&cfg)
		}
		srv, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		if i == 0 {
			_, tok, err := CreateToken(ctx, st, TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
			if err != nil {
				t.Fatal(err)
			}
			admin = tok.Reveal()
		}
		e := &env{t: t, dir: dir, m: m, srv: srv, ts: ts, admin: admin, target: target, logs: logs}
		t.Cleanup(func() {
			ts.CloseClientConnections()
			ts.Close()
			srv.Close()
			m.Close()
		})
		envs = append(envs, e)
	}
	return envs
}

// TestPostgresConcurrency sends n concurrent rotations and n concurrent puts,
// spread over two instances, to n credentials in one PostgreSQL store. Every
// answer must be 2xx or 409 (nothing is overloaded here: the transactions only
// conflict with each other), and the audit chain must verify afterwards.
func TestPostgresConcurrency(t *testing.T) {
	for _, n := range []int{32, 128} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			envs := newPGEnvs(t, 2)
			e := envs[0]
			for i := range n {
				e.must(200, "PUT", fmt.Sprintf("/v1/credentials/c/%03d", i), e.admin, genericBody("v1"))
			}
			for round := range 2 {
				var (
					mu       sync.Mutex
					statuses = map[int]int{}
					bad      []string
					wg       sync.WaitGroup
				)
				record := func(r resp, what string) {
					mu.Lock()
					defer mu.Unlock()
					statuses[r.status]++
					if (r.status < 200 || r.status > 299) && r.status != http.StatusConflict {
						bad = append(bad, fmt.Sprintf("%s: %d %s", what, r.status, r.body))
					}
				}
				for i := range n {
					ei := envs[i%len(envs)]
					wg.Go(func() {
						path := fmt.Sprintf("/v1/rotate/c/%03d", i)
						record(ei.do("POST", path, ei.admin, nil), "POST "+path)
					})
					ej := envs[(i+1)%len(envs)]
					wg.Go(func() {
						path := fmt.Sprintf("/v1/credentials/p/%03d", i)
						record(ej.do("PUT", path, ej.admin, genericBody(fmt.Sprint("r", round))), "PUT "+path)
					})
				}
				wg.Wait()
				t.Logf("round %d: statuses %v", round, statuses)
				for _, b := range bad {
					t.Error(b)
				}
				if len(bad) > 0 {
					for _, ei := range envs {
						for _, line := range strings.Split(ei.logs.String(), "\n") {
							if strings.Contains(line, `"level":"ERROR"`) {
								t.Log(line)
							}
						}
					}
				}
			}
			if n, err := audit.Verify(t.Context(), e.m.Store(), nil); err != nil {
				t.Fatalf("audit verify after %d entries: %v", n, err)
			}
		})
	}
}

// TestPostgresWatchAcrossInstances: a change committed through one server
// reaches a watcher on another through LISTEN/NOTIFY, with polling slowed to
// once an hour so that only the notification can deliver it in time.
func TestPostgresWatchAcrossInstances(t *testing.T) {
	envs := newPGEnvs(t, 2, func(c *Config) { c.WatchPollInterval = time.Hour })
	a, b := envs[0], envs[1]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, _ := b.openWatch(ctx, "", b.admin, "")
	const n = 20
	var lat []time.Duration
	for i := range n {
		id := fmt.Sprintf("w/%02d", i)
		start := time.Now()
		a.must(200, "PUT", "/v1/credentials/"+id, a.admin, genericBody("x"))
		ev := next(t, ch, 2*time.Minute)
		lat = append(lat, time.Since(start))
		if ev.data.CredentialID != id {
			t.Fatalf("event %+v, want one for %s", ev, id)
		}
	}
	slices.Sort(lat)
	t.Logf("PUT on A to event on B's watch stream, %d changes: p50 %v, p99 %v, max %v", n, lat[n/2], lat[n*99/100], lat[n-1])
}

// TestPostgresTokenRevokedEverywhere: a token revoked through one server
// stops working on the other at once, though that one cached it for an hour.
func TestPostgresTokenRevokedEverywhere(t *testing.T) {
	envs := newPGEnvs(t, 2, func(c *Config) { c.TokenCacheTTL = time.Hour })
	a, b := envs[0], envs[1]
	r := a.must(201, "POST", "/v1/tokens", a.admin, map[string]any{"name": "app", "grants": []string{"read:*"}})
	body := r.json(t)
	tok, _ := body["token"].(string)
	id, _ := body["id"].(string)
	if tok == "" || id == "" {
		t.Fatalf("token create answered %s", r.body)
	}
	b.must(200, "GET", "/v1/credentials", tok, nil) // now cached on B
	if r := a.do("DELETE", "/v1/tokens/"+id, a.admin, nil); r.status/100 != 2 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(2 * time.Minute)
	start := time.Now()
	for b.do("GET", "/v1/credentials", tok, nil).status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the revoked token still works on the other server")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("revoked on A, refused on B after %v", time.Since(start))
}
