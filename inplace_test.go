package credential_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
)

// TestInPlaceHasNoGrace: an in_place rotation does not pretend the old
// password stays valid: no grace period, no grace label, no rollback into a
// grace that never was, and nothing blocks the next rotation.
func TestInPlaceHasNoGrace(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v1 := e.put("a", &credential.Settings{Strategy: rotator.InPlace})
	r, err := e.m.Rotate(ctx, "a", credential.RotateOptions{Grace: dur(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != rotation.StepRetired || r.Open {
		t.Fatalf("in_place rotation: step %s open %v", r.Step, r.Open)
	}
	info := rotation.InfoOf(r)
	if info.Note != rotation.InPlaceNote || info.GraceEndsAt != nil {
		t.Fatalf("info: note %q grace %v", info.Note, info.GraceEndsAt)
	}
	cur := e.get("a", "current")
	if cur.State == credential.StateGrace || cur.GraceEndsAt != nil || e.auth(v1) || !e.auth(cur) {
		t.Fatalf("after in_place: state %s grace %v", cur.State, cur.GraceEndsAt)
	}
	if _, err := e.m.Rollback(ctx, "a", credential.RollbackOptions{}); !errors.Is(err, rotation.ErrGraceEnded) {
		t.Fatalf("rollback without a grace: %v", err)
	}
	if _, err := e.m.Rotate(ctx, "a", credential.RotateOptions{}); err != nil {
		t.Fatalf("the next rotation must not wait for a grace: %v", err)
	}
}

// TestInPlaceServesNewAtApply: an in_place rotation commits as soon as the
// target accepted the new password and verifies after; a failed verify
// reverts the target, moves current back and tells consumers.
func TestInPlaceServesNewAtApply(t *testing.T) {
	var mu sync.Mutex
	var steps []string
	e := newEnv(t, func(c *credential.Config) {
		c.Engine.AfterStep = func(_, step string) { mu.Lock(); steps = append(steps, step); mu.Unlock() }
	})
	ctx := context.Background()
	v1 := e.put("a", &credential.Settings{Strategy: rotator.InPlace})
	var events []rotation.Event
	e.m.Engine().Subscribe(func(ev rotation.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })

	// A verify that fails after the early commit: reverted, version 1 current again.
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
	_, err := e.m.Rotate(ctx, "a", credential.RotateOptions{})
	var re *rotation.RotationError
	if !errors.As(err, &re) || !re.RolledBack {
		t.Fatalf("failed verify: %v", err)
	}
	cur := e.get("a", "current")
	if cur.Version != 1 || !e.auth(v1) {
		t.Fatalf("after the revert: current %d, version 1 logs in %v", cur.Version, e.auth(v1))
	}
	mu.Lock()
	var told []int
	for _, ev := range events {
		if ev.Kind == rotation.EventCurrentChanged {
			told = append(told, ev.Version)
		}
	}
	got := slices.Clone(steps)
	steps, events = nil, nil
	mu.Unlock()
	if !slices.Equal(told, []int{2, 1}) {
		t.Fatalf("consumers were told %v, want [2 1] (served at apply, then reverted)", told)
	}
	if i, j := slices.Index(got, rotation.StepApplied), slices.Index(got, rotation.StepCommitted); i < 0 || j != i+1 || slices.Contains(got, rotation.StepVerified) {
		t.Fatalf("steps %v: want committed right after applied", got)
	}

	// A good rotation: served at apply, verified, retired.
	r, err := e.m.Rotate(ctx, "a", credential.RotateOptions{})
	if err != nil || r.Step != rotation.StepRetired {
		t.Fatalf("rotate: %v %+v", err, r)
	}
	if c := e.get("a", "current"); c.Version != r.ToVersion || !e.auth(c) || e.auth(v1) {
		t.Fatalf("after in_place: current %d", c.Version)
	}

	// With automatic rollback off, the usual order stays: verify, then commit.
	e.put("b", &credential.Settings{Strategy: rotator.InPlace, AutoRollback: new(false)})
	mu.Lock()
	steps = nil
	mu.Unlock()
	if _, err := e.m.Rotate(ctx, "b", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if i, j := slices.Index(steps, rotation.StepVerified), slices.Index(steps, rotation.StepCommitted); i < 0 || j < i {
		t.Fatalf("steps without auto rollback %v: want verified before committed", steps)
	}
}
