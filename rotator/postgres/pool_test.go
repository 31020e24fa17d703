package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
)

// refusing is a resolver that refuses every admin, as the engine's does when
// the binding rule no longer allows it.
type refusing struct{}

func (refusing) Resolve(context.Context, string) (rotator.Credential, error) {
	return rotator.Credential{}, rotator.Errorf(rotator.ClassPermission, "binding", "not allowed")
}

// TestAdminPool: the steps of rotations share one admin login; the pool is
// reached only through the resolver (a refusal stops the step, whatever is
// pooled), never serves a connection to another password, and Close empties
// it.
func TestAdminPool(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	defer rot.Close()
	cur := e.alternatingCred(t, "")
	r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Alternating, Grace: time.Hour}
	cur = r.Run(t, cur)
	cur = r.Run(t, cur)
	hits, misses, idle := postgres.PoolStats(rot)
	if misses != 1 || hits != 3 || idle != 1 {
		t.Fatalf("two rotations (four admin steps): %d hits, %d misses, %d idle; want 3, 1, 1", hits, misses, idle)
	}

	pend := stage(t, rot, e.res, cur, rotator.Alternating)
	apply := rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Alternating, Resolver: refusing{}}
	_, err := rot.Apply(ctx(t), apply)
	wantClass(t, "apply with the admin refused", err, rotator.ClassPermission)
	if h, _, _ := postgres.PoolStats(rot); h != hits {
		t.Fatal("a step whose admin was refused took a pooled connection")
	}

	apply.Resolver = e.res.WithPassword(e.adminID, secret.New("wrong-password-123"))
	_, err = rot.Apply(ctx(t), apply)
	wantClass(t, "apply with a wrong admin password", err, rotator.ClassAuth)

	rot.Close()
	if _, _, idle := postgres.PoolStats(rot); idle != 0 {
		t.Fatalf("%d idle after Close", idle)
	}
	apply.Resolver = e.res
	if _, err := rot.Apply(ctx(t), apply); err != nil {
		t.Fatalf("apply after Close: %v", err)
	}
}

// TestAdminPoolKilledConnection: the server ends the pooled admin session
// between two rotations (pg_terminate_backend). The next step takes that
// connection without a ping, finds it dead, and is redone once on a fresh
// admin login: the rotation succeeds and every credential logs in.
func TestAdminPoolKilledConnection(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{AdminPingIdle: time.Hour}) // never pinged: the redo must cover it
	defer rot.Close()
	cur := e.alternatingCred(t, "")
	r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Alternating, Grace: time.Hour}
	cur = r.Run(t, cur)

	su := e.pg.Connect(t)
	var killed int
	if err := su.QueryRow(ctx(t), "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", e.admin).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminating the pooled admin session: %d terminated, %v; want 1", killed, err)
	}
	for n := 1; n > 0; time.Sleep(10 * time.Millisecond) { // until the backend is gone
		if err := su.QueryRow(ctx(t), "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", e.admin).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}

	hits, _, _ := postgres.PoolStats(rot)
	cur = r.Run(t, cur)
	if h, _, _ := postgres.PoolStats(rot); h <= hits {
		t.Fatal("the rotation after the kill did not take the pooled connection")
	}
	verify := dbrottest.Verifier(t, rot, e.res)
	if err := verify(cur); err != nil {
		t.Fatalf("current version after the rotation: %v", err)
	}
	if err := verify(e.res[e.adminID]); err != nil {
		t.Fatalf("admin after the rotation: %v", err)
	}
	cur = r.Run(t, cur) // and the pool works on
	if err := verify(cur); err != nil {
		t.Fatal(err)
	}
}
