package rotation

import (
	"context"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// earlyCommit reports whether rotation j serves the new version as soon as
// the target accepted it. For in_place the old secret stops working at
// apply, so every moment between apply and commit is a moment consumers fail
// with the version they are served. With validation and automatic rollback
// on, such a rotation commits right after apply and verifies afterwards; a
// failed verify reverts the target, moves current back and tells consumers
// (a current_changed event), so no working credential is lost: both versions
// stay stored throughout. Without automatic rollback the usual order
// (verify, then commit) stays, so that a person never finds an unverified
// version current.
func earlyCommit(j *job) bool {
	return j.r.Kind == KindRotate && j.r.Strategy == string(rotator.InPlace) && j.d.Validate && j.d.AutoRollback
}

// commitEarly commits an applied in_place rotation before its verify and
// tells in-process consumers at once.
func (e *Engine) commitEarly(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	j.d.VerifyPending = true
	if err := e.commit(ctx, j); err != nil {
		return err
	}
	e.emit(Event{Kind: EventCurrentChanged, CredentialID: j.r.CredentialID, Version: j.r.ToVersion, RotationID: j.r.ID, Detail: "applied"})
	return nil
}

// verifyCommitted runs the verify of an early-committed rotation. A failure
// is reported as a failure at applied, so that fail() retries or reverts
// exactly as for a verify before commit.
func (e *Engine) verifyCommitted(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	if _, err := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: j.to, Resolver: e.resolver(j.r.CredentialID)}); err != nil {
		return stepError(StepApplied, err)
	}
	j.d.VerifyPending = false
	return e.advance(ctx, j, StepCommitted, nil)
}

// restoreCurrent moves current back to r.FromVersion when an early commit
// had moved it to r.ToVersion (a revert after a failed verify). It reports
// whether it moved.
func restoreCurrent(ctx context.Context, tx store.Tx, r *store.Rotation, now time.Time) (bool, error) {
	if r.ToVersion == 0 {
		return false, nil
	}
	labels, err := tx.Labels(ctx, r.CredentialID)
	if err != nil {
		return false, err
	}
	if labels["current"] != r.ToVersion {
		return false, nil
	}
	if err := tx.SetLabel(ctx, r.CredentialID, "current", r.FromVersion); err != nil {
		return false, err
	}
	if err := tx.SetLabel(ctx, r.CredentialID, "previous", 0); err != nil {
		return false, err
	}
	r.GraceEndsAt = nil
	return true, AppendEvent(ctx, tx, now, EventCurrentChanged, r.CredentialID, r.FromVersion, map[string]any{"reverted_from": r.ToVersion})
}
