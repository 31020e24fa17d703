package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Recover resumes every unfinished rotation whose lease is free (or held by a
// dead process on this host) and whose step is due. Rotations waiting in grace
// are left to the scheduler.
func (e *Engine) Recover(ctx context.Context) error {
	var open []store.Rotation
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		open, err = tx.ListRotations(ctx, store.RotationFilter{OpenOnly: true, Limit: 10000})
		return err
	})
	if err != nil {
		return err
	}
	var errs []error
	for i := range open {
		r := &open[i]
		if r.Step == StepNeedsAttention || r.Step == StepReauthRequired || r.DueAt.After(e.now()) {
			continue
		}
		if r.LeaseUntil.After(e.now()) && r.LeaseOwner != e.cfg.Owner && !ownerDead(r.LeaseOwner) {
			continue // a live process is driving it
		}
		if !e.acquire(r.CredentialID) {
			continue // the scheduler of this process is driving it
		}
		claimed, err := e.claim(ctx, r)
		if err != nil {
			e.release(r.CredentialID)
			if !errors.Is(err, store.ErrFenced) {
				errs = append(errs, err)
			}
			continue
		}
		e.log.Info("recovering rotation", "credential", r.CredentialID, "rotation", r.ID, "step", r.Step)
		_, err = e.driveHeld(audit.WithActor(ctx, "recovery", ""), claimed, false)
		e.release(r.CredentialID)
		if err != nil && !isExpectedEnd(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isExpectedEnd(err error) bool {
	var re *RotationError
	return errors.Is(err, ErrRetryScheduled) || errors.As(err, &re)
}

// RollbackOptions select a rollback.
type RollbackOptions struct {
	// ToVersion re-applies version K on the target after grace; 0 means "back to
	// previous while it is still valid".
	ToVersion int
	Actor     string
	Reason    string
	Wait      bool
}

// Rollback moves current back. Without ToVersion the credential must be in
// grace: the previous version is verified, made current, and the newer one is
// retired. With ToVersion, version K is re-applied on the target through a
// journaled restore (stage, apply, verify, commit, grace, retire).
func (e *Engine) Rollback(ctx context.Context, id string, opts RollbackOptions) (*store.Rotation, error) {
	if opts.ToVersion > 0 {
		var exists bool
		if err := e.st.View(ctx, func(tx store.Tx) error {
			_, err := tx.GetVersion(ctx, id, opts.ToVersion)
			exists = err == nil
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}); err != nil {
			return nil, err
		}
		if !exists {
			return nil, fmt.Errorf("rollback %s: %w: version %d is not stored (see `nebula-credential history %s`)", id, store.ErrNotFound, opts.ToVersion, id)
		}
		r, err := e.plan(ctx, id, KindRestore, opts.ToVersion, RotateOptions{Actor: opts.Actor, Reason: opts.Reason})
		if err != nil {
			return nil, err
		}
		return e.drive(ctx, r, opts.Wait)
	}
	r, err := e.openRotation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, e.noGraceToRollBack(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	if r.Step != StepGrace && r.Step != StepCommitted {
		return nil, fmt.Errorf("rollback %s: %w", id, inProgress(r))
	}
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", id, err)
	}
	j := &job{r: claimed, d: decodeData(claimed)}
	j.d.Rollback = true
	if opts.Actor != "" {
		j.r.Actor = opts.Actor
	}
	if opts.Reason != "" {
		j.r.Reason = opts.Reason
	}
	if err := e.advance(ctx, j, StepRollingBack, func(_ store.Tx, r *store.Rotation) error {
		r.DueAt = e.now()
		return nil
	}); err != nil {
		return nil, err
	}
	return e.drive(ctx, j.r, opts.Wait)
}

// ExtendGrace pushes the end of the grace period later (never earlier) and
// asks the rotator to move any deadline the target enforces itself.
func (e *Engine) ExtendGrace(ctx context.Context, id string, by time.Duration) (*store.Rotation, error) {
	if by <= 0 {
		return nil, fmt.Errorf("%w: grace can only be extended by a positive duration", ErrBadRequest)
	}
	r, err := e.openRotation(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("extend grace of %s: %w: no rotation is in its grace period", id, store.ErrNotFound)
		}
		return nil, err
	}
	if r.Step != StepGrace || r.GraceEndsAt == nil {
		return nil, fmt.Errorf("extend grace of %s: %w: rotation is at step %s, not in grace", id, ErrWrongStep, r.Step)
	}
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return nil, err
	}
	j, err := e.load(ctx, claimed)
	if err != nil {
		return nil, err
	}
	end := j.r.GraceEndsAt.Add(by)
	sctx, cancel := e.stepCtx(ctx)
	defer cancel()
	if _, err := j.rot.Apply(sctx, rotator.ApplyRequest{Current: j.from, Pending: j.to, Strategy: rotator.Strategy(j.r.Strategy), GraceEndsAt: end.Add(2 * e.cfg.StepTimeout), Resolver: e.resolver(j.r.CredentialID)}); err != nil {
		return nil, fmt.Errorf("extend grace of %s on the target: %w", id, err)
	}
	j.d.GraceSeconds += by.Seconds()
	j.d.GraceWarned = false
	now := e.now()
	if err := e.advance(ctx, j, StepGrace, func(tx store.Tx, r *store.Rotation) error {
		r.GraceEndsAt, r.DueAt, r.LeaseUntil = &end, end, now
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: "grace.extend", CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok", Detail: "grace until " + end.Format(time.RFC3339)})
	}); err != nil {
		return nil, err
	}
	return j.r, nil
}

// Retry makes a rotation that needs attention run again from its failed step
// now (with rollback, it reverts instead).
func (e *Engine) Retry(ctx context.Context, id string, rollback bool) (*store.Rotation, error) {
	r, err := e.openRotation(ctx, id)
	if errors.Is(err, store.ErrNotFound) && !rollback {
		// Nothing open: a previous version that still logs in after its
		// grace is retired again (stale.go).
		return e.retryStale(ctx, id, fmt.Errorf("retry %s: %w", id, err))
	}
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w", id, err)
	}
	if r.Step == StepGrace && r.Attempt == 0 && r.LastError == "" && r.GraceEndsAt != nil && e.now().Before(*r.GraceEndsAt) {
		// Nothing failed: a retry here would retire the old version now and
		// cut off the consumers the grace period is for.
		return nil, fmt.Errorf("retry %s: %w: rotation %d has not failed; it is in its grace period until %s and the old version retires then. To retire it now: `nebula-credential grace end %s`; to go back: `nebula-credential rollback %s`",
			id, ErrWrongStep, r.ID, r.GraceEndsAt.UTC().Format(time.RFC3339), id, id)
	}
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return nil, err
	}
	j := &job{r: claimed, d: decodeData(claimed)}
	step := claimed.Step
	if rollback && (step == StepPlanned || step == StepStaged || step == StepApplied) {
		// Give up a rotation waiting to retry: revert what it applied (nothing
		// when no apply reached the target) and close it.
		if j.d.FailedStep == "" {
			j.d.FailedStep = step
		}
		step = StepRollingBack
	}
	if step == StepNeedsAttention {
		switch {
		case rollback || j.d.RevertFailed:
			step = StepRollingBack
		case j.d.FailedStep == StepGrace:
			step = StepGrace
		default:
			step = j.d.FailedStep
		}
	}
	if err := e.advance(ctx, j, step, func(_ store.Tx, r *store.Rotation) error {
		r.DueAt = e.now()
		r.Attempt = 0
		return nil
	}); err != nil {
		return nil, err
	}
	return e.drive(ctx, j.r, false)
}

// Resolve closes a rotation a person has repaired, keeping version keep as
// current after verifying it against the target.
func (e *Engine) Resolve(ctx context.Context, id string, keep int, force bool) (*store.Rotation, error) {
	r, err := e.openRotation(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", id, err)
	}
	if r.Step != StepNeedsAttention && r.Step != StepReauthRequired {
		return nil, fmt.Errorf("resolve %s: %w: rotation is at step %s; only a rotation that needs attention can be resolved", id, ErrWrongStep, r.Step)
	}
	if keep == 0 {
		keep = r.FromVersion
	}
	if keep != r.FromVersion && keep != r.ToVersion {
		return nil, fmt.Errorf("resolve %s: %w: --keep must be version %d or %d", id, ErrBadRequest, r.FromVersion, r.ToVersion)
	}
	if r.Step == StepNeedsAttention && decodeData(r).FailedStep == StepGrace && !force {
		// Closing a failed retire would leave the old secret valid: retire
		// first, which is what restores the promise.
		return e.resolveRetire(ctx, id, r)
	}
	claimed, err := e.claim(ctx, r)
	if err != nil {
		return nil, err
	}
	j, err := e.load(ctx, claimed)
	if err != nil {
		return nil, err
	}
	kept := j.from
	if keep == j.r.ToVersion {
		kept = j.to
	}
	if !force && r.Step != StepReauthRequired {
		sctx, cancel := e.stepCtx(ctx)
		_, err := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: kept, Resolver: e.resolver(j.r.CredentialID)})
		cancel()
		if err != nil {
			return nil, resolveCheckError(id, keep, err)
		}
	}
	now := e.now()
	err = e.advance(ctx, j, StepResolved, func(tx store.Tx, r *store.Rotation) error {
		r.Open, r.FinishedAt = false, &now
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		if labels["current"] != keep {
			if err := tx.SetLabel(ctx, id, "current", keep); err != nil {
				return err
			}
			if err := AppendEvent(ctx, tx, now, EventCurrentChanged, id, keep, map[string]any{"resolved": true}); err != nil {
				return err
			}
		}
		for _, l := range []string{"pending", "previous"} {
			if err := tx.SetLabel(ctx, id, l, 0); err != nil {
				return err
			}
		}
		if err := e.reschedule(ctx, tx, id, now, kept.ExpiresAt); err != nil {
			return err
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: "resolve", Actor: actorOf(ctx), FromVersion: r.FromVersion, ToVersion: keep, RotationID: r.ID, Outcome: "ok"})
	})
	if err == nil {
		e.emit(Event{Kind: EventCurrentChanged, CredentialID: id, Version: keep, RotationID: j.r.ID, Detail: "resolved"})
	}
	return j.r, err
}

func actorOf(ctx context.Context) string {
	a, _ := audit.ActorOf(ctx)
	return a
}

// SetSettings replaces a credential's rotation settings and reschedules it.
func (e *Engine) SetSettings(ctx context.Context, id string, s Settings) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return e.st.Update(ctx, func(tx store.Tx) error {
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		if c.DeletedAt != nil {
			return fmt.Errorf("%w: credential is deleted", store.ErrNotFound)
		}
		if err := e.checkPolicy(ctx, tx, c, s); err != nil {
			return err
		}
		c.Settings = b
		// The last rotation time: the current version's creation.
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		v, err := tx.GetVersion(ctx, id, labels["current"])
		if err != nil {
			return err
		}
		var fields map[string]any
		if err := json.Unmarshal(v.Fields, &fields); err != nil {
			return err
		}
		if err := e.Bind(ctx, tx, id, c.Type, fields); err != nil {
			return err // a settings change rebinds: binding.go
		}
		now := e.now()
		c.NextDueAt = s.NextDue(DueInput{ID: id, LastRotatedAt: v.CreatedAt, CreatedAt: v.CreatedAt, ExpiresAt: v.ExpiresAt, Now: now})
		c.UpdatedAt = now
		if err := tx.PutCredential(ctx, c); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: "policy.set", CredentialID: id, Outcome: "ok", Detail: string(b)})
	})
}

// Settings returns a credential's rotation settings.
func (e *Engine) Settings(ctx context.Context, id string) (Settings, error) {
	var s Settings
	err := e.st.View(ctx, func(tx store.Tx) error {
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		s, err = ParseSettings(c.Settings)
		return err
	})
	return s, err
}

// Rotations lists open and recent rotations (of one credential if id != "").
func (e *Engine) Rotations(ctx context.Context, id string, openOnly bool, limit int) ([]store.Rotation, error) {
	var out []store.Rotation
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListRotations(ctx, store.RotationFilter{CredentialID: id, OpenOnly: openOnly, Limit: limit})
		return err
	})
	return out, err
}

// Recovery returns the manual recovery text stored with a rotation.
func Recovery(r *store.Rotation) (failedStep, recovery string) {
	d := decodeData(r)
	return d.FailedStep, d.Recovery
}

// Run runs the scheduler until ctx is done: every tick it claims due work from
// the store in due order, with bounded concurrency.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
	}()
	sem := make(chan struct{}, e.cfg.Concurrency)
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	for {
		if _, err := e.tick(ctx, sem); err != nil && ctx.Err() == nil {
			e.log.Error("scheduler tick", "err", err)
		}
		select {
		case <-ctx.Done():
			e.wg.Wait()
			return nil
		case <-e.closed:
			return nil
		case <-t.C:
		}
	}
}

// Owner is the name this engine's process holds leases under (Config.Owner).
func (e *Engine) Owner() string { return e.cfg.Owner }

// LeaseTTL is how long a lease lasts (Config.LeaseTTL).
func (e *Engine) LeaseTTL() time.Duration { return e.cfg.LeaseTTL }

// Running reports whether the scheduler loop is running.
func (e *Engine) Running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running
}

// Tick runs one scheduler pass and waits for the work it started. It returns
// how many rotations it worked on.
func (e *Engine) Tick(ctx context.Context) (int, error) {
	sem := make(chan struct{}, e.cfg.Concurrency)
	n, err := e.tick(ctx, sem)
	e.wg.Wait()
	return n, err
}

func (e *Engine) tick(ctx context.Context, sem chan struct{}) (int, error) {
	ctx = audit.WithActor(ctx, "scheduler", "")
	now := e.now()
	// Rows this process already drives (waiting for a slot of a hung target,
	// say) come back from the due queries without being launched again: read
	// that many more, so they never crowd out due work of other targets
	// (issue 18 starvation).
	e.mu.Lock()
	busy := len(e.inflight)
	e.mu.Unlock()
	limit := cap(sem)*4 + busy
	var (
		rots  []store.Rotation
		creds []store.Credential
		grace []store.Rotation
	)
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		if rots, err = tx.DueRotations(ctx, now.Add(e.cfg.GraceWarning), limit); err != nil {
			return err
		}
		creds, err = tx.DueCredentials(ctx, now, limit)
		return err
	})
	if err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(rots)+len(creds))
	for _, r := range rots {
		ids = append(ids, r.CredentialID)
	}
	for _, c := range creds {
		ids = append(ids, c.ID)
	}
	targets := e.targets(ctx, ids)
	started := 0
	var mu sync.Mutex
	launch := func(id string, fn func(context.Context)) {
		// Mark the credential before anything else: a later tick must not
		// launch it again while this one waits for a slot or runs.
		if !e.acquire(id) {
			return
		}
		// Add to the wait group under the lock Close takes to close: no Add
		// races Close's Wait.
		e.mu.Lock()
		select {
		case <-e.closed:
			e.mu.Unlock()
			e.release(id)
			return
		default:
		}
		e.wg.Add(1)
		e.mu.Unlock()
		mu.Lock()
		started++
		mu.Unlock()
		go func() {
			defer e.wg.Done()
			defer e.release(id)
			// Its target's slot first, then a global one: work queued behind
			// a hung target waits without holding a global slot.
			done, ok := e.targetSlot(ctx, targets[id])
			if !ok {
				return
			}
			defer done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			case <-e.closed:
				return
			}
			defer func() { <-sem }()
			fn(ctx)
		}()
	}
	for i := range rots {
		r := rots[i]
		if r.DueAt.After(now) {
			grace = append(grace, r) // due within the warning window
			continue
		}
		launch(r.CredentialID, func(ctx context.Context) {
			claimed, err := e.claim(ctx, &r)
			if err != nil {
				return
			}
			if _, err := e.driveHeld(ctx, claimed, false); err != nil && !isExpectedEnd(err) {
				e.log.Error("scheduled rotation step", "credential", r.CredentialID, "rotation", r.ID, "err", err)
			}
		})
	}
	for _, c := range creds {
		s, _ := ParseSettings(c.Settings)
		if c.NextDueAt != nil && !s.InWindow(*c.NextDueAt, now) {
			// Missed the scheduled window: move to the next firing.
			_ = e.st.Update(ctx, func(tx store.Tx) error {
				cur, err := tx.GetCredential(ctx, c.ID)
				if err != nil {
					return err
				}
				cur.NextDueAt = s.NextDue(DueInput{ID: c.ID, LastRotatedAt: now, CreatedAt: now, Now: now})
				return tx.PutCredential(ctx, cur)
			})
			continue
		}
		id, due := c.ID, c.NextDueAt
		launch(id, func(ctx context.Context) {
			r, err := e.plan(ctx, id, KindRotate, 0, RotateOptions{Actor: "scheduler", Reason: scheduledReason(due), IfDueAt: due})
			if err == nil {
				_, err = e.driveHeld(ctx, r, false)
			}
			if err != nil && !isExpectedEnd(err) && !errors.Is(err, store.ErrRotationInProgress) && !errors.Is(err, ErrNotDue) {
				e.log.Error("scheduled rotation", "credential", id, "err", err)
			}
		})
	}
	for i := range grace {
		e.graceWarning(ctx, &grace[i])
	}
	return started, nil
}

func (e *Engine) graceWarning(ctx context.Context, r *store.Rotation) {
	d := decodeData(r)
	if r.Step != StepGrace || d.GraceWarned || d.Rollback {
		return
	}
	d.GraceWarned = true
	encodeData(r, d)
	// Best effort, fenced: a concurrent step simply wins.
	if err := e.st.Update(ctx, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) }); err == nil {
		e.emit(Event{Kind: EventGraceWarning, CredentialID: r.CredentialID, Version: r.FromVersion, RotationID: r.ID, Detail: "grace ends at " + r.GraceEndsAt.Format(time.RFC3339)})
	}
}

// GenericRotator rotates random secrets (signing keys, session secrets): it
// generates a fresh value for every secret field; consumers accept current and
// previous during grace. There is no external target.
type GenericRotator struct{}

var _ rotator.Rotator = GenericRotator{}

// Capabilities implements rotator.Rotator.
func (GenericRotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Dual}}
}

// Stage generates 32 random bytes (base64url) per secret field, or follows
// the field "password_policy" when present.
func (GenericRotator) Stage(_ context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	var cfg struct {
		Policy *secret.PasswordPolicy `json:"password_policy"`
	}
	if err := req.Current.Decode(&cfg); err != nil {
		return rotator.StageResponse{}, err
	}
	out := secret.Map{}
	for k := range req.Current.Secret {
		if cfg.Policy != nil {
			v, err := cfg.Policy.Generate()
			if err != nil {
				return rotator.StageResponse{}, rotator.Wrap(rotator.ClassConfig, "password_policy", err)
			}
			out[k] = v
		} else {
			out[k] = secret.Token(32)
		}
	}
	return rotator.StageResponse{Secret: out}, nil
}

// Apply implements rotator.Rotator (nothing to do).
func (GenericRotator) Apply(context.Context, rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	return rotator.ApplyResponse{}, nil
}

// Verify checks every secret field is set.
func (GenericRotator) Verify(_ context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	for k, v := range req.Credential.Secret {
		if v.IsZero() {
			return rotator.VerifyResponse{}, rotator.Errorf(rotator.ClassRejected, "verify", "secret field %q is empty", k)
		}
	}
	return rotator.VerifyResponse{Detail: "all secret fields set"}, nil
}

// Retire implements rotator.Rotator (nothing to revoke).
func (GenericRotator) Retire(context.Context, rotator.RetireRequest) (rotator.RetireResponse, error) {
	return rotator.RetireResponse{}, nil
}

// Revert implements rotator.Rotator (nothing to undo).
func (GenericRotator) Revert(context.Context, rotator.RevertRequest) (rotator.RevertResponse, error) {
	return rotator.RevertResponse{}, nil
}

// openRotation returns the credential's open rotation (store.ErrNotFound if none).
// noGraceToRollBack is the error of a rollback with no rotation in grace: the
// credential is not found, or the way forward names the version to re-apply.
func (e *Engine) noGraceToRollBack(ctx context.Context, id string) error {
	older := 0
	err := e.st.View(ctx, func(tx store.Tx) error {
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		if c.DeletedAt != nil {
			return store.ErrNotFound
		}
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		vs, err := tx.ListVersions(ctx, id)
		if err != nil {
			return err
		}
		// The newest version before the current one, else the newest other.
		cur, other := labels["current"], 0
		for _, v := range vs {
			if v.Version < cur && v.Version > older {
				older = v.Version
			}
			if v.Version != cur && v.Version > other {
				other = v.Version
			}
		}
		if older == 0 {
			older = other
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("rollback %s: %w: credential %q not found (see `nebula-credential list`)", id, store.ErrNotFound, id)
	case err != nil:
		return fmt.Errorf("rollback %s: %w", id, err)
	case older == 0:
		return fmt.Errorf("rollback %s: %w: no rotation is in its grace period and no other version is stored, so there is nothing to roll back to", id, ErrGraceEnded)
	}
	return fmt.Errorf("rollback %s: %w: no rotation is in its grace period, so the previous version may already be retired on the target; re-apply version %d (set on the target again, verified, made current) with `nebula-credential rollback %s --to-version %d` (all versions: `nebula-credential history %s`)", id, ErrGraceEnded, older, id, older, id)
}

func (e *Engine) openRotation(ctx context.Context, id string) (*store.Rotation, error) {
	var r *store.Rotation
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		r, err = tx.OpenRotation(ctx, id)
		return err
	})
	return r, err
}
