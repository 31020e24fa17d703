package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Several servers on one store (issue 14) all run the scheduler. Each due
// rotation is taken by exactly one of them: planning checks, in the same
// serializable transaction that creates the journal row, that the credential
// is still due at the time the scheduler saw (RotateOptions.IfDueAt), and the
// store allows one open rotation per credential. Retire jobs and unfinished
// steps are taken with ClaimRotation, a conditional update that bumps the
// fence, so a paused old owner's next journal write fails with
// store.ErrFenced.

// ErrNotDue: a scheduled rotation was skipped because the credential is no
// longer due at the time the scheduler saw; another server rotated it.
var ErrNotDue = errors.New("no longer due")

// checkDue returns ErrNotDue unless c is still due at want (nil: no check).
func checkDue(c *store.Credential, want *time.Time) error {
	if want == nil {
		return nil
	}
	if c.NextDueAt == nil || !c.NextDueAt.Equal(*want) {
		return fmt.Errorf("%w: %s was due at %s; another scheduler has rotated it", ErrNotDue, c.ID, want.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// scheduledReason is the journal reason of a scheduled rotation: it names the
// due time, so the journal shows that no due time was rotated twice.
func scheduledReason(due *time.Time) string {
	if due == nil {
		return "policy"
	}
	return "policy: due " + due.UTC().Format(time.RFC3339Nano)
}

// keepLease renews the lease of rotation id, fenced by fence, every
// LeaseTTL/3 while the returned context is live, so a step that runs longer
// than the lease (a slow provider call under a long StepTimeout) is not taken
// over while this process is alive. The lease is renewed only while this
// process still holds it: a lease released on purpose (grace, a scheduled
// retry) or a closed rotation ends the renewals quietly. If another process
// has taken the rotation over (its fence moved: this process was paused past
// the lease), the context is cancelled, so the step in flight stops; its
// journal write would be refused (store.ErrFenced) anyway. Call stop when the
// work is done.
func (e *Engine) keepLease(ctx context.Context, id, fence int64) (context.Context, context.CancelFunc) {
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := e.cfg.LeaseTTL / 3
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			lost, stop, err := e.renewLease(lctx, id, fence)
			switch {
			case lost != nil:
				e.log.Warn("rotation lease lost to another process: stopping the step", "rotation", id, "err", lost)
				cancel(lost)
				return
			case stop:
				return
			case err != nil && lctx.Err() == nil:
				e.log.Warn("renewing rotation lease", "rotation", id, "err", err)
			}
		}
	}()
	return lctx, func() {
		cancel(context.Canceled)
		<-done
	}
}

// renewLease extends the lease of rotation id if nobody claimed it since this
// process did (its fence is still fence) and the lease has not been released. lost is set when another process took it over; stop when there
// is nothing left to renew.
func (e *Engine) renewLease(ctx context.Context, id, fence int64) (lost error, stop bool, err error) {
	err = e.st.Update(ctx, func(tx store.Tx) error {
		lost, stop = nil, false
		r, err := tx.GetRotation(ctx, id)
		if err != nil {
			return err
		}
		now := e.now()
		switch {
		case r.Fence != fence: // only ClaimRotation moves the fence
			lost = fmt.Errorf("rotation %d: %w (fence %d is now %d, owner %q)", id, store.ErrFenced, fence, r.Fence, r.LeaseOwner)
			return nil
		case !r.Open || !r.LeaseUntil.After(now):
			stop = true // finished, or released on purpose
			return nil
		}
		r.LeaseUntil = now.Add(e.cfg.LeaseTTL)
		return tx.UpdateRotation(ctx, r)
	})
	if errors.Is(err, store.ErrFenced) {
		return err, false, nil
	}
	return lost, stop, err
}
