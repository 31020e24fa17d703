package sqlswap_test

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/consumer/sqlswap"
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

func open(t *testing.T, src consumer.Source, id string, drv sqlswap.Driver, timeout time.Duration, d *drains) (*sql.DB, *sqlswap.Connector) {
	t.Helper()
	c, err := sqlswap.New(context.Background(), sqlswap.Config{Source: src, ID: id, Driver: drv, DrainTimeout: timeout, OnDrained: d.add})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	t.Cleanup(func() { db.Close() })
	return db, c
}

// underLoadDrain is the drain timeout under load. Generous: old versions drain
// as soon as their connections come back (checked: none force-closed), so it
// costs nothing when things work, and a loaded machine does not hit it.
const underLoadDrain = 30 * time.Second

// underLoad runs 8 workers querying probe through db while rotating id n
// times, and checks: no failed query, every old version drained within the
// timeout without force-closing, only the current version left open, every
// old version reported unused.
func underLoad(t *testing.T, m *credential.Manager, src *consumer.ManagerSource, id string, db *sql.DB, c *sqlswap.Connector, d *drains, probe string, n int, timeout time.Duration) {
	lr := load.Start(8, func(ctx context.Context) error {
		var x int
		return db.QueryRowContext(ctx, probe).Scan(&x)
	})
	defer lr.Stop("stop")
	time.Sleep(time.Second)
	before := lr.Mark("before")
	start := time.Now()
	for range n {
		consumertest.Rotate(t, m, id, 20*time.Millisecond)
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
	cur := c.Version()
	if cur != n+1 {
		t.Errorf("connector on version %d, want %d", cur, n+1)
	}
	drained := func() map[int]bool {
		out := map[int]bool{}
		for _, x := range d.list() {
			out[x.Version] = true
		}
		return out
	}
	waitFor(t, patience, func() bool { return len(drained()) == n }, func() string {
		return fmt.Sprintf("%d of %d versions drained; stats %v", len(drained()), n, c.Stats())
	})
	var took []time.Duration
	for _, x := range d.list() {
		took = append(took, x.Took)
		if x.ForceClosed != 0 {
			t.Errorf("version %d: %d connections force-closed", x.Version, x.ForceClosed)
		}
	}
	slices.Sort(took)
	waitFor(t, patience, func() bool { s := c.Stats(); return len(s) == 1 && s[cur] > 0 }, func() string {
		return fmt.Sprintf("stats after the rotations %v, want only version %d", c.Stats(), cur)
	})
	waitFor(t, patience, func() bool { return len(src.Unused(id)) == n }, func() string {
		return fmt.Sprintf("%d versions reported unused, want %d", len(src.Unused(id)), n)
	})
	t.Logf("%d rotations in %v (%.0f ms each); drain time median %v, max %v", n, rotating.Round(time.Millisecond),
		float64(rotating.Milliseconds())/float64(n), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond))
}

// MariaDB, dual passwords (IDENTIFIED VIA ... OR ...), go-sql-driver/mysql.
func TestMariaDBRotationsUnderLoad(t *testing.T) {
	m := consumertest.Manager(t)
	my := consumertest.MySQLCredential(t, m)
	src := consumer.FromManager(m)
	defer src.Close()
	d := newDrains()
	db, c := open(t, src, my.ID, sqlswap.MySQL(nil), underLoadDrain, d)
	n := 100
	if testing.Short() {
		n = 20
	}
	underLoad(t, m, src, my.ID, db, c, d, "SELECT count(*) FROM `"+my.Table+"`", n, underLoadDrain)
}

// PostgreSQL, alternating users on a scram-sha-256 cluster, pgx stdlib.
func TestPostgresRotationsUnderLoad(t *testing.T) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{})
	src := consumer.FromManager(m)
	defer src.Close()
	d := newDrains()
	db, c := open(t, src, pg.ID, sqlswap.Postgres(""), underLoadDrain, d)
	underLoad(t, m, src, pg.ID, db, c, d, "SELECT count(*) FROM "+pgx.Identifier{pg.Table}.Sanitize(), 25, underLoadDrain)
}

// Idle connections on the old version close at once; a connection busy in a
// long query is force-closed at the drain timeout and its query fails.
func TestMariaDBForceCloseBusyConnection(t *testing.T) {
	m := consumertest.Manager(t)
	my := consumertest.MySQLCredential(t, m)
	src := consumer.FromManager(m)
	defer src.Close()
	d := newDrains()
	const timeout = 1500 * time.Millisecond
	db, c := open(t, src, my.ID, sqlswap.MySQL(nil), timeout, d)
	ctx := context.Background()

	var conns []*sql.Conn
	for range 4 {
		cn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := cn.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	for _, cn := range conns[1:] {
		cn.Close() // back to the idle pool
	}
	busyErr := make(chan error, 1)
	go func() {
		var x int
		busyErr <- conns[0].QueryRowContext(ctx, "SELECT SLEEP(60)").Scan(&x)
		conns[0].Close()
	}()
	time.Sleep(100 * time.Millisecond)
	if s := c.Stats(); !maps.Equal(s, map[int]int{1: 4}) {
		t.Fatalf("stats before rotation %v", s)
	}
	rotated := time.Now()
	v := consumertest.Rotate(t, m, my.ID, 0)
	// The idle ones close at once; on a slow machine the busy one may
	// already be force-closed too.
	waitFor(t, patience, func() bool { return c.Stats()[1] <= 1 }, func() string {
		return fmt.Sprintf("idle connections on version 1 not closed: %v", c.Stats())
	})
	var x int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM `"+my.Table+"`").Scan(&x); err != nil {
		t.Fatalf("query on the new version: %v", err)
	}
	if s := c.Stats(); s[v] == 0 {
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
		if el := time.Since(rotated); el < timeout {
			t.Fatalf("version 1 drained after %v, before the drain timeout %v, while a connection on it was busy", el, timeout)
		}
	case <-time.After(patience):
		t.Fatalf("busy connection not force-closed; stats %v", c.Stats())
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
	waitFor(t, patience, func() bool { return maps.Equal(c.Stats(), map[int]int{v: 1}) }, func() string {
		return fmt.Sprintf("stats after force-close %v", c.Stats())
	})
	waitFor(t, patience, func() bool { return slices.Equal(src.Unused(my.ID), []int{1}) }, func() string {
		return fmt.Sprintf("unused %v, want [1]", src.Unused(my.ID))
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
