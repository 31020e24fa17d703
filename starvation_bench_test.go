package credential_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Issue 18's starvation benchmark: witnesses on a healthy private
// redis-server rotate on a periodic policy while many credentials of a hung
// target (a proxy that accepts connections and never answers) keep failing
// and retrying. The scheduler runs with its defaults (4 slots, 2 per target,
// 1 s tick, 5 s first probe) on the real clock. Reported per phase:
//
//	cadence-ratio      the witnesses' mean interval between commits / the policy interval (worst witness)
//	vs-baseline        that ratio / the same ratio with no hung target, measured in the same run
//
// Goal: hung cadence-ratio <= 1.5. The phase "hung-no-target-budget" turns the
// per-target budget off (--target-concurrency = --concurrency) to show what it
// prevents.
//
//	go test -run '^$' -bench Starvation -benchtime 1x .
//	NEBULA_STARVATION_WINDOW=2m go test -run '^$' -bench Starvation -benchtime 1x .
func BenchmarkStarvation(b *testing.B) {
	window := 40 * time.Second
	if s := os.Getenv("NEBULA_STARVATION_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("NEBULA_STARVATION_WINDOW: %v", err)
		}
		window = d
	}
	const interval = 4 * time.Second
	srv := testenv.Redis(b, true)
	hole := testenv.NewProxy(b, srv.Addr())
	hole.Blackhole()
	var baseline float64
	for _, c := range []struct {
		name       string
		hung       int
		targetConc int // 0: the default (half of the 4 slots)
	}{
		{"baseline", 0, 0},
		{"hung", 24, 0},
		{"hung-no-target-budget", 24, 4},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				ratio := starvationRun(b, srv, hole, c.hung, c.targetConc, interval, window)
				b.ReportMetric(ratio, "cadence-ratio")
				if c.hung == 0 {
					baseline = ratio
				} else if baseline > 0 {
					b.ReportMetric(ratio/baseline, "vs-baseline")
				}
			}
		})
	}
}

// starvationRun runs the scheduler for window with three witnesses on srv and
// hung credentials behind hole, and returns the worst witness's cadence ratio.
func starvationRun(b *testing.B, srv *testenv.RedisServer, hole *testenv.Proxy, hung, targetConc int, interval, window time.Duration) float64 {
	b.Helper()
	dir := b.TempDir()
	cfg := realConfig(dir, true)
	cfg.Engine = rotation.Config{Concurrency: 4, TargetConcurrency: targetConc}
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	policy := []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(interval)}}
	grace := rotation.Duration(time.Second)
	const witnesses = 3
	for i := range witnesses {
		tg := redisTargetFrom(b, srv, testenv.UniqueName("w_"))
		admin, app := fmt.Sprintf("admin/w%d", i), fmt.Sprintf("app/w%d", i)
		tg.app.Fields["admin_credential"] = admin
		tg.app.Settings = &credential.Settings{Grace: &grace, Policies: policy}
		if _, err := m.Put(ctx, admin, tg.admin); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Put(ctx, app, tg.app); err != nil {
			b.Fatal(err)
		}
	}
	for i := range hung {
		req := credential.PutRequest{Type: credential.Redis,
			Fields:   map[string]any{"host": hole.Host, "port": hole.Port, "username": fmt.Sprintf("h%d", i)},
			Secret:   secret.Map{"password": secret.New(testenv.UniqueName("pw-"))},
			Settings: &credential.Settings{Grace: &grace, Policies: policy, Backoff: rotation.Backoff{Base: rotation.Duration(100 * time.Millisecond), Cap: rotation.Duration(time.Second)}}}
		if _, err := m.Put(ctx, fmt.Sprintf("hung/%d", i), req); err != nil {
			b.Fatal(err)
		}
	}
	var (
		mu      sync.Mutex
		commits = map[string][]time.Time{}
	)
	cancelSub := m.Engine().Subscribe(func(ev rotation.Event) {
		if ev.Kind == rotation.EventCurrentChanged && strings.HasPrefix(ev.CredentialID, "app/w") && ev.Detail == "" {
			mu.Lock()
			commits[ev.CredentialID] = append(commits[ev.CredentialID], time.Now())
			mu.Unlock()
		}
	})
	defer cancelSub()
	runCtx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	start := time.Now()
	m.Engine().Run(runCtx)
	mu.Lock()
	defer mu.Unlock()
	worst := 0.0
	for i := range witnesses {
		ts := commits[fmt.Sprintf("app/w%d", i)]
		// The first rotation is due one interval after the put.
		gaps, span := len(ts), time.Duration(0)
		if gaps > 0 {
			span = ts[len(ts)-1].Sub(start)
		} else {
			gaps, span = 1, window // starved: not one rotation in the window
		}
		worst = max(worst, float64(span)/float64(gaps)/float64(interval))
	}
	return worst
}
