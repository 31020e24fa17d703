package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

// ErrGraceMinimum: ending grace early was asked before the minimum grace
// since the commit had passed.
var ErrGraceMinimum = errors.New("the minimum grace period has not passed")

// EndGraceRequest asks to end a rotation's grace period before its deadline
// because every consumer of the credential confirmed the new version.
type EndGraceRequest struct {
	// Version is the version the consumers confirmed: grace ends only if the
	// open rotation moved current to it.
	Version int
	// MinGrace is how long after the commit grace lasts at least.
	MinGrace time.Duration
	// Detail says why (e.g. "3 consumers confirmed version 5"); never secret.
	Detail string
	// Action is the audit action recorded (default "grace.end_early").
	Action string
}

// CommittedAt is when the rotation r moved current (nil before its commit or
// for rows written before the time was recorded).
func CommittedAt(r *store.Rotation) *time.Time { return decodeData(r).CommittedAt }

// EndGraceEarly retires the previous version of credential id now instead of
// at the end of its grace period. The grace deadline stays the upper bound:
// this only ever moves the retirement earlier, never later, and never before
// req.MinGrace after the commit (ErrGraceMinimum). It fails with
// store.ErrNotFound when no rotation is open and ErrWrongStep when the open
// rotation is not in grace or did not move current to req.Version; callers
// that act on consumer reports treat both as "nothing to do". Retiring runs
// through the same journaled step as at the deadline: a crash half-way is
// resumed by the scheduler.
func (e *Engine) EndGraceEarly(ctx context.Context, id string, req EndGraceRequest) (*store.Rotation, error) {
	r, err := e.openRotation(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("end grace of %s: %w", id, err)
	}
	if err := e.checkEarly(r, req); err != nil {
		return r, fmt.Errorf("end grace of %s: %w", id, err)
	}
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return r, fmt.Errorf("end grace of %s: %w", id, err)
	}
	j, err := e.load(ctx, claimed)
	if err != nil {
		return claimed, err
	}
	if err := e.checkEarly(j.r, req); err != nil { // it may have moved before the claim
		// Give the lease back so that the retire job is not held up.
		_ = e.advance(ctx, j, j.r.Step, func(_ store.Tx, r *store.Rotation) error {
			r.LeaseUntil = e.now()
			return nil
		})
		return j.r, fmt.Errorf("end grace of %s: %w", id, err)
	}
	now := e.now()
	action := req.Action
	if action == "" {
		action = "grace.end_early"
	}
	if j.r.GraceEndsAt.After(now) {
		if err := e.advance(ctx, j, StepGrace, func(tx store.Tx, r *store.Rotation) error {
			r.GraceEndsAt, r.DueAt = &now, now
			return audit.Append(ctx, tx, audit.Entry{At: now, Action: action, CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok", Detail: req.Detail})
		}); err != nil {
			return j.r, err
		}
	}
	return e.drive(ctx, j.r, false)
}

func (e *Engine) checkEarly(r *store.Rotation, req EndGraceRequest) error {
	if r.Step != StepGrace || r.GraceEndsAt == nil {
		return fmt.Errorf("%w: rotation %d is at step %s, not in grace", ErrWrongStep, r.ID, r.Step)
	}
	if r.ToVersion != req.Version {
		return fmt.Errorf("%w: rotation %d moved current to version %d, not %d", ErrWrongStep, r.ID, r.ToVersion, req.Version)
	}
	if at := CommittedAt(r); at != nil && e.now().Before(at.Add(req.MinGrace)) {
		return fmt.Errorf("%w: grace lasts at least until %s", ErrGraceMinimum, at.Add(req.MinGrace).Format(time.RFC3339Nano))
	}
	return nil
}
