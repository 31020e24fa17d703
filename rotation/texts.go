package rotation

import (
	"context"
	"fmt"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// Texts that must never claim an authentication failure for a target that
// did not answer (issue 18).

// unreachable reports whether err (or a stored error class) means the target
// did not answer: nothing is known about the secret.
func unreachable(err error) bool { return rotator.Retryable(err) }

// resolveCheckError is resolve's answer when the kept version could not be
// checked against the target.
func resolveCheckError(id string, keep int, err error) error {
	if unreachable(err) {
		return fmt.Errorf("resolve %s: %w: cannot check version %d, the target did not answer (%v); nothing was changed. "+
			"Run the same command again once the target answers, or keep version %d without checking: `nebula-credential rotations resolve %s --keep %d --force`",
			id, ErrTargetUnreachable, keep, err, keep, id, keep)
	}
	return fmt.Errorf("resolve %s: version %d does not authenticate, so it cannot be kept: %w", id, keep, err)
}

// revertFailedTitle is doctor's title for a rotation whose automatic revert
// failed too ("Rollback failed? → Manual recovery required" in the
// troubleshooting guide, docs/rotation.md).
func revertFailedTitle(r *store.Rotation) string {
	if r.ErrorClass == string(rotator.ClassTransient) {
		return fmt.Sprintf("rotation %d: the target did not answer, so the new version could be neither finished nor rolled back", r.ID)
	}
	return fmt.Sprintf("rotation %d: new credential failed and rollback failed: manual recovery required", r.ID)
}

// attentionTitle is doctor's title for a rotation parked in needs_attention
// after failed: what failed, in the troubleshooting guide's terms (new
// credential creation, verification, old credential revocation, rollback).
func attentionTitle(r *store.Rotation, failed string) string {
	what := map[string]string{
		StepPlanned:     "new credential creation failed (stage)",
		StepStaged:      "new credential creation failed (apply)",
		StepApplied:     "new credential failed verification",
		StepVerified:    "committing the new credential failed",
		StepCommitted:   "committing the new credential failed",
		StepGrace:       fmt.Sprintf("old credential revocation failed: version %d may still log in", r.FromVersion),
		StepRollingBack: "rollback failed",
	}[failed]
	if what == "" {
		what = failed + " failed"
	}
	if r.ErrorClass == string(rotator.ClassTransient) {
		return fmt.Sprintf("rotation %d needs attention: %s (the target did not answer)", r.ID, what)
	}
	return fmt.Sprintf("rotation %d needs attention: %s (%s)", r.ID, what, r.ErrorClass)
}

// resolveRetire answers resolve (without --force) on a rotation whose retire
// failed: it retires now; if that fails again it refuses, since closing the
// rotation would leave the old version valid on the target.
func (e *Engine) resolveRetire(ctx context.Context, id string, r *store.Rotation) (*store.Rotation, error) {
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", id, err)
	}
	j, err := e.load(ctx, claimed)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", id, err)
	}
	if err = e.retire(ctx, j); err == nil {
		return j.r, nil
	}
	// Leave it parked as it was (the scheduler keeps probing), lease released.
	_ = e.advance(ctx, j, StepNeedsAttention, func(_ store.Tx, r *store.Rotation) error {
		r.LeaseUntil = e.now()
		return nil
	})
	return nil, fmt.Errorf("resolve %s: %w: retiring version %d failed again (%v), so it still logs in on the target; resolving now would leave it valid. "+
		"The scheduler retires it once the target answers (or run `nebula-credential rotations retry %s`); to close the rotation anyway, leaving version %d valid until you revoke it by hand: `nebula-credential rotations resolve %s --keep %d --force`",
		id, ErrWrongStep, r.FromVersion, err, id, r.FromVersion, id, r.ToVersion)
}

// StaysValid names the version a forced resolve of r leaves valid on the
// target (its retire failed), or 0.
func StaysValid(r *store.Rotation) int {
	if d := decodeData(r); r.Step == StepResolved && d.FailedStep == StepGrace && !d.RetiredAgain {
		return r.FromVersion
	}
	return 0
}

// InProgress is the error for a request refused because open is in
// progress: it wraps store.ErrRotationInProgress and names the command that
// moves it on.
func InProgress(open *store.Rotation) error { return inProgress(open) }

func checkDetail(cs []Check, label string) string {
	for _, c := range cs {
		if c.Label == label {
			return c.Detail
		}
	}
	return ""
}
