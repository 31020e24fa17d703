package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// TestServeNoStaleStateAcrossInstances: two serve processes on one store. A
// token revoked through A is refused by B on the very next request; a policy
// set through A is the one B's scheduler follows (A is killed right after);
// after `key rotate` through A, B seals new versions under the new key and
// still opens the old ones.
func TestServeNoStaleStateAcrossInstances(t *testing.T) {
	t.Parallel() // mostly waits on other processes
	ctx := context.Background()
	zero := rotation.Duration(0)
	dsn := testenv.PGStoreDB(t)
	// A direct connection, without the store's own pool_max_conns
	// parameter (PostgreSQL refuses a parameter it does not know).
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	delete(cfg.RuntimeParams, "pool_max_conns")
	pgdb := stdlib.OpenDB(*cfg)
	defer pgdb.Close()
	c := newHACluster(t, dsn, func(ctx context.Context, m *credential.Manager) {
		for i := range 3 {
			if _, err := m.Put(ctx, fmt.Sprintf("stale/c%d", i), credential.PutRequest{Type: credential.Generic,
				Secret: secret.Map{"key": secret.New(fmt.Sprintf("initial-%d", i))}, Settings: &credential.Settings{Grace: &zero}}); err != nil {
				t.Fatal(err)
			}
		}
	})
	flags := []string{"--lease-ttl", "4s", "--probe-timeout", "2s", "--heartbeat-interval", "1s"}
	a, b := c.start(flags...), c.start(flags...)
	m := c.open(false)
	defer m.Close()
	must := func(t *testing.T, want int, method, url string, body any) apiResult {
		t.Helper()
		r, err := c.do(ctx, method, url, body)
		if err != nil || r.status != want {
			t.Fatalf("%s %s: %v %d %s, want %d", method, url, err, r.status, r.code, want)
		}
		return r
	}

	t.Run("token revoked", func(t *testing.T) {
		const rounds = 10
		for round := range rounds {
			r := must(t, 201, "POST", a.base+"/v1/tokens", map[string]any{"name": fmt.Sprintf("app-%d", round), "grants": []string{"read:*"}})
			var tk struct{ ID, Token string }
			json.Unmarshal(r.body, &tk)
			get := func(base string) int {
				req, _ := http.NewRequest("GET", base+"/v1/credentials/stale/c0", nil)
				req.Header.Set("Authorization", "Bearer "+tk.Token)
				resp, err := c.hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if s := get(b.base); s != 200 { // cached on B now
				t.Fatalf("new token on B: %d", s)
			}
			if round%2 == 0 {
				must(t, 200, "DELETE", a.base+"/v1/tokens/"+tk.ID, nil)
			} else {
				// The same revocation with its notification lost (triggers
				// off for this session), as when it arrives late: B must not
				// depend on hearing about it.
				if _, err := pgdb.ExecContext(ctx, `BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM tokens WHERE id = '`+tk.ID+`'; COMMIT`); err != nil {
					t.Fatal(err)
				}
			}
			// A shared store is read on every request: B refuses the token
			// on the very next request, not after a notification arrives.
			if s := get(b.base); s != http.StatusUnauthorized {
				t.Fatalf("round %d: token revoked on A still answers %d on B's next request", round, s)
			}
		}
	})

	t.Run("key rotate", func(t *testing.T) {
		r := must(t, 200, "POST", a.base+"/v1/keys/rotate", nil)
		var res struct {
			Active string `json:"active"`
		}
		json.Unmarshal(r.body, &res)
		var active []byte
		if err := m.Store().View(ctx, func(tx store.Tx) error {
			var err error
			active, err = tx.GetMeta(ctx, "active_kek")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// B writes at once, then reads old and new versions.
		must(t, 200, "PUT", b.base+"/v1/credentials/stale/new", map[string]any{"type": "generic", "secret": map[string]string{"key": "after-key-rotate"}})
		must(t, 200, "POST", b.base+"/v1/rotate/stale/c1", nil)
		for _, id := range []string{"stale/new", "stale/c0", "stale/c1", "stale/c2"} {
			must(t, 200, "GET", b.base+"/v1/credentials/"+id, nil)
		}
		for _, id := range []string{"stale/new", "stale/c1"} {
			var vs []store.Version
			if err := m.Store().View(ctx, func(tx store.Tx) error {
				var err error
				vs, err = tx.ListVersions(ctx, id)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if last := vs[len(vs)-1]; last.KEKID != string(active) {
				t.Errorf("%s v%d written by B after key rotate on A is sealed under %s, not the new active key %s", id, last.Version, last.KEKID, active)
			}
		}
	})

	t.Run("policy", func(t *testing.T) {
		set := time.Now()
		must(t, 200, "PUT", a.base+"/v1/policy/stale/c2", credential.Settings{Grace: &zero,
			Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(2 * time.Second)}}})
		a.kill() // only B's scheduler remains
		deadline := time.Now().Add(2 * time.Minute)
		for {
			rs, err := m.Rotations(ctx, "stale/c2", false, 100)
			if err == nil {
				for _, r := range rs {
					if strings.HasPrefix(r.Reason, "policy: due ") && r.StartedAt.After(set) && r.Step == rotation.StepRetired {
						t.Logf("B's scheduler rotated on the policy set through A %s later", time.Since(set).Round(time.Millisecond))
						return
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("B's scheduler never rotated on the policy set through A (%v)", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
