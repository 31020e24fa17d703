package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// A previous version must stop logging in when its grace ends. When it does
// not (its retire was forced closed with `resolve --force`, or the change was
// undone on the target), doctor reports it and `rotations retry ID` retires
// it again (issue 18).

// revokesOld reports whether a rotation of strategy ends the old secret on
// the target (a reissued certificate or key stays valid until it expires).
func revokesOld(strategy string) bool {
	switch rotator.Strategy(strategy) {
	case rotator.Dual, rotator.Alternating, rotator.InPlace:
		return true
	}
	return false
}

// graceOver returns when r's grace ended, and whether it has by now.
func graceOver(r *store.Rotation, now time.Time) (time.Time, bool) {
	end := r.GraceEndsAt
	if end == nil {
		end = r.FinishedAt
	}
	if end == nil {
		return time.Time{}, false
	}
	return *end, !now.Before(*end)
}

// staleCandidate reports whether last, the credential's newest rotation, is
// closed with its previous version meant to be refused by now: a retired or
// resolved rotation whose grace ended, whose strategy revokes, and whose new
// version is still current.
func staleCandidate(last *store.Rotation, current int, now time.Time) bool {
	if last == nil || last.Open || last.FromVersion == 0 || last.FromVersion == current || last.ToVersion != current {
		return false
	}
	if last.Step != StepRetired && last.Step != StepResolved {
		return false
	}
	_, over := graceOver(last, now)
	return over && revokesOld(last.Strategy)
}

// staleFinding is doctor's finding for a previous version that still logs in
// after its grace ended.
func staleFinding(id string, r *store.Rotation) Finding {
	end, _ := graceOver(r, time.Time{})
	how := "its retire did not take effect, or the change was undone on the target"
	if StaysValid(r) != 0 {
		how = fmt.Sprintf("rotation %d was closed with `rotations resolve --force` while its retire was failing", r.ID)
	}
	return Finding{
		Severity: "error",
		Title:    fmt.Sprintf("old credential revocation failed: version %d still logs in after its grace period ended", r.FromVersion),
		Detail: fmt.Sprintf("grace ended at %s, but the target still accepts version %d (%s); anyone holding it can still log in",
			end.UTC().Format(time.RFC3339), r.FromVersion, how),
		Fix: fmt.Sprintf("nebula-credential rotations retry %s", id),
	}
}

// retryStale is Retry for a credential with no open rotation: when the
// newest rotation's previous version still logs in after its grace ended, it
// retires that version again on the target and checks that it is refused.
// Otherwise it returns notOpen (there is nothing to retry).
func (e *Engine) retryStale(ctx context.Context, id string, notOpen error) (*store.Rotation, error) {
	if !e.acquire(id) {
		return nil, fmt.Errorf("retry %s: %w: already being driven by this process", id, store.ErrRotationInProgress)
	}
	defer e.release(id)
	var (
		last *store.Rotation
		cur  int
	)
	err := e.st.View(ctx, func(tx store.Tx) error {
		if _, err := tx.OpenRotation(ctx, id); err == nil {
			return store.ErrRotationInProgress
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		cur = labels["current"]
		rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: id, Limit: 1})
		if err != nil || len(rs) == 0 {
			return err
		}
		last = &rs[0]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w", id, err)
	}
	if !staleCandidate(last, cur, e.now()) {
		return nil, notOpen
	}
	j, err := e.load(ctx, last)
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w", id, err)
	}
	check := func() error {
		sctx, cancel := e.stepCtx(ctx)
		defer cancel()
		_, err := j.rot.Verify(sctx, rotator.VerifyRequest{Credential: j.from, Resolver: e.resolver(id)})
		return err
	}
	switch err := check(); {
	case err == nil:
	case unreachable(err):
		return nil, fmt.Errorf("retry %s: %w: cannot check whether version %d still logs in (%v); run the same command again once the target answers", id, ErrTargetUnreachable, last.FromVersion, err)
	default:
		return nil, fmt.Errorf("%w; version %d is already refused by the target, nothing to retire", notOpen, last.FromVersion)
	}
	sctx, cancel := e.stepCtx(ctx)
	_, rerr := j.rot.Retire(sctx, rotator.RetireRequest{Old: j.from, Current: j.to, Strategy: rotator.Strategy(last.Strategy), Resolver: e.resolver(id)})
	cancel()
	if rerr != nil {
		if unreachable(rerr) {
			return nil, fmt.Errorf("retry %s: %w: retiring version %d failed (%v); it still logs in. Run the same command again once the target answers", id, ErrTargetUnreachable, last.FromVersion, rerr)
		}
		return nil, fmt.Errorf("retry %s: retiring version %d failed: %w; it still logs in", id, last.FromVersion, rerr)
	}
	if err := check(); err == nil {
		next := fmt.Sprintf("revoke it on the target by hand, or rotate (`nebula-credential rotate %s`)", id)
		return nil, fmt.Errorf("retry %s: version %d still logs in after retiring it again; %s", id, last.FromVersion, next)
	}
	now := e.now()
	err = e.st.Update(ctx, func(tx store.Tx) error {
		r := *last
		d := decodeData(&r)
		d.RetiredAgain = true
		encodeData(&r, d)
		r.UpdatedAt = now
		if err := tx.UpdateRotation(ctx, &r); err != nil {
			return err
		}
		if err := audit.Append(ctx, tx, audit.Entry{At: now, Action: r.Kind + ".retired_again", CredentialID: id, FromVersion: r.FromVersion, ToVersion: r.ToVersion, Outcome: "ok"}); err != nil {
			return err
		}
		*last = r
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: "retire", Actor: actorOf(ctx), FromVersion: last.FromVersion, ToVersion: last.ToVersion, RotationID: last.ID, Outcome: "ok", Detail: "retired again: it still logged in after its grace ended"})
	})
	if err != nil {
		return nil, fmt.Errorf("retry %s: version %d is retired on the target, but recording it failed: %w", id, last.FromVersion, err)
	}
	e.log.Info("retired a previous version that still logged in after its grace", "credential", id, "rotation", last.ID, "version", last.FromVersion)
	e.emit(Event{Kind: EventRetired, CredentialID: id, Version: last.FromVersion, RotationID: last.ID, Detail: "retired again"})
	return last, nil
}

// RetireOverdue reports whether open rotation r holds a previous version that
// should have been revoked by now: its grace ended more than a minute ago and
// it is still waiting for its retire, or its retire failed (needs_attention).
func RetireOverdue(r *store.Rotation, now time.Time) bool {
	if r == nil || !r.Open {
		return false
	}
	switch {
	case r.Step == StepGrace:
		return r.GraceEndsAt != nil && now.After(r.GraceEndsAt.Add(time.Minute))
	case r.Step == StepNeedsAttention:
		return decodeData(r).FailedStep == StepGrace
	}
	return false
}
