package credential_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

func TestRotateDuringGraceRefusedWithGraceEnd(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	var ig *rotation.InGraceError
	if !errors.As(err, &ig) || !errors.Is(err, credential.ErrRotationInProgress) {
		t.Fatalf("rotate during grace: %v", err)
	}
	if !ig.GraceEndsAt.Equal(*r.GraceEndsAt) || ig.Version != 1 || ig.Deadline != nil {
		t.Fatalf("in-grace error: %+v", ig)
	}
	for _, hint := range []string{"rotate a --wait", "grace end a", "rotate a --now"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q does not name %q", err, hint)
		}
	}
}

func TestRotateWaitRunsWhenGraceEnds(t *testing.T) {
	e := newEnv(t, func(c *credential.Config) { c.Engine.TickInterval = 5 * time.Millisecond })
	v1 := e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *credential.Rotation
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Wait: true, Reason: "queued"})
		done <- result{r, err}
	}()
	// Still waiting while the grace runs: the previous version keeps working.
	select {
	case res := <-done:
		t.Fatalf("rotate --wait returned during grace: %+v %v", res.r, res.err)
	case <-time.After(50 * time.Millisecond):
	}
	if !e.auth(v1) {
		t.Fatal("previous version retired before its grace ended")
	}
	e.clock.Advance(10 * time.Minute)
	var res result
	select {
	case res = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("rotate --wait did not run after the grace ended")
	}
	if res.err != nil || res.r.FromVersion != 2 || res.r.ToVersion != 3 || res.r.Step != rotation.StepGrace || res.r.Reason != "queued" {
		t.Fatalf("queued rotation: %+v %v", res.r, res.err)
	}
	if e.auth(v1) {
		t.Fatal("version 1 must be retired when its grace ended")
	}
	rs, err := e.m.Rotations(context.Background(), "a", false, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[1].Step != rotation.StepRetired {
		t.Fatalf("rotations: %+v", rs)
	}
}

func TestNextRotationNeverInThePast(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	grace := &store.Rotation{Step: rotation.StepGrace, GraceEndsAt: at(30 * time.Second)}
	for _, tc := range []struct {
		name string
		next *time.Time
		open *store.Rotation
		want *time.Time
	}{
		{"none", nil, nil, nil},
		{"future", at(time.Hour), nil, at(time.Hour)},
		{"overdue shows now", at(-time.Minute), nil, at(0)},
		{"inside grace shows grace end", at(2 * time.Second), grace, at(30 * time.Second)},
		{"after grace unchanged", at(time.Hour), grace, at(time.Hour)},
	} {
		got := rotation.NextShown(tc.next, tc.open, now)
		if (got == nil) != (tc.want == nil) || got != nil && !got.Equal(*tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// Through the manager: a periodic 1m policy with a 10m grace.
	e := newEnv(t, nil)
	// (The policy's own grace fits the interval; the rotation asks for a longer one.)
	e.put("a", &credential.Settings{Grace: dur2(30 * time.Second), Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(time.Minute)}}})
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	c := e.get("a", "current")
	if c.NextDueAt == nil || !c.NextDueAt.Equal(*r.GraceEndsAt) {
		t.Fatalf("next rotation %v, want the grace end %v", c.NextDueAt, r.GraceEndsAt)
	}
	list, _, err := e.m.List(context.Background(), credential.ListOptions{})
	if err != nil || len(list) != 1 || list[0].NextDueAt == nil || list[0].NextDueAt.Before(e.clock.Now()) {
		t.Fatalf("list next rotation: %+v %v", list, err)
	}
}
