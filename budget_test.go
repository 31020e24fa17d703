package credential_test

import (
	"context"
	"errors"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/store"
)

// runDue moves the clock to each retry of id's open rotation and runs the
// scheduler, until the rotation leaves the retrying steps (or max passes).
func (e *env) runDue(id string, max int) store.Rotation {
	e.t.Helper()
	for range max {
		rs, err := e.m.Rotations(context.Background(), id, false, 1)
		if err != nil || len(rs) == 0 {
			e.t.Fatalf("rotations of %s: %v", id, err)
		}
		r := rs[0]
		if !r.Open || r.Step == rotation.StepGrace || r.Step == rotation.StepNeedsAttention {
			return r
		}
		if d := r.DueAt.Sub(e.clock.Now()); d > 0 {
			e.clock.Advance(d)
		}
		e.tick()
	}
	e.t.Fatalf("rotation of %s still retrying after %d passes", id, max)
	return store.Rotation{}
}

// Issue 18: transient failures are retried for a time budget, not a handful
// of attempts: verify keeps going while the target is away, and the rotation
// commits when it answers, without a revert.
func TestTransientBudgetKeepsVerifying(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	fails := make([]rotatortest.Failure, 12) // far more than the old 5 attempts
	for i := range fails {
		fails[i] = rotatortest.Failure{Class: rotator.ClassTransient}
	}
	e.tg.FailNext("verify", fails...)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatal(err)
	}
	r := e.runDue("a", 100)
	if r.Step != rotation.StepGrace {
		t.Fatalf("step %s (%s), want grace", r.Step, r.LastError)
	}
	if r.LastError != "" {
		t.Fatalf("last_error kept after success: %q", r.LastError)
	}
	if n := e.tg.Calls("revert"); n != 0 {
		t.Fatalf("reverted %d times while the target was only away", n)
	}
	if c := e.get("a", "current"); c.Version != 2 || !e.auth(c) {
		t.Fatalf("current v%d does not log in", c.Version)
	}
}

// When the budget runs out the rotation reverts, and current still works.
func TestTransientBudgetExhaustedReverts(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", &credential.Settings{Grace: dur2(time.Minute), Backoff: rotation.Backoff{Budget: rotation.Duration(2 * time.Minute)}})
	fails := make([]rotatortest.Failure, 500)
	for i := range fails {
		fails[i] = rotatortest.Failure{Class: rotator.ClassTransient}
	}
	e.tg.FailNext("verify", fails...)
	_, _ = e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	start := e.clock.Now()
	r := e.runDue("a", 500)
	if r.Step != rotation.StepRolledBack || r.Open {
		t.Fatalf("step %s open %v, want rolled back", r.Step, r.Open)
	}
	if used := e.clock.Now().Sub(start); used < 2*time.Minute {
		t.Fatalf("gave up after %v of a 2m budget", used)
	}
	if e.tg.Calls("revert") == 0 {
		t.Fatal("an applied version was not reverted")
	}
	if c := e.get("a", "current"); c.Version != 1 || !e.auth(v1) {
		t.Fatal("current must stay version 1 and log in")
	}
}

// An apply that never reached the target (it was down before the rotation)
// has nothing to revert: once the budget runs out the rotation ends
// failed-before-change with current untouched, even though the target is
// still down (a revert would have failed and parked it in needs_attention).
func TestApplyNeverReachedFailsBeforeChange(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", &credential.Settings{Grace: dur2(0), Backoff: rotation.Backoff{Budget: rotation.Duration(time.Minute)}})
	e.tg.SetDown(true)
	_, _ = e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	r := e.runDue("a", 500)
	if r.Step != rotation.StepRolledBack || r.Open {
		t.Fatalf("step %s open %v (%s), want closed as failed before change", r.Step, r.Open, r.LastError)
	}
	if n := e.tg.Calls("revert"); n != 0 {
		t.Fatalf("revert called %d times for an apply that never reached the target", n)
	}
	e.tg.SetDown(false)
	if c := e.get("a", "current"); c.Version != 1 || !e.auth(v1) {
		t.Fatal("current must stay version 1 and log in")
	}
	// A later rotation is not blocked.
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A person can give up a rotation that waits for its target:
// `rotations retry ID --rollback` closes it at once when nothing was applied.
func TestRetryRollbackGivesUpWaitingRotation(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	e.tg.SetDown(true)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatal(err)
	}
	r, err := e.m.Engine().Retry(context.Background(), "a", true)
	if err != nil && !errors.As(err, new(*rotation.RotationError)) {
		t.Fatal(err)
	}
	if r.Step != rotation.StepRolledBack || r.Open {
		t.Fatalf("step %s open %v, want closed", r.Step, r.Open)
	}
	if n := e.tg.Calls("revert"); n != 0 {
		t.Fatalf("revert called %d times for an apply that never reached the target", n)
	}
	e.tg.SetDown(false)
	if c := e.get("a", "current"); c.Version != 1 || !e.auth(v1) {
		t.Fatal("current must stay version 1")
	}
}

func dur2(d time.Duration) *rotation.Duration { x := rotation.Duration(d); return &x }

// serve --retry-budget (Config.TransientBudget) is the budget of a credential
// that sets none; a credential's backoff.budget overrides it.
func TestConfigTransientBudget(t *testing.T) {
	run := func(t *testing.T, s *credential.Settings) time.Duration {
		e := newEnv(t, func(c *credential.Config) { c.Engine.TransientBudget = 3 * time.Minute })
		e.put("a", s)
		fails := make([]rotatortest.Failure, 1000)
		for i := range fails {
			fails[i] = rotatortest.Failure{Class: rotator.ClassTransient}
		}
		e.tg.FailNext("verify", fails...)
		_, _ = e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
		start := e.clock.Now()
		if r := e.runDue("a", 1000); r.Step != rotation.StepRolledBack {
			t.Fatalf("step %s", r.Step)
		}
		return e.clock.Now().Sub(start)
	}
	if used := run(t, &credential.Settings{Grace: dur2(0)}); used < 3*time.Minute || used >= 3*time.Minute+rotation.DefaultBackoffCap {
		t.Fatalf("gave up after %v with a 3m configured budget", used)
	}
	own := &credential.Settings{Grace: dur2(0), Backoff: rotation.Backoff{Budget: rotation.Duration(10 * time.Minute)}}
	if used := run(t, own); used < 10*time.Minute {
		t.Fatalf("gave up after %v; the credential's own 10m budget must win", used)
	}
}
