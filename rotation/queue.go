package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
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

// QueuedError: a rotation queued behind a grace period (RotateOptions.Wait)
// whose caller stopped waiting (interrupted, or its deadline passed). The
// rotation stays queued: the scheduler runs it when the grace ends.
type QueuedError struct {
	InGraceError
	Err error // why the wait stopped
}

func (e *QueuedError) Error() string {
	id := e.CredentialID
	return fmt.Sprintf("rotate %s: stopped waiting (%v); the rotation stays queued: the scheduler (`nebula-credential serve`) runs it when the grace of version %d ends at %s. Follow it: `nebula-credential rotations %s`; wait again before the grace ends: `nebula-credential rotate %s --wait`; drop it: `nebula-credential policy set %s` (recomputes the next rotation from the policy)",
		id, e.Err, e.Version, e.GraceEndsAt.Format(time.RFC3339), id, id, id)
}

func (e *QueuedError) Unwrap() []error { return []error{store.ErrRotationInProgress, e.Err} }

// queueAfterGrace queues a rotation of id behind its running grace period,
// durably: the credential's next due time becomes the grace end (unless it
// is earlier already), audited as rotate.queued. It returns the grace
// (nil, writing nothing, when no rotation is in grace), or an *InGraceError
// without writing when ctx's deadline comes before the grace end.
func (e *Engine) queueAfterGrace(ctx context.Context, id string, opts RotateOptions) (*InGraceError, error) {
	var ig *InGraceError
	err := e.st.Update(ctx, func(tx store.Tx) error {
		ig = nil
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		open, err := tx.OpenRotation(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if ig = inGrace(open); ig == nil {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && ig.GraceEndsAt.After(dl) {
			dl = dl.UTC()
			ig.Deadline = &dl
			return fmt.Errorf("rotate %s: %w", id, ig)
		}
		if c.NextDueAt == nil || c.NextDueAt.After(ig.GraceEndsAt) {
			t := ig.GraceEndsAt
			c.NextDueAt = &t
			if err := tx.PutCredential(ctx, c); err != nil {
				return err
			}
		}
		actor := opts.Actor
		if actor == "" {
			actor, _ = audit.ActorOf(ctx)
		}
		detail := fmt.Sprintf("runs when the grace of rotation %d (version %d) ends at %s", open.ID, ig.Version, ig.GraceEndsAt.Format(time.RFC3339))
		if opts.Reason != "" {
			detail += "; reason: " + opts.Reason
		}
		return audit.Append(ctx, tx, audit.Entry{At: e.now(), Actor: actor, Action: "rotate.queued", CredentialID: id, FromVersion: open.ToVersion, Outcome: "ok", Detail: detail})
	})
	if err != nil {
		return nil, err
	}
	return ig, nil
}

// followQueued follows the rotation another process started after the
// grace q ended, until it reaches grace or closes, and returns it.
func (e *Engine) followQueued(ctx context.Context, id string, q *InGraceError) (*store.Rotation, error) {
	for {
		var r *store.Rotation
		err := e.st.View(ctx, func(tx store.Tx) error {
			rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: id, Limit: 1})
			if err == nil && len(rs) > 0 {
				r = &rs[0]
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if r != nil && r.ID != q.RotationID && (!r.Open || r.Step == StepGrace || r.Step == StepNeedsAttention || r.Step == StepReauthRequired) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, &QueuedError{InGraceError: *q, Err: ctx.Err()}
		case <-time.After(e.cfg.TickInterval):
		}
	}
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
