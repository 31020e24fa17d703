package pgxswap_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/consumer/pgxswap"
	"github.com/nebula-credential/nebula-credential/internal/load"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type drains struct {
	mu  sync.Mutex
	all []consumer.Drain
	ch  chan consumer.Drain
}

func newDrains() *drains { return &drains{ch: make(chan consumer.Drain, 1000)} }

func (d *drains) add(x consumer.Drain) {
	d.mu.Lock()
	d.all = append(d.all, x)
	d.mu.Unlock()
	d.ch <- x
}

func (d *drains) list() []consumer.Drain {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.all)
}

// sessions counts the server's sessions per user for application name app.
func sessions(t *testing.T, pg *consumertest.PG, app string) map[string]int {
	t.Helper()
	c := pg.Server.Connect(t)
	rows, err := c.Query(context.Background(), "SELECT usename, count(*) FROM pg_stat_activity WHERE application_name = $1 GROUP BY usename", app)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var u string
		var n int
		if err := rows.Scan(&u, &n); err != nil {
			t.Fatal(err)
		}
		out[u] = n
	}
	return out
}

func newPool(t *testing.T, src consumer.Source, id string, drainTimeout time.Duration, d *drains, app string) *pgxswap.Pool {
	t.Helper()
	cur, err := src.Current(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pgxswapConfig(cur, app)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgxswap.New(context.Background(), pgxswap.Config{Source: src, ID: id, Pool: pc, DrainTimeout: drainTimeout, OnDrained: d.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// 100 rotations through the real PostgreSQL rotator (alternating users, on
// the machine's server at 5432) while 8 workers query through the pool: no
// query fails, and every old version drains to zero connections well inside
// the drain timeout. The server trusts local logins, so passwords are not
// checked there, but the old role loses LOGIN at retire, so a connection made
// with the old credential would fail.
func TestRotationsUnderLoad(t *testing.T) {
	rotationsUnderLoad(t, consumertest.LocalPostgres(t), 100)
}

// The same on a scram-sha-256 cluster, where the old password is really
// refused after retire (fewer rotations: every one costs a dozen SCRAM
// exchanges, slow under the race detector).
func TestRotationsUnderLoadSCRAM(t *testing.T) {
	rotationsUnderLoad(t, nil, 20)
}

func rotationsUnderLoad(t *testing.T, server *testenv.PG, rotations int) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{Server: server})
	src := consumer.FromManager(m)
	defer src.Close()
	d := newDrains()
	// Generous: old versions drain as soon as their connections come back
	// (checked below: none force-closed), so the timeout costs nothing when
	// things work, and a loaded machine does not hit it.
	const drainTimeout = 30 * time.Second
	app := testenv.UniqueName("pgxswap-")
	p := newPool(t, src, pg.ID, drainTimeout, d, app)

	probe := "SELECT count(*) FROM " + pgx.Identifier{pg.Table}.Sanitize()
	lr := load.Start(8, func(ctx context.Context) error {
		var n int
		return p.QueryRow(ctx, probe).Scan(&n)
	})
	defer lr.Stop("stop")
	time.Sleep(time.Second)
	before := lr.Mark("before")

	if testing.Short() {
		rotations = min(rotations, 20)
	}
	start := time.Now()
	for range rotations {
		consumertest.Rotate(t, m, pg.ID, 20*time.Millisecond)
	}
	rotating := time.Since(start)
	during := lr.Mark("during")
	time.Sleep(time.Second)
	after := lr.Mark("after") // the load goes on: stopping it cancels queries, which closes their connections
	for _, ph := range []load.Phase{before, during, after} {
		t.Log(ph)
		if ph.Failures != 0 {
			t.Errorf("%s: %d failed queries, first: %v", ph.Name, ph.Failures, ph.FirstErr)
		}
	}

	cur := p.Version()
	if cur != rotations+1 {
		t.Errorf("pool on version %d, want %d", cur, rotations+1)
	}
	// Every old version drained, within the timeout, none force-closed.
	drained := func() map[int]bool {
		out := map[int]bool{}
		for _, x := range d.list() {
			out[x.Version] = true
		}
		return out
	}
	waitFor(t, patience, func() bool { return len(drained()) == rotations }, func() string {
		return fmt.Sprintf("%d of %d versions drained; stats %v", len(drained()), rotations, p.Stats())
	})
	var took []time.Duration
	for _, x := range d.list() {
		took = append(took, x.Took)
		if x.ForceClosed != 0 {
			t.Errorf("version %d: %d connections force-closed", x.Version, x.ForceClosed)
		}
	}
	for v := 1; v <= rotations; v++ {
		if !drained()[v] {
			t.Errorf("version %d never drained", v)
		}
	}
	slices.Sort(took)
	waitFor(t, patience, func() bool { s := p.Stats(); return len(s) == 1 && s[cur] > 0 }, func() string {
		return fmt.Sprintf("stats after the rotations %v, want only version %d", p.Stats(), cur)
	})
	waitFor(t, patience, func() bool { return len(src.Unused(pg.ID)) == rotations }, func() string {
		return fmt.Sprintf("%d versions reported unused, want %d", len(src.Unused(pg.ID)), rotations)
	})
	// On the server, only the current user has sessions left (closed
	// backends may take a moment to leave pg_stat_activity).
	c, _ := src.Current(context.Background(), pg.ID)
	waitFor(t, patience, func() bool { s := sessions(t, pg, app); return len(s) == 1 && s[c.Field("username")] > 0 }, func() string {
		return fmt.Sprintf("server sessions by user %v, want only %s", sessions(t, pg, app), c.Field("username"))
	})
	t.Logf("%d rotations in %v (%.0f ms each); drain time median %v, max %v", rotations, rotating.Round(time.Millisecond),
		float64(rotating.Milliseconds())/float64(rotations), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond))
}

// Idle connections on the old version close at once; a connection kept busy
// is force-closed at the drain timeout, its query fails, and only then is the
// old version reported drained.
func TestForceCloseBusyConnection(t *testing.T) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{})
	src := consumer.FromManager(m)
	defer src.Close()
	d := newDrains()
	const drainTimeout = 1500 * time.Millisecond
	app := testenv.UniqueName("pgxswap-")
	p := newPool(t, src, pg.ID, drainTimeout, d, app)
	ctx := context.Background()

	// Four connections: three go back idle, one stays busy.
	var conns []*pgxpoolConn
	for range 4 {
		c, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns[1:] {
		c.Release()
	}
	busy := conns[0]
	busyErr := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "SELECT pg_sleep(60)")
		busy.Release()
		busyErr <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if s := p.Stats(); !maps.Equal(s, map[int]int{1: 4}) {
		t.Fatalf("stats before rotation %v", s)
	}

	rotated := time.Now()
	v := consumertest.Rotate(t, m, pg.ID, 0)
	// The idle ones close at once; on a slow machine the busy one may
	// already be force-closed too.
	waitFor(t, patience, func() bool { return p.Stats()[1] <= 1 }, func() string {
		return fmt.Sprintf("idle connections on version 1 not closed: %v", p.Stats())
	})
	// New work uses the new version meanwhile.
	var n int
	if err := p.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{pg.Table}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("query on the new version: %v", err)
	}
	if s := p.Stats(); s[v] == 0 {
		t.Fatalf("no connection on version %d: %v", v, s)
	}
	// The drain report comes only once the busy connection is force-closed,
	// never before the drain timeout: checked against the clock read before
	// the rotation, a lower bound that holds however loaded the machine is.
	select {
	case x := <-d.ch:
		if x.Version != 1 || x.ForceClosed != 1 {
			t.Fatalf("drain %+v, want version 1 with 1 force-closed", x)
		}
		if el := time.Since(rotated); el < drainTimeout {
			t.Fatalf("version 1 drained after %v, before the drain timeout %v, while a connection on it was busy", el, drainTimeout)
		}
	case <-time.After(patience):
		t.Fatalf("busy connection not force-closed; stats %v", p.Stats())
	}
	select {
	case err := <-busyErr:
		if err == nil {
			t.Fatal("the force-closed query succeeded")
		}
		t.Logf("busy query ended with: %v", err)
	case <-time.After(patience):
		t.Fatal("busy query still running after force-close")
	}
	waitFor(t, patience, func() bool { return maps.Equal(p.Stats(), map[int]int{v: 1}) }, func() string {
		return fmt.Sprintf("stats after force-close %v", p.Stats())
	})
	waitFor(t, patience, func() bool { return slices.Equal(src.Unused(pg.ID), []int{1}) }, func() string {
		return fmt.Sprintf("unused %v, want [1]", src.Unused(pg.ID))
	})
	waitFor(t, patience, func() bool { return sessions(t, pg, app)[pg.Users[0]] == 0 }, func() string {
		return fmt.Sprintf("sessions of %s still open: %v", pg.Users[0], sessions(t, pg, app))
	})
}

// patience is the one generous deadline for events the tests wait for: a
// loaded machine may be slow, but a broken pool never gets there.
const patience = 2 * time.Minute

func waitFor(t *testing.T, d time.Duration, ok func() bool, msg func() string) {
	t.Helper()
	end := time.Now().Add(d)
	for !ok() {
		if time.Now().After(end) {
			t.Fatal(msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type pgxpoolConn = pgxpool.Conn

// pgxswapConfig is a pool configuration naming the test's sessions.
func pgxswapConfig(c consumer.Credential, app string) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=%s sslmode=disable application_name=%s",
		c.Field("host"), c.Field("port"), c.Field("database"), app))
	if err != nil {
		return nil, err
	}
	pc.MaxConns = 8
	return pc, nil
}
