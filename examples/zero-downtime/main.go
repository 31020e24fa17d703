// Command zero-downtime rotates a PostgreSQL password many times while eight
// workers query through a consumer/pgxswap pool, and prints queries/s, failed
// queries and latency percentiles before, during and after the rotations.
//
//	go run ./examples/zero-downtime --dsn-admin postgres://postgres@127.0.0.1:5432/test
//
// It creates throwaway roles (an admin with CREATEROLE, an owner role, two
// login roles that take turns) and a probe table through --dsn-admin, stores
// the credentials in a temporary nebula-credential store, rotates with the
// real PostgreSQL rotator (alternating users), and drops everything at the
// end. Against a server that trusts local logins (like the development
// server on 5432) passwords are not checked, but the usernames still
// alternate, so the drain of the old role's sessions is real and visible in
// pg_stat_activity.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/nebula-credential/nebula-credential/internal/load"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/pgxswap"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func main() {
	var o options
	flag.StringVar(&o.adminDSN, "dsn-admin", "postgres://postgres@127.0.0.1:5432/test", "superuser connection URL (creates and drops the throwaway roles)")
	flag.IntVar(&o.rotations, "rotations", 20, "number of rotations")
	flag.IntVar(&o.workers, "workers", 8, "concurrent query workers")
	flag.DurationVar(&o.grace, "grace", 200*time.Millisecond, "grace period of each rotation (the old role keeps its login that long)")
	flag.DurationVar(&o.drain, "drain-timeout", 30*time.Second, "drain timeout of the pool")
	flag.DurationVar(&o.phase, "phase", 2*time.Second, "how long to measure before and after the rotations")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "zero-downtime:", err)
		os.Exit(1)
	}
}

type options struct {
	adminDSN  string
	rotations int
	workers   int
	grace     time.Duration
	drain     time.Duration
	phase     time.Duration
}

func unique(prefix string) string {
	b := make([]byte, 5)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func run(ctx context.Context, o options) (err error) {
	u, err := url.Parse(o.adminDSN)
	if err != nil {
		return fmt.Errorf("--dsn-admin: %w", err)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		return fmt.Errorf("--dsn-admin: this demo creates and drops roles: point it at a local server, not %s", h)
	}
	port := 5432
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return fmt.Errorf("--dsn-admin: port %q", p)
		}
	}
	database := "postgres"
	if d := u.Path; len(d) > 1 {
		database = d[1:]
	}
	su, err := pgx.Connect(ctx, o.adminDSN)
	if err != nil {
		return fmt.Errorf("connect as administrator: %w", err)
	}
	defer su.Close(context.Background())

	// Throwaway roles and table.
	var (
		admin, adminPW = unique("zd_admin_"), unique("pw-")
		owner          = unique("zd_owner_")
		userA, userB   = unique("zd_a_"), unique("zd_b_")
		pwA            = unique("pw-")
		table          = unique("zd_probe_")
	)
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	lit := func(s string) string { e, _ := su.PgConn().EscapeString(s); return "'" + e + "'" }
	setup := []string{
		"CREATE ROLE " + id(admin) + " LOGIN CREATEROLE PASSWORD " + lit(adminPW),
		"CREATE ROLE " + id(owner) + " NOLOGIN",
		"CREATE ROLE " + id(userA) + " LOGIN PASSWORD " + lit(pwA) + " IN ROLE " + id(owner),
		"CREATE ROLE " + id(userB) + " NOLOGIN IN ROLE " + id(owner),
		"CREATE TABLE " + id(table) + " (id int PRIMARY KEY, note text)",
		"INSERT INTO " + id(table) + " SELECT g, md5(g::text) FROM generate_series(1, 100) g",
		"ALTER TABLE " + id(table) + " OWNER TO " + id(owner),
	}
	var ver int
	if err := su.QueryRow(ctx, "SHOW server_version_num").Scan(&ver); err == nil && ver >= 160000 {
		// PostgreSQL 16+: CREATEROLE alone no longer lets admin alter roles it did not create.
		setup = append(setup, "GRANT "+id(userA)+", "+id(userB)+" TO "+id(admin)+" WITH ADMIN OPTION")
	}
	defer func() {
		c := context.Background()
		su.Exec(c, "DROP TABLE IF EXISTS "+id(table))
		su.Exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ($1, $2, $3)", userA, userB, admin)
		for _, r := range []string{userA, userB, owner, admin} {
			if _, derr := su.Exec(c, "DROP ROLE IF EXISTS "+id(r)); derr != nil && err == nil {
				err = fmt.Errorf("drop role %s: %w", r, derr)
			}
		}
	}()
	for _, s := range setup {
		if _, err := su.Exec(ctx, s); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	var trust bool
	if c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=wrong sslmode=disable", u.Hostname(), port, database, userA)); err == nil {
		trust = true
		c.Close(ctx)
	}

	// A temporary store with the real PostgreSQL rotator.
	dir, err := os.MkdirTemp("", "zero-downtime-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "creds.db"))
	if err != nil {
		return err
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), postgres.New(postgres.Config{ApplicationName: "zero-downtime-rotator"}))
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: true, Rotators: reg})
	if err != nil {
		st.Close()
		return err
	}
	defer m.Close()
	const adminID, appID = "demo/admin", "demo/app"
	if _, err := m.Put(ctx, adminID, credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": u.Hostname(), "port": port, "database": database, "username": admin,
			"manages": []any{userA, userB}}, // the accounts this admin may rotate (docs/admin-credentials.md)
		Secret: secret.Map{"password": secret.New(adminPW)}}); err != nil {
		return err
	}
	if _, err := m.Put(ctx, appID, credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": u.Hostname(), "port": port, "database": database, "username": userA,
			"strategy_users": []any{userA, userB}, "owner_role": owner, "admin_credential": adminID},
		Secret:   secret.Map{"password": secret.New(pwA)},
		Settings: &credential.Settings{Strategy: rotator.Alternating}}); err != nil {
		return err
	}

	src := consumer.FromManager(m)
	defer src.Close()
	var (
		dmu    sync.Mutex
		drains []consumer.Drain
	)
	cur, err := src.Current(ctx, appID)
	if err != nil {
		return err
	}
	pc, err := pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s sslmode=disable application_name=zero-downtime", u.Hostname(), port, database))
	if err != nil {
		return err
	}
	pc.MaxConns = int32(o.workers)
	pool, err := pgxswap.New(ctx, pgxswap.Config{Source: src, ID: appID, Pool: pc, DrainTimeout: o.drain,
		OnDrained: func(d consumer.Drain) { dmu.Lock(); drains = append(drains, d); dmu.Unlock() }})
	if err != nil {
		return err
	}
	defer pool.Close()

	fmt.Printf("PostgreSQL %s:%d/%s, roles %s and %s (alternating), version %d current\n", u.Hostname(), port, database, userA, userB, cur.Version)
	if trust {
		fmt.Println("note: this server trusts these logins (a wrong password was accepted), so it does not check passwords;")
		fmt.Println("      the usernames still alternate, so draining the old role's sessions is real")
	}
	q := "SELECT note FROM " + id(table) + " WHERE id = $1"
	var n uint64
	var nmu sync.Mutex
	lr := load.Start(o.workers, func(ctx context.Context) error {
		nmu.Lock()
		n++
		k := int(n%100) + 1
		nmu.Unlock()
		var note string
		return pool.QueryRow(ctx, q, k).Scan(&note)
	})
	sleep(ctx, o.phase)
	before := lr.Mark("before")

	start := time.Now()
	var rotErr error
	for i := range o.rotations {
		if ctx.Err() != nil {
			break
		}
		g := o.grace
		r, err := m.Rotate(ctx, appID, credential.RotateOptions{Grace: &g, Reason: "zero-downtime demo"})
		if err != nil {
			rotErr = fmt.Errorf("rotation %d: %w", i+1, err)
			break
		}
		if err := retire(ctx, m, appID); err != nil {
			rotErr = fmt.Errorf("rotation %d: %w", i+1, err)
			break
		}
		if every := max(1, o.rotations/10); (i+1)%every == 0 || i+1 == o.rotations {
			fmt.Printf("rotation %3d/%d: version %d -> %d, pool connections per version %v\n", i+1, o.rotations, r.FromVersion, r.ToVersion, pool.Stats())
		}
	}
	rotating := time.Since(start)
	during := lr.Mark("during")
	sleep(ctx, o.phase)
	after := lr.Mark("after")
	// Let the last drain finish, then look at the pool and the server while
	// the load still runs (stopping it cancels queries, which closes their
	// connections).
	deadline := time.Now().Add(o.drain + time.Second)
	for len(pool.Draining()) > 0 && time.Now().Before(deadline) {
		sleep(ctx, 20*time.Millisecond)
	}
	stats := pool.Stats()
	var sessions []string
	rows, err := su.Query(ctx, "SELECT usename || ':' || count(*) FROM pg_stat_activity WHERE application_name = 'zero-downtime' GROUP BY usename")
	if err == nil {
		for rows.Next() {
			var s string
			rows.Scan(&s)
			sessions = append(sessions, s)
		}
	}
	lr.Stop("stop")

	fmt.Printf("\n%d rotations in %v (%.0f ms each, grace %v)\n", o.rotations, rotating.Round(time.Millisecond), float64(rotating.Milliseconds())/float64(max(1, o.rotations)), o.grace)
	fmt.Println("phase    elapsed    throughput        ok failed  latency")
	failed := 0
	for _, p := range []load.Phase{before, during, after} {
		fmt.Println(p)
		failed += p.Failures
	}
	dmu.Lock()
	var took []time.Duration
	forced := 0
	for _, d := range drains {
		took = append(took, d.Took)
		forced += d.ForceClosed
	}
	dmu.Unlock()
	slices.Sort(took)
	if len(took) > 0 {
		fmt.Printf("drains: %d old versions drained, time to zero connections median %v, max %v, %d connections force-closed\n",
			len(took), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), forced)
	}
	fmt.Printf("pool: version %d (role %s), open connections per version %v; versions reported unused: %d\n", pool.Version(), currentUser(ctx, src, appID), stats, len(src.Unused(appID)))
	fmt.Printf("server sessions of the pool by role: %v\n", sessions)
	switch {
	case rotErr != nil:
		return rotErr
	case failed > 0:
		return fmt.Errorf("%d queries failed", failed)
	}
	return ctx.Err()
}

func currentUser(ctx context.Context, src consumer.Source, id string) string {
	c, err := src.Current(ctx, id)
	if err != nil {
		return "?"
	}
	return c.Field("username")
}

// retire waits out the grace period and runs the scheduler until the
// rotation has retired the old version.
func retire(ctx context.Context, m *credential.Manager, id string) error {
	for {
		open, err := m.Rotations(ctx, id, true, 1)
		if err != nil {
			return err
		}
		if len(open) == 0 {
			return nil
		}
		if open[0].Step == "needs_attention" {
			return errors.New("rotation needs attention: " + open[0].LastError)
		}
		sleep(ctx, time.Until(open[0].DueAt))
		if _, err := m.Engine().Tick(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
