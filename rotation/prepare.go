package rotation

import (
	"context"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// preparation is a rotator's Prepare of one pending version, running on a
// goroutine of its own beside the durable commit that stores that version
// (see rotator.Preparer).
type preparation struct {
	version int
	done    chan struct{}
	v       any
}

// startPrepare starts rot's Prepare of pending when rot is a
// rotator.Preparer and a slot is free; nil otherwise (Apply then does the
// work itself). The slots (half the CPUs, at least one) keep Prepares from
// taking the CPU the store's writer needs to finish the very commits they
// wait beside, when many rotations plan at once: overlapping only pays with
// a CPU to spare.
func (e *Engine) startPrepare(rot rotator.Rotator, pending rotator.Credential) *preparation {
	p, ok := rotator.Unwrap(rot).(rotator.Preparer)
	if !ok {
		return nil
	}
	select {
	case e.prepSlots <- struct{}{}:
	default:
		return nil
	}
	pr := &preparation{version: pending.Version, done: make(chan struct{})}
	go func() {
		defer func() { <-e.prepSlots }()
		defer close(pr.done)
		// Prepare is only a head start: a panic in it leaves the work to
		// Apply (pr.v stays nil) rather than ending the process. Its value
		// is not logged: it may hold the pending secret.
		defer func() { _ = recover() }()
		pr.v = p.Prepare(pending)
	}()
	return pr
}

// prepared returns what Prepare made for j's pending version, waiting for it
// at most until ctx ends, and forgets it: only the first Apply of a freshly
// staged version uses it. nil when there is none.
func (j *job) prepared(ctx context.Context) any {
	pr := j.prep
	j.prep = nil
	if pr == nil || pr.version != j.to.Version {
		return nil
	}
	select {
	case <-pr.done:
		return pr.v
	case <-ctx.Done():
		return nil
	}
}
