package bluegreen_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nebula-credential/nebula-credential/consumer/bluegreen"
)

var dbSeq atomic.Int64

// memDB is a real in-memory SQLite database, with the probe table or without.
func memDB(t *testing.T, withTable bool) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", fmt.Sprintf("file:bg%d?mode=memory&cache=shared", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one connection keeps the in-memory database alive
	t.Cleanup(func() { db.Close() })
	if withTable {
		if _, err := db.Exec("CREATE TABLE probe (id int); INSERT INTO probe VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func probe(ctx context.Context) func(db *sql.DB) error {
	return func(db *sql.DB) error {
		var n int
		return db.QueryRowContext(ctx, "SELECT count(*) FROM probe").Scan(&n)
	}
}

// workers run Do until ctx ends and count outcomes per phase of the switch.
type workers struct {
	wg       sync.WaitGroup
	ok, fail atomic.Int64
}

func startWorkers(ctx context.Context, sw *bluegreen.Switch, n int) *workers {
	w := &workers{}
	for range n {
		w.wg.Go(func() {
			for ctx.Err() == nil {
				if err := sw.Do(ctx, probe(ctx)); err != nil {
					if ctx.Err() == nil {
						w.fail.Add(1)
					}
				} else {
					w.ok.Add(1)
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	return w
}

func TestPickShares(t *testing.T) {
	for _, p := range []int{10, 25, 50, 75, 100} {
		sw, err := bluegreen.New(bluegreen.Config{Blue: &sql.DB{}, Green: &sql.DB{}, Steps: []int{p, 100}})
		if p == 100 {
			sw, err = bluegreen.New(bluegreen.Config{Blue: &sql.DB{}, Green: &sql.DB{}, Steps: []int{100}})
		}
		if err != nil {
			t.Fatal(err)
		}
		// Before Run everything goes to blue.
		if _, side, done := sw.Pick(); side != bluegreen.Blue {
			t.Fatal("picked green before Run")
		} else {
			done(nil)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go sw.Run(ctx)
		for sw.Stats().Phase != bluegreen.Shifting {
			time.Sleep(time.Millisecond)
		}
		green := 0
		for range 1000 {
			_, side, done := sw.Pick()
			done(nil)
			if side == bluegreen.Green {
				green++
			}
		}
		cancel()
		if green != p*10 {
			t.Errorf("%d%%: %d of 1000 picks went to green", p, green)
		}
	}
}

func TestValidate(t *testing.T) {
	db := &sql.DB{}
	bad := []bluegreen.Config{
		{Green: db},
		{Blue: db, Green: db, Steps: []int{10, 10, 100}},
		{Blue: db, Green: db, Steps: []int{10, 50}},
		{Blue: db, Green: db, Steps: []int{0, 100}},
		{Blue: db, Green: db, Threshold: 1},
		{Blue: db, Green: db, Window: -time.Second},
	}
	for i, c := range bad {
		if _, err := bluegreen.New(c); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

// A green that fails every query is rolled back at the first step (within the
// first window, however slowly the machine runs), and traffic is all on blue
// again.
func TestRollbackWithinOneWindow(t *testing.T) {
	blue, green := memDB(t, true), memDB(t, false)
	const window = 2 * time.Second
	var calls atomic.Int32
	var got bluegreen.Report
	sw, err := bluegreen.New(bluegreen.Config{Blue: blue, Green: green, Window: window,
		OnRollback: func(_ context.Context, r bluegreen.Report) error { calls.Add(1); got = r; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWorkers(ctx, sw, 8)
	start := time.Now()
	if err := sw.Run(ctx); !errors.Is(err, bluegreen.ErrRolledBack) {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(start) // logged only
	if calls.Load() != 1 || got.Step != 0 || got.Percent != 10 || got.Window.Errors == 0 {
		t.Fatalf("rollback callback: %d calls, report %+v (want one call at the first step, 10 %%)", calls.Load(), got)
	}
	// From now on nothing fails: everything is on blue.
	checkAllBlueAfterRollback(t, sw, w)
	cancel()
	w.wg.Wait()
	st := sw.Stats()
	t.Logf("rolled back after %v: %s; %d green failures of %d green queries, %d blue queries", took.Round(time.Millisecond), got.Reason, st.Green.Errors, st.Green.Queries, st.Blue.Queries)
}

// A good green goes through every step to 100 %. The steps are taken from the
// switch's own log records, not by polling, so a starved test goroutine
// cannot miss one.
func TestPromote(t *testing.T) {
	blue, green := memDB(t, true), memDB(t, true)
	var promoted atomic.Bool
	steps := &stepLog{}
	sw, err := bluegreen.New(bluegreen.Config{Blue: blue, Green: green, Window: 150 * time.Millisecond,
		Logger:    slog.New(steps),
		OnPromote: func(context.Context, bluegreen.Report) error { promoted.Store(true); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWorkers(ctx, sw, 4)
	if err := sw.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	cancel()
	w.wg.Wait()
	if !promoted.Load() || sw.Stats().Phase != bluegreen.Promoted || sw.Stats().Percent != 100 {
		t.Fatalf("not promoted: %+v", sw.Stats())
	}
	if w.fail.Load() != 0 {
		t.Fatalf("%d failures", w.fail.Load())
	}
	if got := steps.percents(); !slices.Equal(got, []int64{10, 25, 50, 75, 100}) {
		t.Fatalf("steps %v, want 10 25 50 75 100", got)
	}
}

// stepLog is a slog.Handler that keeps the percent of every "shifting" record.
type stepLog struct {
	mu sync.Mutex
	p  []int64
}

func (h *stepLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *stepLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *stepLog) WithGroup(string) slog.Handler            { return h }
func (h *stepLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "blue-green: shifting" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "percent" {
			h.mu.Lock()
			h.p = append(h.p, a.Value.Int64())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *stepLog) percents() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.p)
}

// Too little green traffic to judge: the window is extended, not passed.
func TestFewQueriesExtendWindow(t *testing.T) {
	blue, green := memDB(t, true), memDB(t, true)
	sw, err := bluegreen.New(bluegreen.Config{Blue: blue, Green: green, Window: 50 * time.Millisecond, MinQueries: 5})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := sw.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v", err)
	}
	if st := sw.Stats(); st.Step != 0 || st.Percent != 10 {
		t.Fatalf("advanced without traffic: %+v", st)
	}
}
