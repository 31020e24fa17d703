package rotation

import (
	"context"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// A rotation parked in needs_attention because its target did not answer
// (class transient) heals itself: the scheduler looks at the target again
// every Config.HealInterval, and once it answers finishes the step: it retires
// again after a failed retire, promotes the new version when it logs in, and
// otherwise reverts. Only a definite failure waits for a person.

// healDue is when a parked transient rotation is looked at again.
func (e *Engine) healDue(now time.Time) time.Time { return now.Add(e.cfg.HealInterval) }

// heal probes the target of a parked transient rotation. It reports true when
// the target answered and j moved to the step that finishes it (the run loop
// continues), false when it stays parked until the next probe.
func (e *Engine) heal(ctx context.Context, j *job) (bool, error) {
	if err := e.ensurePending(ctx, j); err != nil {
		return false, err
	}
	probe := j.from
	if j.d.FailedStep == StepGrace {
		probe = j.to
	}
	sctx, cancel := e.stepCtx(ctx)
	_, perr := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: probe, Resolver: e.resolver(j.r.CredentialID)})
	cancel()
	now := e.now()
	if perr != nil && unreachable(perr) {
		// Still away: look again later.
		err := e.advance(ctx, j, StepNeedsAttention, func(_ store.Tx, r *store.Rotation) error {
			r.DueAt, r.LeaseUntil = e.healDue(now), now
			return nil
		})
		return false, err
	}
	step := StepRollingBack
	switch {
	case j.d.FailedStep == StepGrace:
		step = StepGrace // retire again: that is what revokes the old secret
	case j.r.ToVersion > 0 && !j.d.nothingApplied():
		// Promote the new version if it logs in (the apply took effect).
		sctx, cancel := e.stepCtx(ctx)
		_, verr := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: j.to, Resolver: e.resolver(j.r.CredentialID)})
		cancel()
		if verr == nil {
			step = StepApplied
		} else if unreachable(verr) {
			return false, e.advance(ctx, j, StepNeedsAttention, func(_ store.Tx, r *store.Rotation) error {
				r.DueAt, r.LeaseUntil = e.healDue(now), now
				return nil
			})
		}
	}
	j.d.Heal = false
	j.d.RevertFailed = false
	e.log.Info("target answers again: finishing parked rotation", "credential", j.r.CredentialID, "rotation", j.r.ID, "step", step)
	return true, e.advance(ctx, j, step, func(_ store.Tx, r *store.Rotation) error {
		r.DueAt, r.Attempt = now, 0
		return nil
	})
}
