package credential_test

import (
	"context"
	"errors"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
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
