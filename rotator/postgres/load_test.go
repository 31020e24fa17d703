package postgres_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
)

func consumers() *testenv.Consumers[rotator.Credential] {
	return &testenv.Consumers[rotator.Credential]{Workers: 4, QueriesPerConn: 50,
		Open: func(ctx context.Context, c rotator.Credential) (func(context.Context) error, func(), error) {
			conn, err := login(ctx, c)
			if err != nil {
				return nil, nil, err
			}
			q := func(ctx context.Context) error { _, err := conn.Exec(ctx, "SELECT 1"); return err }
			return q, func() { conn.Close(context.Background()) }, nil
		}}
}

// Zero downtime: consumers keep logging in and querying with the latest
// credential while the rotator rotates 50 times; not one login or query fails.
func TestLoadAlternating(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	cur := e.alternatingCred(t, "")
	load := consumers()
	load.Start(cur)
	defer load.Stop()

	time.Sleep(1500 * time.Millisecond)
	before := load.Queries()
	baseline := float64(before) / 1.5

	start := time.Now()
	n := 50
	if raceEnabled {
		n = 20
	}
	for i := range n {
		pend := stage(t, rot, e.res, cur, rotator.Alternating)
		if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, GraceEndsAt: time.Now().Add(time.Minute), Resolver: e.res}); err != nil {
			t.Fatalf("rotation %d: apply: %v", i, err)
		}
		if _, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: e.res}); err != nil {
			t.Fatalf("rotation %d: verify: %v", i, err)
		}
		load.Publish(pend) // commit: new logins use the new version
		if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Alternating, Resolver: e.res}); err != nil {
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
	t.Logf("postgres alternating: %d rotations in %v (%.1f ms each); queries/s before %.0f, during %.0f; %d logins, 0 failed",
		n, elapsed.Round(time.Millisecond), float64(elapsed.Milliseconds())/float64(n), baseline, during, load.Logins())
}

// In place cannot be zero-downtime: measure how long logins with the old
// password fail (Apply until the new version is published) and how many do.
// Open sessions never fail.
func TestLoadInPlaceFailureWindow(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	cur := e.inPlaceCred(t, "", false)
	load := consumers()
	load.Start(cur)
	defer load.Stop()
	time.Sleep(500 * time.Millisecond)

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
		time.Sleep(50 * time.Millisecond)
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
	t.Logf("postgres in_place: %d rotations; failure window (apply → publish) median %v, max %v; %d of %d logins failed, 0 queries failed",
		n, windows[n/2].Round(10*time.Microsecond), windows[n-1].Round(10*time.Microsecond), loginFail, load.Logins())
}
