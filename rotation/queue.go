package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// InGraceError is the refusal of a rotation asked for while the previous
// one is in its grace period. It wraps store.ErrRotationInProgress. The
// caller may retry after GraceEndsAt, ask again with RotateOptions.Wait (the
// rotation then waits for the grace end and runs), end the grace at once
// (EndGrace), or rotate as an emergency (RotateNow).
type InGraceError struct {
	CredentialID string
	RotationID   int64
	Version      int       // the previous version, valid until GraceEndsAt
	GraceEndsAt  time.Time // when a new rotation can run
	// Deadline is set when the caller asked to wait but its context ends
	// before the grace does.
	Deadline *time.Time
}

func (e *InGraceError) Error() string {
	s := fmt.Sprintf("%v: version %d is in its grace period until %s", store.ErrRotationInProgress, e.Version, e.GraceEndsAt.Format(time.RFC3339))
	if e.Deadline != nil {
		s += fmt.Sprintf(", after this request's deadline (%s)", e.Deadline.Format(time.RFC3339))
	}
	return s + fmt.Sprintf("; wait for it (`nebula-credential rotate %s --wait`), end it now (`nebula-credential grace end %s`), rotate as an emergency (`nebula-credential rotate %s --now`), or roll back (`nebula-credential rollback %s`)",
		e.CredentialID, e.CredentialID, e.CredentialID, e.CredentialID)
}

func (e *InGraceError) Unwrap() error { return store.ErrRotationInProgress }

// inGrace returns the InGraceError for an open rotation in grace, or nil.
func inGrace(open *store.Rotation) *InGraceError {
	if (open.Step != StepGrace && open.Step != StepCommitted) || open.GraceEndsAt == nil || decodeData(open).Rollback {
		return nil
	}
	return &InGraceError{CredentialID: open.CredentialID, RotationID: open.ID, Version: open.FromVersion, GraceEndsAt: *open.GraceEndsAt}
}

// waitGrace blocks while the open rotation of id is in its grace period, and
// when the grace ends retires the previous version here (unless another
// process, such as the scheduler, does it first). It returns nil when no
// rotation is in grace any more (plan then reports any other open rotation),
// and an *InGraceError at once when ctx ends before the grace does. It polls
// the store every TickInterval, so that an injected clock works.
func (e *Engine) waitGrace(ctx context.Context, id string) error {
	for {
		open, err := e.openRotation(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ig := inGrace(open)
		if ig == nil {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && ig.GraceEndsAt.After(dl) {
			dl = dl.UTC()
			ig.Deadline = &dl
			return fmt.Errorf("rotate %s: %w", id, ig)
		}
		if open.Step == StepGrace && !open.DueAt.After(e.now()) && !open.LeaseUntil.After(e.now()) {
			if claimed, err := e.claim(ctx, open); err == nil {
				if _, err := e.drive(ctx, claimed, false); err != nil && !isExpectedEnd(err) && !errors.Is(err, store.ErrRotationInProgress) {
					return err
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rotate %s: waiting for the grace period to end: %w", id, ctx.Err())
		case <-time.After(e.cfg.TickInterval):
		}
	}
}

// NextShown is the next rotation time to show for a credential whose stored
// due time is next and whose open rotation (nil if none) is open: never a
// time in the past. A due time that falls in a running grace period shows
// the grace end (a rotation cannot start before); one already passed shows
// now (the scheduler runs it on its next tick).
func NextShown(next *time.Time, open *store.Rotation, now time.Time) *time.Time {
	if next == nil {
		return nil
	}
	t := *next
	if open != nil && open.GraceEndsAt != nil && (open.Step == StepGrace || open.Step == StepCommitted) && open.GraceEndsAt.After(t) {
		t = *open.GraceEndsAt
	}
	if t.Before(now) {
		t = now
	}
	return &t
}
