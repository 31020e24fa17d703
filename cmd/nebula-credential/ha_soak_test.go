package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// TestHASoak is issue 14's proof: three serve processes on one PostgreSQL
// store rotate credentials on real targets (PostgreSQL alternating on a
// private scram cluster, MariaDB dual, Redis dual) on short periodic
// policies, while one of them is SIGKILLed every few seconds and started
// again, and a client reads and rotates through all of them. Then:
//   - no due time was rotated twice (each scheduled rotation's journal reason
//     names its due time);
//   - nothing is lost: every stored version of every credential decrypts;
//   - no API answer was a 5xx;
//   - once the policies are removed and every grace has ended, every stored
//     current logs in to its target and every older version is refused.
//
// The default run is small (6 credentials, 60 scheduled rotations, under a
// minute). NEBULA_HA_SOAK=1 runs the size: 50 credentials and at least
// 1,000 scheduled rotations. Knobs: NEBULA_HA_SOAK_CREDS, _ROTATIONS,
// _INTERVAL (policy interval), _KILL_EVERY.
func TestHASoak(t *testing.T) {
	t.Parallel() // mostly waits on other processes
	creds, want, interval, killEvery := 6, 60, 3*time.Second, 4*time.Second
	deadline := 10 * time.Minute // one generous bound; the run takes about a minute
	if os.Getenv("NEBULA_HA_SOAK") != "" {
		creds, want, interval, killEvery = 50, 1000, 6*time.Second, 3*time.Second
		deadline = 45 * time.Minute
	}
	envInt := func(name string, v *int) {
		if s := os.Getenv(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			*v = n
		}
	}
	envDur := func(name string, v *time.Duration) {
		if s := os.Getenv(name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			*v = d
		}
	}
	envInt("NEBULA_HA_SOAK_CREDS", &creds)
	envInt("NEBULA_HA_SOAK_ROTATIONS", &want)
	envDur("NEBULA_HA_SOAK_INTERVAL", &interval)
	envDur("NEBULA_HA_SOAK_KILL_EVERY", &killEvery)
	grace := rotation.Duration(time.Second)

	// Targets.
	pg := testenv.PrivatePostgres(t)
	maria := testenv.MariaDB(t)
	rds := testenv.Redis(t, true)
	type app struct {
		id       string
		strategy rotator.Strategy
		login    func(context.Context, *credential.Credential) error
	}
	var apps []app
	type put struct {
		id  string
		req credential.PutRequest
	}
	var puts []put
	for i := range creds {
		adminID, id := fmt.Sprintf("soak/admin-%02d", i), fmt.Sprintf("soak/app-%02d", i)
		var admin, a credential.PutRequest
		var ap app
		switch i % 3 {
		case 0: // PostgreSQL, alternating between two login roles
			r := pg.AlternatingRoles(t)
			admin = credential.PutRequest{Type: credential.Postgres, Fields: r.AdminFields(), Secret: secret.Map{"password": secret.New(r.AdminPassword)}}
			a = credential.PutRequest{Type: credential.Postgres, Fields: r.AppFields(adminID), Secret: secret.Map{"password": secret.New(r.APassword)}}
			ap = app{id, rotator.Alternating, soakPGLogin}
		case 1: // MariaDB, dual passwords
			au, apw := testenv.UniqueName("nc_admin_"), testenv.UniqueName("admin-pw-")
			maria.CreateUser(t, au, "%", apw, "GRANT CREATE USER ON *.* TO ?@?")
			u, pw := testenv.UniqueName("u_"), testenv.UniqueName("pw-")
			maria.CreateUser(t, u, "%", pw)
			f := func(user string, extra map[string]any) map[string]any {
				out := map[string]any{"host": maria.Host, "port": maria.Port, "username": user, "user_host": "%"}
				for k, v := range extra {
					out[k] = v
				}
				return out
			}
			admin = credential.PutRequest{Type: credential.MySQL, Fields: f(au, map[string]any{"manages": []any{u}}), Secret: secret.Map{"password": secret.New(apw)}}
			a = credential.PutRequest{Type: credential.MySQL, Fields: f(u, map[string]any{"admin_credential": adminID}), Secret: secret.Map{"password": secret.New(pw)}}
			ap = app{id, rotator.Dual, soakMariaLogin}
		case 2: // Redis, dual passwords (ACL file: changes persist)
			u, pw := testenv.UniqueName("app_"), testenv.UniqueName("pw-")
			rds.Do(t, "ACL", "SETUSER", u, "reset", "on", ">"+pw, "~*", "&*", "+@all")
			rds.Do(t, "ACL", "SAVE")
			admin = credential.PutRequest{Type: credential.Redis, Fields: map[string]any{"host": rds.Host, "port": rds.Port, "username": rds.AdminUser, "manages": u}, Secret: secret.Map{"password": secret.New(rds.AdminPassword)}}
			a = credential.PutRequest{Type: credential.Redis, Fields: map[string]any{"host": rds.Host, "port": rds.Port, "username": u, "admin_credential": adminID}, Secret: secret.Map{"password": secret.New(pw)}}
			ap = app{id, rotator.Dual, soakRedisLogin}
		}
		a.Settings = &credential.Settings{Strategy: ap.strategy, Grace: &grace,
			Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(interval)}}}
		puts = append(puts, put{adminID, admin}, put{id, a})
		apps = append(apps, ap)
	}
	dsn := testenv.PGStoreDB(t)
	c := newHACluster(t, dsn, func(ctx context.Context, m *credential.Manager) {
		for _, p := range puts {
			if _, err := m.Put(ctx, p.id, p.req); err != nil {
				t.Fatalf("put %s: %v", p.id, err)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := c.open(false)
	defer m.Close()

	flags := []string{"--lease-ttl", "4s", "--probe-timeout", "2s", "--heartbeat-interval", "1s"}
	var (
		mu     sync.Mutex
		procs  = []*haProc{c.start(flags...), c.start(flags...), c.start(flags...)}
		bad    []string // 5xx answers
		calls  = map[string]int{}
		manual int
	)
	pick := func() *haProc {
		mu.Lock()
		defer mu.Unlock()
		return procs[rand.IntN(len(procs))]
	}
	started := time.Now()

	// The client: GETs across instances, and a manual rotate now and then.
	var load sync.WaitGroup
	var lastManual atomic.Value
	lastManual.Store(time.Now())
	manualEvery := 2 * interval
	for range 2 {
		load.Add(1)
		go func() {
			defer load.Done()
			for ctx.Err() == nil {
				p, ap := pick(), apps[rand.IntN(len(apps))]
				method, path := "GET", "/v1/credentials/"+ap.id
				// A manual rotation now and then, paced by time rather
				// than by requests: a periodic policy is due an interval
				// after the last rotation, so manual rotations as frequent
				// as the GETs are fast would keep every policy from ever
				// coming due (seen: 603 manual, 15 scheduled in 3 minutes).
				if time.Since(lastManual.Load().(time.Time)) > manualEvery {
					lastManual.Store(time.Now())
					method, path = "POST", "/v1/rotate/"+ap.id
				}
				r, err := c.do(ctx, method, p.base+path, nil)
				mu.Lock()
				switch {
				case err != nil:
					calls["transport error (instance killed)"]++
				case r.status >= 500:
					bad = append(bad, fmt.Sprintf("%s %s: %d %s", method, path, r.status, r.code))
					calls[fmt.Sprint(r.status)]++
				default:
					calls[fmt.Sprint(r.status)]++
					if method == "POST" && r.status == 200 {
						manual++
					}
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}

	// scheduled counts committed scheduled rotations.
	scheduled := func() (n int, err error) {
		rs, err := m.Rotations(ctx, "", false, 1_000_000)
		for _, r := range rs {
			if strings.HasPrefix(r.Reason, "policy: due ") && (r.Step == rotation.StepRetired || r.Step == rotation.StepGrace || r.Step == rotation.StepCommitted) {
				n++
			}
		}
		return n, err
	}
	kills := 0
	end := started.Add(deadline)
	nextKill := time.Now().Add(killEvery)
	for {
		n, err := scheduled()
		if err == nil && n >= want {
			break
		}
		if time.Now().After(end) {
			logJournal(t, m)
			t.Fatalf("only %d of %d scheduled rotations committed within %s (last error %v)", n, want, deadline, err)
		}
		if time.Now().After(nextKill) {
			k := kills % 3
			mu.Lock()
			old := procs[k]
			mu.Unlock()
			old.kill()
			np := c.start(flags...)
			mu.Lock()
			procs[k] = np
			mu.Unlock()
			kills++
			nextKill = time.Now().Add(killEvery)
		}
		time.Sleep(200 * time.Millisecond)
	}
	soakTime := time.Since(started)
	cancel()
	load.Wait()
	ctx = context.Background()

	// Stop scheduling: remove the policies, and let every grace end.
	for _, ap := range apps {
		for try := 0; ; try++ {
			err := m.SetSettings(ctx, ap.id, credential.Settings{Strategy: ap.strategy, Grace: &grace})
			if err == nil {
				break
			}
			if try > 600 {
				t.Fatalf("removing the policy of %s: %v", ap.id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	settleEnd := time.Now().Add(5 * time.Minute)
	for {
		open, err := m.Rotations(ctx, "", true, 1000)
		if err == nil && len(open) == 0 {
			break
		}
		if time.Now().After(settleEnd) {
			t.Fatalf("%d rotations still open after the policies were removed (%v)", len(open), err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The journal: no due time rotated twice.
	total, steps := 0, map[string]int{}
	for _, ap := range apps {
		rs, err := m.Rotations(ctx, ap.id, false, 1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int64{}
		for _, r := range rs {
			steps[r.Step]++
			if r.Step == rotation.StepNeedsAttention {
				t.Errorf("%s rotation %d parked in needs_attention: %s", ap.id, r.ID, r.LastError)
			}
			if !strings.HasPrefix(r.Reason, "policy: due ") || r.Step != rotation.StepRetired {
				continue
			}
			total++
			if prev, dup := seen[r.Reason]; dup {
				t.Errorf("%s: due time rotated twice (rotations %d and %d: %s)", ap.id, prev, r.ID, r.Reason)
			}
			seen[r.Reason] = r.ID
		}
	}
	// Nothing lost, current logs in, every older version is refused.
	loginsOK, refused := 0, 0
	for _, ap := range apps {
		vs, err := m.Versions(ctx, ap.id)
		if err != nil {
			t.Fatal(err)
		}
		cur, err := m.Get(ctx, ap.id, credential.GetOptions{})
		if err != nil {
			t.Fatalf("%s current: %v", ap.id, err)
		}
		lctx, lcancel := context.WithTimeout(ctx, time.Minute)
		if err := ap.login(lctx, cur); err != nil {
			t.Errorf("%s: current v%d does not log in: %v", ap.id, cur.Version, err)
		} else {
			loginsOK++
		}
		for _, v := range vs {
			if v.Version == cur.Version {
				continue
			}
			old, err := m.Get(ctx, ap.id, credential.GetOptions{Version: v.Version})
			if err != nil {
				t.Errorf("%s v%d does not decrypt: %v", ap.id, v.Version, err)
				continue
			}
			if err := ap.login(lctx, old); err == nil {
				t.Errorf("%s: v%d (current is v%d) still logs in after its grace", ap.id, v.Version, cur.Version)
			} else {
				refused++
			}
		}
		lcancel()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Errorf("5xx: %s", b)
		if len(bad) > 20 {
			break
		}
	}
	var cs []string
	for k, v := range calls {
		cs = append(cs, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(cs)
	t.Logf("%d credentials (+%d admin), 3 instances, %d kills every %s, policy every %s, grace %s: %d scheduled rotations committed in %s (%.1f/s), %d manual; final steps %v",
		creds, creds, kills, killEvery, interval, time.Duration(grace), total, soakTime.Round(time.Second), float64(total)/soakTime.Seconds(), manual, steps)
	t.Logf("API answers: %s; %d current versions log in, %d older versions refused", strings.Join(cs, ", "), loginsOK, refused)
}

func soakPGLogin(ctx context.Context, c *credential.Credential) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%v port=%v dbname=postgres sslmode=disable connect_timeout=10", c.Fields["host"], c.Fields["port"]))
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

func soakMariaLogin(ctx context.Context, c *credential.Credential) error {
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr = "tcp", fmt.Sprintf("%v:%v", c.Fields["host"], c.Fields["port"])
	cfg.User, cfg.Passwd = c.Fields["username"].(string), c.Secret["password"].Reveal()
	cfg.Timeout = 10 * time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

func soakRedisLogin(ctx context.Context, c *credential.Credential) error {
	cl := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("%v:%v", c.Fields["host"], c.Fields["port"]), Username: c.Fields["username"].(string),
		Password: c.Secret["password"].Reveal(), MaxRetries: -1, DisableIdentity: true, PoolSize: 1})
	defer cl.Close()
	return cl.Ping(ctx).Err()
}

// logJournal prints every rotation's step, reason and error (never a secret),
// for a soak that did not reach its count.
func logJournal(t *testing.T, m *credential.Manager) {
	t.Helper()
	rs, err := m.Rotations(context.Background(), "", false, 1_000_000)
	if err != nil {
		t.Logf("journal: %v", err)
		return
	}
	if len(rs) > 100 {
		t.Logf("journal: %d rotations, the newest 100:", len(rs))
		rs = rs[:100]
	}
	for _, r := range rs {
		t.Logf("rotation %d %s %s %q attempt %d started %s updated %s owner %s: %s", r.ID, r.CredentialID, r.Step, r.Reason, r.Attempt, r.StartedAt.Format("15:04:05.000"), r.UpdatedAt.Format("15:04:05.000"), r.LeaseOwner, r.LastError)
	}
}
