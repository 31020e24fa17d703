package bluegreen_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/bluegreen"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pgDB opens a *sql.DB logged in with one credential version.
func pgDB(t *testing.T, c consumer.Credential) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=%s sslmode=disable", c.Field("host"), c.Field("port"), c.Field("database")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = c.Field("username"), c.Secret["password"].Reveal()
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(8)
	t.Cleanup(func() { db.Close() })
	return db
}

// rotateInGrace rotates id and leaves it in grace; it returns the old and the
// new version.
func rotateInGrace(t *testing.T, m *credential.Manager, src consumer.Source, id string, grace time.Duration) (old, cur consumer.Credential) {
	t.Helper()
	ctx := context.Background()
	old, err := src.Current(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, id, credential.RotateOptions{Grace: &grace}); err != nil {
		t.Fatal(err)
	}
	if cur, err = src.Current(ctx, id); err != nil {
		t.Fatal(err)
	}
	if cur.Version != old.Version+1 {
		t.Fatalf("current is %d after rotating from %d", cur.Version, old.Version)
	}
	return old, cur
}

// The new version logs in (the rotator's SELECT 1 probe passes) but its role
// cannot read the application's table. Blue-green sees green fail, routes
// everything back to blue at the first step (10 %) and rolls the rotation
// back through the Manager: current is the old version again.
//
// No wall-clock budget: "within one window" is checked as "decided at the
// first step", which holds however slowly a loaded machine runs.
func TestManagerRollbackOnGreenWithoutAccess(t *testing.T) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{SecondUserWithoutAccess: true})
	src := consumer.FromManager(m)
	defer src.Close()
	old, cur := rotateInGrace(t, m, src, pg.ID, 10*time.Minute)
	blue, green := pgDB(t, old), pgDB(t, cur)

	const window = 3 * time.Second
	sw, err := bluegreen.New(bluegreen.Config{Blue: blue, Green: green, Window: window,
		OnRollback: bluegreen.RollbackManager(m, pg.ID)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := "SELECT count(*) FROM " + pgx.Identifier{pg.Table}.Sanitize()
	w := startWorkersQuery(ctx, sw, 8, q)
	start := time.Now()
	if err := sw.Run(ctx); !errors.Is(err, bluegreen.ErrRolledBack) {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(start) // logged only
	st := sw.Stats()
	if st.CallbackErr != nil {
		t.Fatalf("Manager.Rollback: %v", st.CallbackErr)
	}
	if r := sw.Report(); r.Step != 0 || r.Percent != 10 || r.Window.Errors == 0 {
		t.Fatalf("rollback decided at %+v, want the first step (10 %%) with green errors", r)
	}
	checkAllBlueAfterRollback(t, sw, w)
	cancel()
	w.wg.Wait()
	now, err := src.Current(context.Background(), pg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if now.Version != old.Version || now.Field("username") != pg.Users[0] {
		t.Fatalf("current after rollback: version %d as %s, want %d as %s", now.Version, now.Field("username"), old.Version, pg.Users[0])
	}
	if open, _ := m.Rotations(context.Background(), pg.ID, true, 1); len(open) != 0 {
		t.Fatalf("rotation still open at step %s", open[0].Step)
	}
	h, err := m.History(context.Background(), pg.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) == 0 || h[0].Action != "rollback" || h[0].Actor != "bluegreen" {
		t.Fatalf("last history entry %+v, want a rollback by bluegreen", h[0])
	}
	t.Logf("rolled back after %v (window %v): %s; green %d/%d failed, blue %d queries; history: %s %s",
		took.Round(time.Millisecond), window, sw.Report().Reason, st.Green.Errors, st.Green.Queries, st.Blue.Queries, h[0].Action, h[0].Reason)
}

// A good new version goes through every step to 100 % and the rotation then
// retires the old version as usual.
func TestManagerPromote(t *testing.T) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{})
	src := consumer.FromManager(m)
	defer src.Close()
	// Grace outlasts the ramp on a loaded machine (the old role's VALID UNTIL
	// is the grace end; blue logs in with it until promotion).
	old, cur := rotateInGrace(t, m, src, pg.ID, 15*time.Second)
	blue, green := pgDB(t, old), pgDB(t, cur)
	sw, err := bluegreen.New(bluegreen.Config{Blue: blue, Green: green, Window: 300 * time.Millisecond,
		OnRollback: bluegreen.RollbackManager(m, pg.ID)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWorkersQuery(ctx, sw, 8, "SELECT count(*) FROM "+pgx.Identifier{pg.Table}.Sanitize())
	if err := sw.Run(ctx); err != nil {
		t.Fatalf("Run: %v (stats %+v)", err, sw.Stats())
	}
	cancel()
	w.wg.Wait()
	st := sw.Stats()
	if st.Phase != bluegreen.Promoted || st.Percent != 100 || w.fail.Load() != 0 || st.Green.Errors != 0 {
		t.Fatalf("stats %+v, %d failures", st, w.fail.Load())
	}
	consumertest.Retire(t, m, pg.ID)
	if c, _ := src.Current(context.Background(), pg.ID); c.Version != cur.Version {
		t.Fatalf("current %d, want %d", c.Version, cur.Version)
	}
	t.Logf("promoted: green %d queries, blue %d queries, 0 failed", st.Green.Queries, st.Blue.Queries)
}

func startWorkersQuery(ctx context.Context, sw *bluegreen.Switch, n int, q string) *workers {
	w := &workers{}
	for range n {
		w.wg.Go(func() {
			for ctx.Err() == nil {
				err := sw.Do(ctx, func(db *sql.DB) error {
					var x int
					return db.QueryRowContext(ctx, q).Scan(&x)
				})
				switch {
				case err == nil:
					w.ok.Add(1)
				case ctx.Err() == nil:
					w.fail.Add(1)
				}
			}
		})
	}
	return w
}

// checkAllBlueAfterRollback checks, without a time budget, that after a
// rollback every pick goes to blue and blue keeps answering: it waits (under
// one generous deadline) until the workers have run another 200 queries on
// blue, none of which failed. Green queries picked before the rollback may
// still be finishing; they do not count.
func checkAllBlueAfterRollback(t *testing.T, sw *bluegreen.Switch, w *workers) {
	t.Helper()
	for range 100 {
		if _, side, done := sw.Pick(); side != bluegreen.Blue {
			t.Fatal("picked green after the rollback")
		} else {
			done(nil)
		}
	}
	before := sw.Stats().Blue
	deadline := time.Now().Add(2 * time.Minute)
	for {
		now := sw.Stats().Blue
		if now.Errors != before.Errors {
			t.Fatalf("%d blue queries failed after the rollback", now.Errors-before.Errors)
		}
		if now.Queries-before.Queries >= 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blue answered only %d queries in 2 minutes after the rollback (%d ok, %d failed in all)", now.Queries-before.Queries, w.ok.Load(), w.fail.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := sw.Stats(); st.Phase != bluegreen.RolledBack || st.Percent != 0 {
		t.Fatalf("stats after the rollback %+v", st)
	}
}
