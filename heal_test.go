package credential_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
)

// Issue 18: the target goes away between apply and verify for longer than the
// budget, so verify and then the revert give up and the rotation is parked in
// needs_attention (transient). When the target answers again the scheduler
// finishes it without anyone acting: the applied version logs in, so it is
// promoted.
func TestParkedTransientRotationHeals(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", &credential.Settings{Grace: dur2(0), Backoff: rotation.Backoff{Budget: rotation.Duration(time.Minute)}})
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassTransient})
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatal(err)
	}
	e.tg.SetDown(true) // after apply: verify and revert cannot reach it
	r := e.runDue("a", 500)
	if r.Step != rotation.StepNeedsAttention || r.ErrorClass != string(rotator.ClassTransient) {
		t.Fatalf("step %s class %s, want parked in needs_attention (transient)", r.Step, r.ErrorClass)
	}
	// Still away: probing leaves it parked, at a low rate.
	e.clock.Advance(time.Minute)
	e.tick()
	if rs, _ := e.m.Rotations(context.Background(), "a", true, 1); len(rs) != 1 || rs[0].Step != rotation.StepNeedsAttention || !rs[0].DueAt.After(e.clock.Now()) {
		t.Fatalf("while away: %+v", rs)
	}
	e.tg.SetDown(false)
	e.clock.Advance(time.Minute)
	e.tick()
	rs, _ := e.m.Rotations(context.Background(), "a", false, 1)
	if rs[0].Open || rs[0].Step != rotation.StepRetired {
		t.Fatalf("after the target returned: step %s open %v (%s)", rs[0].Step, rs[0].Open, rs[0].LastError)
	}
	c := e.get("a", "current")
	if c.Version != 2 || !e.auth(c) {
		t.Fatalf("current v%d does not log in", c.Version)
	}
	if old, err := e.m.Get(context.Background(), "a", credential.GetOptions{Version: 1}); err == nil && e.auth(old) {
		t.Fatal("the retired version still logs in")
	}
	if rep, err := e.m.Doctor(context.Background(), "a"); err != nil || !rep.Healthy {
		t.Fatalf("doctor: %v %+v", err, rep)
	}
}

// A retire that fails for longer than its budget (the target is down as
// grace ends) is parked and then retried when the target answers: the old
// secret ends refused without anyone acting.
func TestFailedRetireHeals(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", &credential.Settings{Grace: dur2(time.Minute), Backoff: rotation.Backoff{Budget: rotation.Duration(time.Minute)}})
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	old, err := e.m.Get(context.Background(), "a", credential.GetOptions{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.tg.SetDown(true)
	var r credential.Rotation
	for range 500 {
		rs, _ := e.m.Rotations(context.Background(), "a", false, 1)
		if r = rs[0]; r.Step == rotation.StepNeedsAttention || !r.Open {
			break
		}
		if d := r.DueAt.Sub(e.clock.Now()); d > 0 {
			e.clock.Advance(d)
		}
		e.tick()
	}
	if r.Step != rotation.StepNeedsAttention {
		t.Fatalf("step %s, want parked", r.Step)
	}
	rep, _ := e.m.Doctor(context.Background(), "a")
	if f := rep.Findings[0]; f.Fix != "nebula-credential rotations retry a" {
		t.Fatalf("fix line %q, want the retry that retires", f.Fix)
	}
	e.tg.SetDown(false)
	e.clock.Advance(time.Minute)
	e.tick()
	if e.auth(old) {
		t.Fatal("the old version still logs in after the target returned")
	}
	if c := e.get("a", "current"); c.Version != 2 || !e.auth(c) || c.State != credential.StateActive {
		t.Fatalf("current v%d state %s", c.Version, c.State)
	}
}

// resolve on a failed retire first retires; while the target is still away
// it refuses (naming --force), and with --force it names the version that
// stays valid.
func TestResolveFailedRetire(t *testing.T) {
	park := func(t *testing.T) (*env, *credential.Credential) {
		e := newEnv(t, nil)
		e.put("a", &credential.Settings{Grace: dur2(time.Minute), Backoff: rotation.Backoff{Budget: rotation.Duration(time.Minute)}})
		if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
		old, err := e.m.Get(context.Background(), "a", credential.GetOptions{Version: 1})
		if err != nil {
			t.Fatal(err)
		}
		e.tg.SetDown(true)
		for range 500 {
			rs, _ := e.m.Rotations(context.Background(), "a", false, 1)
			if rs[0].Step == rotation.StepNeedsAttention {
				return e, old
			}
			if d := rs[0].DueAt.Sub(e.clock.Now()); d > 0 {
				e.clock.Advance(d)
			}
			e.tick()
		}
		t.Fatal("retire never parked")
		return nil, nil
	}
	t.Run("target still away", func(t *testing.T) {
		e, _ := park(t)
		_, err := e.m.Engine().Resolve(context.Background(), "a", 2, false)
		if err == nil || !strings.Contains(err.Error(), "rotations resolve a --keep 2 --force") || !strings.Contains(err.Error(), "still logs in") {
			t.Fatalf("resolve while away: %v", err)
		}
		r, err := e.m.Engine().Resolve(context.Background(), "a", 2, true)
		if err != nil {
			t.Fatal(err)
		}
		if n := rotation.StaysValid(r); n != 1 {
			t.Fatalf("forced resolve names version %d as staying valid, want 1", n)
		}
	})
	t.Run("target back", func(t *testing.T) {
		e, old := park(t)
		e.tg.SetDown(false)
		r, err := e.m.Engine().Resolve(context.Background(), "a", 2, false)
		if err != nil || r.Step != rotation.StepRetired {
			t.Fatalf("resolve: %v %+v", err, r)
		}
		if e.auth(old) {
			t.Fatal("the old version still logs in after resolve")
		}
	})
}

// A previous version that still logs in after its grace ended (the change
// was undone on the target, or a failing retire was closed with resolve
// --force) is an error in doctor, and its fix line, followed literally,
// retires it: the old secret ends refused and doctor is healthy.
func TestPreviousValidAfterGraceDoctorFix(t *testing.T) {
	fixIt := func(t *testing.T, e *env, old *credential.Credential, wantDetail string) {
		t.Helper()
		rep, err := e.m.Doctor(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		var f *rotation.Finding
		for i := range rep.Findings {
			if strings.Contains(rep.Findings[i].Title, "still logs in after its grace period ended") {
				f = &rep.Findings[i]
			}
		}
		if rep.Healthy || f == nil || f.Severity != "error" || !strings.Contains(f.Detail, wantDetail) {
			t.Fatalf("doctor must flag the old version that still logs in: %+v", rep)
		}
		if f.Fix != "nebula-credential rotations retry a" {
			t.Fatalf("fix line %q", f.Fix)
		}
		// The fix line, literally.
		if _, err := e.m.Engine().Retry(context.Background(), "a", false); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if e.auth(old) {
			t.Fatal("the old version still logs in after the fix")
		}
		if c := e.get("a", "current"); !e.auth(c) {
			t.Fatal("current stopped logging in")
		}
		if rep, _ := e.m.Doctor(context.Background(), "a"); !rep.Healthy {
			t.Fatalf("doctor after the fix: %+v", rep.Findings)
		}
		// Nothing left to retry: a clear error, nothing changed.
		if _, err := e.m.Engine().Retry(context.Background(), "a", false); err == nil || !strings.Contains(err.Error(), "already refused") {
			t.Fatalf("second retry: %v", err)
		}
	}
	t.Run("undone on the target", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", &credential.Settings{Grace: dur2(time.Minute)})
		old := e.get("a", "current")
		if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
		if rep, _ := e.m.Doctor(context.Background(), "a"); !rep.Healthy {
			t.Fatalf("during grace the old version may log in: %+v", rep.Findings)
		}
		e.clock.Advance(2 * time.Minute)
		e.tick()
		if e.auth(old) {
			t.Fatal("not retired")
		}
		if rep, _ := e.m.Doctor(context.Background(), "a"); !rep.Healthy {
			t.Fatalf("retired and refused: %+v", rep.Findings)
		}
		e.tg.Accept("a", old.Secret) // someone puts the old password back
		fixIt(t, e, old, "undone on the target")
	})
	t.Run("forced resolve of a failing retire", func(t *testing.T) {
		e := newEnv(t, nil)
		e.put("a", &credential.Settings{Grace: dur2(time.Minute), Backoff: rotation.Backoff{Budget: rotation.Duration(time.Minute)}})
		old := e.get("a", "current")
		if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.tg.SetDown(true)
		for range 500 {
			rs, _ := e.m.Rotations(context.Background(), "a", false, 1)
			if rs[0].Step == rotation.StepNeedsAttention {
				break
			}
			if d := rs[0].DueAt.Sub(e.clock.Now()); d > 0 {
				e.clock.Advance(d)
			}
			e.tick()
		}
		if _, err := e.m.Engine().Resolve(context.Background(), "a", 2, true); err != nil {
			t.Fatal(err)
		}
		e.tg.SetDown(false)
		fixIt(t, e, old, "resolve --force")
	})
}
