package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/vault"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// maxRegenerations bounds how often a secret the target rejects is regenerated.
const maxRegenerations = 3

// job is what a step needs: the rotation, its rotator and decrypted versions.
type job struct {
	r        *store.Rotation
	d        data
	typ      string
	settings Settings
	rot      rotator.Rotator
	from     rotator.Credential
	to       rotator.Credential // zero until staged
	// applyUnjournaled: apply succeeded and its step is left to the commit's
	// write (foldApplied); the row is still at staged.
	applyUnjournaled bool
	// prep is the rotator's Prepare of the pending version, started when the
	// planning transaction generated it; nil when there is none.
	prep *preparation
}

func toRotator(v vault.Version) rotator.Credential {
	return rotator.Credential{ID: v.CredentialID, Type: v.Type, Version: v.Number, Fields: v.Fields, Secret: v.Secret, ExpiresAt: v.ExpiresAt}
}

func (e *Engine) load(ctx context.Context, r *store.Rotation) (*job, error) {
	var (
		c        *store.Credential
		from, to *store.Version
	)
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		if c, err = tx.GetCredential(ctx, r.CredentialID); err != nil {
			return err
		}
		if from, err = tx.GetVersion(ctx, r.CredentialID, r.FromVersion); err != nil {
			return fmt.Errorf("version %d: %w", r.FromVersion, err)
		}
		if r.ToVersion > 0 {
			if to, err = tx.GetVersion(ctx, r.CredentialID, r.ToVersion); err != nil {
				return fmt.Errorf("version %d: %w", r.ToVersion, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	j := &job{r: r, d: decodeData(r), typ: c.Type}
	if j.settings, err = ParseSettings(c.Settings); err != nil {
		return nil, err
	}
	if j.rot, err = e.reg.Lookup(c.Type); err != nil {
		return nil, err
	}
	fv, err := e.vault.Open(c.Type, from)
	if err != nil {
		return nil, err
	}
	j.from = toRotator(fv)
	if to != nil {
		tv, err := e.vault.Open(c.Type, to)
		if err != nil {
			return nil, err
		}
		j.to = toRotator(tv)
	}
	return j, nil
}

// relaxedStep names the journal steps written without waiting for the disk:
// applied and verified (recovery re-runs the idempotent apply or verify), and
// the move from committed to grace (it only releases the lease).
//
// The plan (the pending version, stored before the target changes) and the
// commit stay durable. Recovery could redo a lost commit from staged, but the
// commit is what the world is told: Rotate returns, in-process subscribers
// and watch streams get current_changed, other instances serve the new
// version. A commit lost to an OS crash would take back what was reported:
// on SQLite the next event would reuse its watch sequence number (MAX(seq)+1)
// and a watcher resuming after that number would never see it; a recovery
// that cannot verify again would roll back a version callers were told is
// current; and PostgreSQL's synchronous_commit=off also skips the wait for
// synchronous standbys. TestJournalWritesDurability pins this.
var relaxedStep = map[string]bool{StepApplied: true, StepVerified: true, StepGrace: true}

// advance persists r at step (fenced), running mutate in the same transaction.
// On success it updates *r.
func (e *Engine) advance(ctx context.Context, j *job, step string, mutate func(tx store.Tx, r *store.Rotation) error) error {
	now := e.now()
	var next store.Rotation
	prev := j.r.Step
	update := e.st.Update
	if relaxedStep[step] && step != StepGrace || step == StepGrace && j.r.Step == StepCommitted {
		// Recovery recomputes these: losing one to a power failure only
		// repeats an idempotent step. The next durable commit flushes them.
		if ru, ok := e.st.(store.RelaxedUpdater); ok {
			update = ru.UpdateRelaxed
		}
	}
	err := update(ctx, func(tx store.Tx) error {
		next = *j.r
		next.Data = append([]byte(nil), j.r.Data...)
		next.Step = step
		next.UpdatedAt = now
		next.LeaseUntil = now.Add(e.cfg.LeaseTTL)
		d := j.d
		if step != prev {
			next.Attempt = 0
			d.TransientSince = nil // a new step gets its own budget
		}
		encodeData(&next, d)
		if mutate != nil {
			if err := mutate(tx, &next); err != nil {
				return err
			}
		}
		if err := tx.UpdateRotation(ctx, &next); err != nil {
			return err
		}
		if step == prev {
			return nil
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: next.Kind + "." + step, CredentialID: next.CredentialID, FromVersion: next.FromVersion, ToVersion: next.ToVersion, Outcome: "ok"})
	})
	if err != nil {
		return fmt.Errorf("journal %s: %w", step, err)
	}
	*j.r = next
	j.d = decodeData(j.r)
	if step == StepGrace && (prev == StepApplied || prev == StepVerified || prev == StepStaged) {
		e.hook(j.r.CredentialID, StepCommitted) // folded into this write (commit)
	}
	e.hook(j.r.CredentialID, step)
	return nil
}

func (e *Engine) stepCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(rotator.WithFirstProbe(ctx, e.cfg.ProbeTimeout), e.cfg.StepTimeout)
}

// resolver returns the resolver for rotating credential from: it gives only
// the admin credentials from names, and only while the binding rule allows it
// (Recheck).
func (e *Engine) resolver(from string) rotator.Resolver { return resolver{e, from} }

type resolver struct {
	e    *Engine
	from string
}

func (rv resolver) Resolve(ctx context.Context, id string) (rotator.Credential, error) {
	var admin *currentState
	err := rv.e.st.View(ctx, func(tx store.Tx) error {
		// The binding rule, checked on the admin's current state as this
		// snapshot holds it; the version handed out is the one checked.
		var err error
		_, admin, err = rv.e.recheck(ctx, tx, rv.from, id)
		if err == nil && admin == nil {
			err = fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		return err
	})
	var be *BindingError
	if errors.As(err, &be) {
		return rotator.Credential{}, be
	}
	if err != nil {
		return rotator.Credential{}, rotator.Wrap(rotator.ClassConfig, "resolve "+id, err)
	}
	v, err := rv.e.vault.Open(admin.typ, admin.version)
	if err != nil {
		return rotator.Credential{}, rotator.Wrap(rotator.ClassConfig, "resolve "+id, err)
	}
	return toRotator(v), nil
}

// run executes r from its recorded step. It returns when r reaches grace (not
// yet due), closes, needs a person, or a retry is scheduled (ErrRetryScheduled).
func (e *Engine) run(ctx context.Context, r *store.Rotation) (_ *store.Rotation, err error) {
	return e.runJob(ctx, r, nil)
}

// runJob is run starting from pre, the job planJob built for r (nil: load
// it from the store).
func (e *Engine) runJob(ctx context.Context, r *store.Rotation, pre *job) (_ *store.Rotation, err error) {
	ctx, stop := e.keepLease(ctx, r.ID, r.Fence)
	defer func() {
		// A step cut short because another process took the rotation over
		// says so, not just "context canceled".
		if c := context.Cause(ctx); err != nil && errors.Is(c, store.ErrFenced) && !errors.Is(err, store.ErrFenced) {
			err = fmt.Errorf("%w (stopped: %v)", c, err)
		}
		stop()
	}()
	j := pre
	if j == nil || j.r != r {
		if j, err = e.load(ctx, r); err != nil {
			return r, fmt.Errorf("load rotation %d: %w", r.ID, err)
		}
	}
	// A resumed rotation between apply and commit re-applies first (apply is
	// idempotent): a deadline the target enforces on the current secret
	// (PostgreSQL VALID UNTIL) is moved past the new grace end, so a long
	// outage of this process cannot let the current secret expire unnoticed.
	if r.Fence > 1 && (r.Step == StepApplied || r.Step == StepVerified) && r.Kind == KindRotate {
		if err := e.apply(ctx, j); err != nil {
			if ferr := e.fail(ctx, j, err); ferr != nil {
				return j.r, ferr
			}
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return j.r, err
		}
		var stepErr error
		switch j.r.Step {
		case StepPlanned:
			stepErr = e.stage(ctx, j)
		case StepStaged:
			stepErr = e.apply(ctx, j)
		case StepApplied:
			if earlyCommit(j) {
				stepErr = e.commitEarly(ctx, j)
			} else {
				stepErr = e.verify(ctx, j)
			}
		case StepVerified:
			stepErr = e.commit(ctx, j)
		case StepCommitted:
			if j.d.VerifyPending {
				stepErr = e.verifyCommitted(ctx, j)
			} else {
				stepErr = e.enterGrace(ctx, j)
			}
		case StepGrace:
			if j.r.DueAt.After(e.now()) {
				return j.r, nil
			}
			stepErr = e.retire(ctx, j)
		case StepRollingBack:
			if j.d.Rollback {
				stepErr = e.rollbackFromGrace(ctx, j)
			} else {
				stepErr = e.revert(ctx, j)
			}
		case StepRolledBack:
			if j.d.Rollback {
				return j.r, nil
			}
			return j.r, &RotationError{ID: j.r.CredentialID, RotationID: j.r.ID, Step: j.d.FailedStep, RolledBack: true, Err: errors.New(j.r.LastError)}
		case StepNeedsAttention, StepReauthRequired:
			if j.r.Step == StepNeedsAttention && j.d.Heal {
				healed, err := e.heal(ctx, j)
				if err != nil {
					return j.r, err
				}
				if healed {
					continue
				}
			}
			return j.r, &RotationError{ID: j.r.CredentialID, RotationID: j.r.ID, Step: j.d.FailedStep, Err: fmt.Errorf("%s: %s", j.r.Step, j.r.LastError)}
		default: // retired, resolved
			return j.r, nil
		}
		if stepErr != nil {
			if err := e.fail(ctx, j, stepErr); err != nil {
				return j.r, err
			}
		}
	}
}

func (e *Engine) stage(ctx context.Context, j *job) error {
	if j.r.Kind == KindRestore {
		return e.advance(ctx, j, StepStaged, func(tx store.Tx, r *store.Rotation) error {
			return tx.SetLabel(ctx, r.CredentialID, "pending", r.ToVersion)
		})
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	resp, err := j.rot.Stage(sctx, rotator.StageRequest{Current: j.from, Strategy: rotator.Strategy(j.r.Strategy), RotationID: j.r.ID,
		IdempotencyKey: fmt.Sprintf("%s-%d", e.cfg.StoreID, j.r.ID), Resolver: e.resolver(j.r.CredentialID)})
	if err != nil {
		return stepError(StepPlanned, err)
	}
	if len(resp.Secret) == 0 {
		return stepError(StepPlanned, rotator.Errorf(rotator.ClassConfig, "stage", "rotator returned no secret"))
	}
	now := e.now()
	if err := e.advance(ctx, j, StepStaged, func(tx store.Tx, r *store.Rotation) error {
		n, err := tx.MaxVersion(ctx, r.CredentialID)
		if err != nil {
			return err
		}
		n++
		fv := vault.Version{CredentialID: j.from.ID, Type: j.typ, Number: j.from.Version, Fields: j.from.Fields}
		sv, err := e.vault.Seal(fv.Next(n, resp.Fields, resp.Secret, resp.ExpiresAt, now))
		if err != nil {
			return err
		}
		if err := tx.InsertVersion(ctx, sv); err != nil {
			return err
		}
		r.ToVersion = n
		return tx.SetLabel(ctx, r.CredentialID, "pending", n)
	}); err != nil {
		return err
	}
	// A minting stage interrupted earlier (a crash, or a create whose response
	// was lost) may have left a live secret the store never recorded. Now that
	// the pending version is stored, revoke every minted secret but current and
	// pending. Best effort: retire sweeps again.
	if j.r.Fence > 1 || j.r.Attempt > 0 || j.d.Regenerated > 0 {
		if err := e.ensurePending(ctx, j); err == nil {
			e.cleanup(ctx, j, j.from, j.to)
		}
	}
	return nil
}

// cleanup asks a minting rotator to revoke orphans, keeping the given versions.
// Failures are logged, not fatal: an orphan costs nothing until it is used.
func (e *Engine) cleanup(ctx context.Context, j *job, keep ...rotator.Credential) {
	if !j.rot.Capabilities().Mints {
		return
	}
	c, ok := j.rot.(rotator.Cleaner) // the registry's sanitizing wrapper forwards it
	if !ok {
		return
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	resp, err := c.Cleanup(sctx, rotator.CleanupRequest{Current: keep[len(keep)-1], Keep: keep, Resolver: e.resolver(j.r.CredentialID)})
	if err != nil {
		e.log.Warn("revoking orphaned secrets", "credential", j.r.CredentialID, "rotation", j.r.ID, "err", err)
		return
	}
	if resp.Revoked > 0 {
		e.log.Info("revoked orphaned secrets", "credential", j.r.CredentialID, "rotation", j.r.ID, "revoked", resp.Revoked)
	}
}

// afterStage reloads the pending version into j.to after stage.
func (e *Engine) ensurePending(ctx context.Context, j *job) error {
	if j.to.Version == j.r.ToVersion && j.to.Secret != nil {
		return nil
	}
	nj, err := e.load(ctx, j.r)
	if err != nil {
		return err
	}
	j.to = nj.to
	return nil
}

func (e *Engine) plannedGraceEnd(j *job) time.Time {
	// The target's own deadline (PostgreSQL VALID UNTIL) gets a margin so it never
	// ends before our retire job runs.
	return e.now().Add(time.Duration(j.d.GraceSeconds*float64(time.Second)) + 2*e.cfg.StepTimeout)
}

func (e *Engine) apply(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	first := j.r.Fence == 1 && j.r.Attempt == 0 && j.r.Step == StepStaged && j.r.Kind == KindRotate
	_, err := j.rot.Apply(sctx, rotator.ApplyRequest{Current: j.from, Pending: j.to, Strategy: rotator.Strategy(j.r.Strategy), GraceEndsAt: e.plannedGraceEnd(j), Resolver: e.resolver(j.r.CredentialID), FirstAttempt: first, Prepared: j.prepared(sctx)})
	j.d.noteApply(err)
	if err != nil {
		return stepError(StepStaged, err)
	}
	if foldApplied(j) {
		// The applied step is not journaled on its own on the way to a
		// verified commit: the commit records it (its audit entry is written
		// in the commit's transaction), which saves a store write per
		// rotation. A crash before the commit leaves the row at staged, the
		// state a lost relaxed applied write always could leave: recovery
		// applies again (Apply is idempotent and, not being the first
		// attempt, checks whether the pending secret already works) and
		// verifies. If verify fails, the applied step is journaled first
		// (appliedLate) and the failure is handled as before.
		j.applyUnjournaled = true
		e.hook(j.r.CredentialID, StepApplied)
		err := e.verify(ctx, j)
		if err != nil {
			if lerr := e.appliedLate(ctx, j); lerr != nil {
				return lerr
			}
		}
		return err
	}
	return e.advance(ctx, j, StepApplied, nil)
}

// foldApplied reports whether a successful apply goes straight on to verify
// and commit without its own journal write: a rotation (not a restore) of a
// rotator that mints nothing, not committed early (in_place with rollback).
func foldApplied(j *job) bool {
	return j.r.Kind == KindRotate && j.r.Step == StepStaged && !earlyCommit(j) && !j.rot.Capabilities().Mints
}

// appliedLate journals the applied step that apply left to the commit, when
// the commit will not happen (verify failed, or the commit's write did):
// failure handling starts from the step it always started from.
func (e *Engine) appliedLate(ctx context.Context, j *job) error {
	if !j.applyUnjournaled || j.r.Step != StepStaged {
		j.applyUnjournaled = false
		return nil
	}
	j.applyUnjournaled = false
	return e.advance(ctx, j, StepApplied, nil)
}

func (e *Engine) verify(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	if j.d.Validate {
		sctx, cancel := e.stepCtx(ctx)
		defer cancel()
		if _, err := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: j.to, Resolver: e.resolver(j.r.CredentialID)}); err != nil {
			return stepError(StepApplied, err)
		}
	}
	// The verified step is not journaled on its own: the commit that follows
	// at once records it (its audit entry is written in the commit's
	// transaction), which saves a store write per rotation. A crash in
	// between leaves the row at applied, and recovery verifies again (Verify
	// changes nothing). A row found at verified (older journals) still
	// commits from there.
	e.hook(j.r.CredentialID, StepVerified)
	return e.commit(ctx, j)
}

func (e *Engine) commit(ctx context.Context, j *job) error {
	now := e.now()
	grace := time.Duration(j.d.GraceSeconds * float64(time.Second))
	end := now.Add(grace)
	j.d.CommittedAt = &now
	// A commit verified before it (every one but an early in_place commit)
	// enters grace in the same durable transaction: the committed step only
	// released the lease in a second write. Both audit entries are written;
	// the durable current_changed event (the outbox) is in this transaction,
	// and in-process watchers hear of it right after (enterGraceFolded).
	fold := !j.d.VerifyPending
	step := StepCommitted
	if fold {
		step = StepGrace
	}
	err := e.advance(ctx, j, step, func(tx store.Tx, r *store.Rotation) error {
		id := r.CredentialID
		if fold {
			if err := audit.Append(ctx, tx, audit.Entry{At: now, Action: r.Kind + "." + StepCommitted, CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok"}); err != nil {
				return err
			}
			// Release the lease: the retire job belongs to whichever
			// scheduler runs when grace ends.
			r.LeaseUntil = now
		}
		if j.r.Step == StepStaged && j.applyUnjournaled { // apply() folded its step into this commit
			if err := audit.Append(ctx, tx, audit.Entry{At: now, Action: r.Kind + "." + StepApplied, CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok"}); err != nil {
				return err
			}
		}
		if (j.r.Step == StepApplied || j.r.Step == StepStaged && j.applyUnjournaled) && !j.d.VerifyPending { // verify() folded its step into this commit
			if err := audit.Append(ctx, tx, audit.Entry{At: now, Action: r.Kind + "." + StepVerified, CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok"}); err != nil {
				return err
			}
		}
		if err := tx.SetLabel(ctx, id, "current", r.ToVersion); err != nil {
			return err
		}
		if err := tx.SetLabel(ctx, id, "previous", r.FromVersion); err != nil {
			return err
		}
		if err := tx.SetLabel(ctx, id, "pending", 0); err != nil {
			return err
		}
		r.GraceEndsAt, r.DueAt = &end, end
		r.ErrorClass, r.LastError = "", "" // earlier failures were retried away
		if err := e.reschedule(ctx, tx, id, now, j.to.ExpiresAt); err != nil {
			return err
		}
		if err := tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: r.Kind, Actor: r.Actor, Reason: r.Reason, FromVersion: r.FromVersion, ToVersion: r.ToVersion, RotationID: r.ID, Outcome: "committed", Detail: "grace until " + end.Format(time.RFC3339), DurationMS: now.Sub(r.StartedAt).Milliseconds()}); err != nil {
			return err
		}
		if err := AppendEvent(ctx, tx, now, EventCurrentChanged, id, r.ToVersion, map[string]any{"previous": r.FromVersion, "grace_ends_at": end}); err != nil {
			return err
		}
		return Prune(ctx, tx, id, j.settings.RetentionOrDefault())
	})
	if err != nil {
		return err
	}
	j.applyUnjournaled = false
	if fold {
		e.emit(Event{Kind: EventCurrentChanged, CredentialID: j.r.CredentialID, Version: j.r.ToVersion, RotationID: j.r.ID})
	}
	return nil
}

// reschedule recomputes the credential's next due time after current moved.
func (e *Engine) reschedule(ctx context.Context, tx store.Tx, id string, rotatedAt time.Time, expires *time.Time) error {
	c, err := tx.GetCredential(ctx, id)
	if err != nil {
		return err
	}
	s, err := ParseSettings(c.Settings)
	if err != nil {
		return err
	}
	c.NextDueAt = s.NextDue(DueInput{ID: id, LastRotatedAt: rotatedAt, CreatedAt: rotatedAt, ExpiresAt: expires, Now: rotatedAt})
	c.UpdatedAt = rotatedAt
	return tx.PutCredential(ctx, c)
}

func (e *Engine) enterGrace(ctx context.Context, j *job) error {
	// Watchers hear about the commit at least once: a crash before this step
	// re-sends the notification on recovery.
	e.emit(Event{Kind: EventCurrentChanged, CredentialID: j.r.CredentialID, Version: j.r.ToVersion, RotationID: j.r.ID})
	return e.advance(ctx, j, StepGrace, func(_ store.Tx, r *store.Rotation) error {
		// Release the lease: the retire job belongs to whichever scheduler runs
		// when grace ends.
		r.LeaseUntil = e.now()
		return nil
	})
}

func (e *Engine) retire(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	if _, err := j.rot.Retire(sctx, rotator.RetireRequest{Old: j.from, Current: j.to, Strategy: rotator.Strategy(j.r.Strategy), Resolver: e.resolver(j.r.CredentialID)}); err != nil {
		return stepError(StepGrace, err)
	}
	if j.r.Fence > 1 || j.r.Attempt > 0 || j.d.Regenerated > 0 {
		e.cleanup(ctx, j, j.to)
	}
	now := e.now()
	err := e.advance(ctx, j, StepRetired, func(tx store.Tx, r *store.Rotation) error {
		r.Open, r.FinishedAt = false, &now
		r.ErrorClass, r.LastError = "", ""
		labels, err := tx.Labels(ctx, r.CredentialID)
		if err != nil {
			return err
		}
		if labels["previous"] == r.FromVersion {
			if err := tx.SetLabel(ctx, r.CredentialID, "previous", 0); err != nil {
				return err
			}
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: r.CredentialID, At: now, Action: "retire", Actor: r.Actor, FromVersion: r.FromVersion, ToVersion: r.ToVersion, RotationID: r.ID, Outcome: "ok", DurationMS: now.Sub(r.StartedAt).Milliseconds()})
	})
	if err == nil {
		e.emit(Event{Kind: EventRetired, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID})
	}
	return err
}

// revert undoes a failed apply/verify and closes the rotation as rolled back.
func (e *Engine) revert(ctx context.Context, j *job) error {
	if j.r.ToVersion > 0 && !j.d.nothingApplied() {
		if err := e.ensurePending(ctx, j); err != nil {
			return err
		}
		sctx, cancel := e.stepCtx(ctx)
		defer cancel()
		if _, err := j.rot.Revert(sctx, rotator.RevertRequest{Current: j.from, Pending: j.to, Strategy: rotator.Strategy(j.r.Strategy), Resolver: e.resolver(j.r.CredentialID)}); err != nil {
			return stepError(StepRollingBack, err)
		}
	}
	now := e.now()
	moved := false
	err := e.advance(ctx, j, StepRolledBack, func(tx store.Tx, r *store.Rotation) error {
		r.Open, r.FinishedAt = false, &now
		if err := tx.SetLabel(ctx, r.CredentialID, "pending", 0); err != nil {
			return err
		}
		var err error
		if moved, err = restoreCurrent(ctx, tx, r, now); err != nil {
			return err
		}
		if err := e.reschedule(ctx, tx, r.CredentialID, now, j.from.ExpiresAt); err != nil {
			return err
		}
		if err := AppendEvent(ctx, tx, now, EventRolledBack, r.CredentialID, r.FromVersion, map[string]any{"failed_step": j.d.FailedStep, "error_class": r.ErrorClass}); err != nil {
			return err
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: r.CredentialID, At: now, Action: r.Kind, Actor: r.Actor, Reason: r.Reason, FromVersion: r.FromVersion, ToVersion: r.ToVersion, RotationID: r.ID, Outcome: "rolled_back", Detail: fmt.Sprintf("%s failed (%s): %s", j.d.FailedStep, r.ErrorClass, r.LastError), DurationMS: now.Sub(r.StartedAt).Milliseconds()})
	})
	if err == nil {
		if moved {
			e.emit(Event{Kind: EventCurrentChanged, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID, Detail: "reverted"})
		}
		e.emit(Event{Kind: EventRolledBack, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID, Detail: j.r.LastError})
	}
	return err
}

// rollbackFromGrace moves current back to the previous version (verified
// first) and retires the newer one.
func (e *Engine) rollbackFromGrace(ctx context.Context, j *job) error {
	if err := e.ensurePending(ctx, j); err != nil {
		return err
	}
	now := e.now()
	labels := map[string]int{}
	if err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		labels, err = tx.Labels(ctx, j.r.CredentialID)
		return err
	}); err != nil {
		return err
	}
	if labels["current"] != j.r.FromVersion {
		sctx, cancel := e.stepCtx(ctx)
		_, err := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: j.from, Resolver: e.resolver(j.r.CredentialID)})
		cancel()
		if err != nil {
			return stepError(StepRollingBack, fmt.Errorf("previous version %d no longer authenticates: %w", j.r.FromVersion, err))
		}
		if err := e.advance(ctx, j, StepRollingBack, func(tx store.Tx, r *store.Rotation) error {
			if err := tx.SetLabel(ctx, r.CredentialID, "current", r.FromVersion); err != nil {
				return err
			}
			if err := tx.SetLabel(ctx, r.CredentialID, "previous", 0); err != nil {
				return err
			}
			return AppendEvent(ctx, tx, now, EventCurrentChanged, r.CredentialID, r.FromVersion, map[string]any{"rollback_from": r.ToVersion})
		}); err != nil {
			return err
		}
		e.emit(Event{Kind: EventCurrentChanged, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID, Detail: "rollback"})
	}
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	if _, err := j.rot.Retire(sctx, rotator.RetireRequest{Old: j.to, Current: j.from, Strategy: rotator.Strategy(j.r.Strategy), Resolver: e.resolver(j.r.CredentialID)}); err != nil {
		return stepError(StepRollingBack, err)
	}
	err := e.advance(ctx, j, StepRolledBack, func(tx store.Tx, r *store.Rotation) error {
		r.Open, r.FinishedAt = false, &now
		if err := e.reschedule(ctx, tx, r.CredentialID, now, j.from.ExpiresAt); err != nil {
			return err
		}
		if err := AppendEvent(ctx, tx, now, EventRolledBack, r.CredentialID, r.FromVersion, nil); err != nil {
			return err
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: r.CredentialID, At: now, Action: "rollback", Actor: r.Actor, Reason: r.Reason, FromVersion: r.ToVersion, ToVersion: r.FromVersion, RotationID: r.ID, Outcome: "ok", DurationMS: now.Sub(r.StartedAt).Milliseconds()})
	})
	if err == nil {
		e.emit(Event{Kind: EventRolledBack, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID})
	}
	return err
}

// stepErr carries the step that failed.
type stepErr struct {
	step string
	err  error
}

func (s *stepErr) Error() string { return s.step + ": " + s.err.Error() }
func (s *stepErr) Unwrap() error { return s.err }

func stepError(step string, err error) error { return &stepErr{step, err} }

// fail handles a step failure: retry with backoff, regenerate a rejected
// secret, roll back, or hand over to a person. It returns nil when the run loop
// should continue, or the error to return.
func (e *Engine) fail(ctx context.Context, j *job, err error) error {
	var se *stepErr
	if !errors.As(err, &se) {
		// Not a rotator error: a store or decrypt failure. Leave the row for the
		// scheduler to retry after a backoff.
		se = &stepErr{step: j.r.Step, err: rotator.Wrap(rotator.ClassTransient, "engine", err)}
		if errors.Is(err, store.ErrFenced) {
			return fmt.Errorf("rotation %d: %w", j.r.ID, err)
		}
	}
	class := rotator.ClassOf(se.err)
	msg := se.err.Error()
	now := e.now()
	e.log.Warn("rotation step failed", "credential", j.r.CredentialID, "rotation", j.r.ID, "step", se.step, "class", class, "attempt", j.r.Attempt+1, "err", msg)

	record := func(r *store.Rotation) {
		r.ErrorClass, r.LastError = string(class), msg
	}
	until, retry := time.Time{}, false
	if rotator.Retryable(se.err) {
		until, retry = e.retryUntil(j, now)
	}
	if retry {
		delay := j.settings.Backoff.Delay(j.r.Attempt+1, e.cfg.Rand)
		delay = max(delay, rotator.RetryAfter(se.err))
		due := now.Add(delay)
		if due.After(until) {
			due = until // one last try as the budget ends
		}
		if werr := e.advance(ctx, j, j.r.Step, func(tx store.Tx, r *store.Rotation) error {
			record(r)
			r.Attempt++
			r.DueAt = due
			r.LeaseUntil = now // free for whoever picks it up at DueAt
			return audit.Append(ctx, tx, audit.Entry{At: now, Action: r.Kind + ".retry_scheduled", CredentialID: r.CredentialID, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "error", Detail: fmt.Sprintf("%s failed (%s), attempt %d, retry at %s, retrying until %s", se.step, class, r.Attempt, due.Format(time.RFC3339), until.Format(time.RFC3339))})
		}); werr != nil {
			return werr
		}
		return fmt.Errorf("%w at %s after %s failed (%s): %s", ErrRetryScheduled, due.Format(time.RFC3339), se.step, class, msg)
	}

	switch {
	case class == rotator.ClassInvalidGrant:
		return e.toAttention(ctx, j, StepReauthRequired, se.step, class, msg,
			fmt.Sprintf("The provider rejected the refresh token (invalid_grant): a person must re-authorise. Close this rotation with `nebula-credential rotations resolve %s`, then store a new refresh token with `nebula-credential put %s --type oauth2 < token.json`.", j.r.CredentialID, j.r.CredentialID))

	case se.step == StepPlanned:
		// Nothing reached the target; close the rotation as failed.
		werr := e.advance(ctx, j, StepRolledBack, func(tx store.Tx, r *store.Rotation) error {
			record(r)
			r.Open, r.FinishedAt = false, &now
			j.d.FailedStep = se.step
			encodeData(r, j.d)
			if err := AppendEvent(ctx, tx, now, EventFailed, r.CredentialID, r.FromVersion, map[string]any{"failed_step": se.step, "error_class": class}); err != nil {
				return err
			}
			return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: r.CredentialID, At: now, Action: r.Kind, Actor: r.Actor, Reason: r.Reason, FromVersion: r.FromVersion, RotationID: r.ID, Outcome: "failed", Detail: fmt.Sprintf("stage failed (%s): %s", class, msg)})
		})
		if werr != nil {
			return werr
		}
		e.emit(Event{Kind: EventFailed, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID, Detail: msg})
		return &RotationError{ID: j.r.CredentialID, RotationID: j.r.ID, Step: "stage", Err: se.err}

	case se.step == StepStaged && class == rotator.ClassRejected && j.r.Kind == KindRotate && j.d.Regenerated < maxRegenerations:
		// The target refused the new secret itself: revert (idempotent), discard
		// it and generate another instead of replaying it.
		sctx, cancel := e.stepCtx(ctx)
		_, rerr := j.rot.Revert(sctx, rotator.RevertRequest{Current: j.from, Pending: j.to, Strategy: rotator.Strategy(j.r.Strategy), Resolver: e.resolver(j.r.CredentialID)})
		cancel()
		if rerr == nil {
			j.d.Regenerated++
			pending := j.r.ToVersion
			if werr := e.advance(ctx, j, StepPlanned, func(tx store.Tx, r *store.Rotation) error {
				record(r)
				if err := tx.SetLabel(ctx, r.CredentialID, "pending", 0); err != nil {
					return err
				}
				if err := tx.DeleteVersion(ctx, r.CredentialID, pending); err != nil {
					return err
				}
				r.ToVersion = 0
				return nil
			}); werr != nil {
				return werr
			}
			j.to = rotator.Credential{}
			return nil
		}
		fallthrough

	case se.step == StepStaged || se.step == StepApplied:
		j.d.FailedStep = se.step
		if j.d.AutoRollback || j.d.nothingApplied() { // nothing applied: closing changes nothing
			return e.advance(ctx, j, StepRollingBack, func(_ store.Tx, r *store.Rotation) error {
				record(r)
				return nil
			})
		}
		return e.toAttention(ctx, j, StepNeedsAttention, se.step, class, msg, e.recovery(j, se.step, false))

	case se.step == StepRollingBack:
		if j.d.Rollback {
			// A manual rollback during grace could not verify or retire: stay in
			// grace on the newer version.
			j.d.Rollback = false
			step := StepGrace
			_ = e.advance(ctx, j, step, func(_ store.Tx, r *store.Rotation) error { record(r); return nil })
			return &RotationError{ID: j.r.CredentialID, RotationID: j.r.ID, Step: "rollback", Err: se.err}
		}
		j.d.RevertFailed = true
		return e.toAttention(ctx, j, StepNeedsAttention, se.step, class, msg, e.recovery(j, j.d.FailedStep, true))

	default: // retire failed
		return e.toAttention(ctx, j, StepNeedsAttention, se.step, class, msg, e.recovery(j, se.step, false))
	}
}

func (e *Engine) toAttention(ctx context.Context, j *job, step, failed string, class rotator.Class, msg, recovery string) error {
	now := e.now()
	if j.d.FailedStep == "" {
		j.d.FailedStep = failed
	}
	j.d.Recovery = recovery
	j.d.Heal = step == StepNeedsAttention && class == rotator.ClassTransient
	werr := e.advance(ctx, j, step, func(tx store.Tx, r *store.Rotation) error {
		r.ErrorClass, r.LastError = string(class), msg
		r.DueAt = now.Add(100 * 365 * 24 * time.Hour) // never picked up by the scheduler
		if j.d.Heal {
			r.DueAt, r.LeaseUntil = e.healDue(now), now // probed until the target answers
		}
		if err := AppendEvent(ctx, tx, now, EventNeedsAttention, r.CredentialID, r.FromVersion, map[string]any{"step": failed, "error_class": class}); err != nil {
			return err
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: r.CredentialID, At: now, Action: r.Kind, Actor: r.Actor, FromVersion: r.FromVersion, ToVersion: r.ToVersion, RotationID: r.ID, Outcome: step, Detail: fmt.Sprintf("%s failed (%s): %s", failed, class, msg)})
	})
	if werr != nil {
		return werr
	}
	e.emit(Event{Kind: EventNeedsAttention, CredentialID: j.r.CredentialID, Version: j.r.FromVersion, RotationID: j.r.ID, Detail: msg})
	return &RotationError{ID: j.r.CredentialID, RotationID: j.r.ID, Step: failed, Err: fmt.Errorf("%s (%s): %s", step, class, msg)}
}

// recovery writes the exact manual steps for a rotation a person must finish.
func (e *Engine) recovery(j *job, failed string, revertFailed bool) string {
	id, from, to := j.r.CredentialID, j.r.FromVersion, j.r.ToVersion
	switch {
	case revertFailed:
		return fmt.Sprintf("Apply or verify of version %d failed and the automatic revert failed too. Both versions are stored. "+
			"1) Check which version logs in: `nebula-credential doctor %s`. "+
			"2) If version %d works, keep it: `nebula-credential rotations resolve %s --keep %d`. "+
			"3) Otherwise set version %d back on the target by hand (its value: `nebula-credential get %s --version %d --reveal`), then `nebula-credential rotations resolve %s --keep %d`.",
			to, id, from, id, from, from, id, from, id, from)
	case failed == StepGrace:
		return fmt.Sprintf("Version %d is current; retiring the old version %d on the target failed, so it still works there. "+
			"Fix access to the target, then retry: `nebula-credential rotations retry %s`; or revoke version %d by hand and run `nebula-credential rotations resolve %s --keep %d`.",
			to, from, id, from, id, to)
	default:
		return fmt.Sprintf("Version %d failed at %s and automatic rollback is off. Version %d is still current. "+
			"Roll back: `nebula-credential rotations retry %s --rollback`; or, if version %d works, keep it: `nebula-credential rotations resolve %s --keep %d`.",
			to, failed, from, id, to, id, to)
	}
}
