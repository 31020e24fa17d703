package credential_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// TestWaitQueuedDurably: rotate --wait during a grace period queues the
// rotation in the store. The waiting process is interrupted (and the
// manager reopened, as after a restart); the error says the rotation stays
// queued and what to run. When the grace ends the scheduler alone retires
// the previous version and runs the queued rotation.
func TestWaitQueuedDurably(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	grace := time.Hour
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: &grace})
	if err != nil || r.Step != rotation.StepGrace {
		t.Fatalf("rotate: %v %+v", err, r)
	}
	graceEnd := *r.GraceEndsAt

	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan time.Time, 1)
	done := make(chan error, 1)
	go func() {
		_, err := e.m.Rotate(ctx, "a", credential.RotateOptions{Wait: true, Reason: "after the leak review", OnQueued: func(t time.Time) { queued <- t }})
		done <- err
	}()
	select {
	case at := <-queued:
		if !at.Equal(graceEnd) {
			t.Fatalf("queued behind %s, want %s", at, graceEnd)
		}
	case err := <-done:
		t.Fatalf("returned without queueing: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not queued")
	}
	cancel()
	err = <-done
	var qe *rotation.QueuedError
	if !errors.As(err, &qe) || !errors.Is(err, store.ErrRotationInProgress) {
		t.Fatalf("interrupted wait: %v", err)
	}
	for _, want := range []string{"stays queued", "rotations a", "rotate a --wait", "policy set a"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	e.reopen() // the waiting process is gone
	c, err := e.m.Get(context.Background(), "a", credential.GetOptions{})
	if err != nil || c.Version != 2 || c.NextDueAt == nil || !c.NextDueAt.Equal(graceEnd) {
		t.Fatalf("after the interrupted wait: %v %+v", err, c)
	}
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range recs {
		found = found || r.Action == "rotate.queued" && strings.Contains(r.Detail, "after the leak review")
	}
	if !found {
		t.Fatalf("no rotate.queued audit entry: %+v", recs)
	}

	// Nothing runs early; at the grace end the scheduler retires version 1,
	// then runs the queued rotation.
	e.tick()
	if c := e.get("a", "current"); c.Version != 2 {
		t.Fatalf("rotated before the grace ended: version %d", c.Version)
	}
	e.clock.Advance(grace + time.Second)
	for range 3 {
		e.tick()
		e.m.Engine().Close() // wait for the scheduled goroutines
		e.reopen()
	}
	if c := e.get("a", "current"); c.Version != 3 {
		t.Fatalf("after the grace: version %d is current, want the queued rotation's 3", c.Version)
	}
}
