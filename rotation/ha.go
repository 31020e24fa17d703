package rotation

import (
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
