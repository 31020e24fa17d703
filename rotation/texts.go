package rotation

import (
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
// failed too.
func revertFailedTitle(r *store.Rotation) string {
	if r.ErrorClass == string(rotator.ClassTransient) {
		return fmt.Sprintf("rotation %d: the target did not answer, so the new version could be neither finished nor rolled back", r.ID)
	}
	return fmt.Sprintf("rotation %d: the new version failed and the rollback failed too", r.ID)
}
