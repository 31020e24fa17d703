package mysql_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
)

func consumers() *testenv.Consumers[rotator.Credential] {
	return &testenv.Consumers[rotator.Credential]{Workers: 8, QueriesPerConn: 20,
		Open: func(ctx context.Context, c rotator.Credential) (func(context.Context) error, func(), error) {
			conn, done, err := login(ctx, c)
			if err != nil {
				return nil, nil, err
			}
			q := func(ctx context.Context) error { _, err := conn.ExecContext(ctx, "SELECT 1"); return err }
			return q, done, nil
		}}
}

// Zero downtime for dual and alternating: 50 rotations under load, not one
// failed login or query.
func TestLoadZeroDowntime(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating} {
		t.Run(string(st), func(t *testing.T) {
			cur := e.single(t, "", true)
			if st == rotator.Alternating {
				cur = e.pair(t, "")
			}
			load := consumers()
			load.Start(cur)
			defer load.Stop()
			time.Sleep(time.Second)
			before := load.Queries()
			baseline := float64(before) / 1.0
			start := time.Now()
			const n = 50
			for i := range n {
				pend := stage(t, rot, e.res, cur, st)
				if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, GraceEndsAt: time.Now().Add(time.Minute), Resolver: e.res}); err != nil {
					t.Fatalf("rotation %d: apply: %v", i, err)
				}
				if _, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: e.res}); err != nil {
					t.Fatalf("rotation %d: verify: %v", i, err)
				}
				load.Publish(pend)
				if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: st, Resolver: e.res}); err != nil {
					t.Fatalf("rotation %d: retire: %v", i, err)
				}
				cur = pend
			}
			elapsed := time.Since(start)
			during := float64(load.Queries()-before) / elapsed.Seconds()
			load.Stop()
			if f := load.Failures(); len(f) != 0 {
				t.Fatalf("%d failures during rotation, first: %v", len(f), f[0].Err)
			}
			t.Logf("mariadb %s: %d rotations in %v (%.1f ms each); queries/s before %.0f, during %.0f; %d logins, 0 failed",
				st, n, elapsed.Round(time.Millisecond), float64(elapsed.Microseconds())/1000/n, baseline, during, load.Logins())
		})
	}
}

func TestLoadInPlaceFailureWindow(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	cur := e.single(t, "", false)
	load := consumers()
	load.Start(cur)
	defer load.Stop()
	time.Sleep(300 * time.Millisecond)
	const n = 20
	var windows []time.Duration
	for i := range n {
		pend := stage(t, rot, e.res, cur, rotator.InPlace)
		applied := time.Now()
		if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.InPlace, Resolver: e.res}); err != nil {
			t.Fatalf("rotation %d: apply: %v", i, err)
		}
		if _, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: e.res}); err != nil {
			t.Fatalf("rotation %d: verify: %v", i, err)
		}
		load.Publish(pend)
		windows = append(windows, time.Since(applied))
		cur = pend
		time.Sleep(30 * time.Millisecond)
	}
	load.Stop()
	var loginFail, queryFail int
	for _, f := range load.Failures() {
		if f.Login {
			loginFail++
		} else {
			queryFail++
		}
	}
	if queryFail != 0 {
		t.Fatalf("%d queries failed on open sessions", queryFail)
	}
	sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
	t.Logf("mariadb in_place: %d rotations; failure window (apply → publish) median %v, max %v; %d of %d logins failed, 0 queries failed",
		n, windows[n/2].Round(10*time.Microsecond), windows[n-1].Round(10*time.Microsecond), loginFail, load.Logins())
}
