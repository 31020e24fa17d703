// Package rotation is nebula-credential's rotation engine: journaled
// transactions, recovery, grace periods, rollback, policies and the scheduler.
//
// A rotation is one row in the store's journal that moves through the steps
//
//	planned → staged → applied → verified → committed → grace → retired
//
// or, on failure, rolling_back → rolled_back, or needs_attention when a person
// must act. Every step is recorded before its effect becomes visible and every
// step is idempotent, so after a crash Recover resumes or rolls back each open
// rotation from its recorded step. The pending secret is stored encrypted
// (staged) before the target changes. Every journal write is conditional on the
// rotation's fencing token, so two processes can never both drive one rotation.
package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Steps of the journal.
const (
	StepPlanned        = "planned"
	StepStaged         = "staged"
	StepApplied        = "applied"
	StepVerified       = "verified"
	StepCommitted      = "committed"
	StepGrace          = "grace"
	StepRetired        = "retired"
	StepRollingBack    = "rolling_back"
	StepRolledBack     = "rolled_back"
	StepNeedsAttention = "needs_attention"
	StepReauthRequired = "reauth_required"
	StepResolved       = "resolved"
)

// Kinds of journal rows.
const (
	KindRotate  = "rotate"
	KindRestore = "restore" // rollback --to-version K after grace
)

// data is the step-specific state kept in store.Rotation.Data. Never secret.
type data struct {
	GraceSeconds float64 `json:"grace_seconds"`
	Validate     bool    `json:"validate"`
	AutoRollback bool    `json:"auto_rollback"`
	// Rollback is set when a person rolled back during grace.
	Rollback bool `json:"rollback,omitempty"`
	// FailedStep is the step that failed, for rolling_back and needs_attention.
	FailedStep string `json:"failed_step,omitempty"`
	// Regenerated counts secrets the target rejected and we regenerated.
	Regenerated int `json:"regenerated,omitempty"`
	// RevertFailed is set when the automatic revert failed too.
	RevertFailed bool `json:"revert_failed,omitempty"`
	// Recovery is the exact manual recovery text for needs_attention.
	Recovery string `json:"recovery,omitempty"`
	// GraceWarned is set once the grace-ending warning was sent.
	GraceWarned bool `json:"grace_warned,omitempty"`
	// CommittedAt is when current moved.
	CommittedAt *time.Time `json:"committed_at,omitempty"`
	// TransientSince is the first transient failure of the current step; the
	// step is retried until its budget (Backoff.Budget) runs out.
	TransientSince *time.Time `json:"transient_since,omitempty"`
	// ApplyReached is set once an apply may have changed the target;
	// ApplyNotReached once an apply failed before changing anything. With
	// only the latter there is nothing to revert.
	ApplyReached    bool `json:"apply_reached,omitempty"`
	ApplyNotReached bool `json:"apply_not_reached,omitempty"`
	// Heal is set on a rotation parked in needs_attention because its target
	// did not answer: the scheduler probes it and finishes it (heal.go).
	Heal bool `json:"heal,omitempty"`
	// VerifyPending: an in_place rotation committed before its verify (see
	// earlyCommit); verify runs at committed, and its failure reverts.
	VerifyPending bool `json:"verify_pending,omitempty"`
	// RetiredAgain: the previous version still logged in after this closed
	// rotation's grace and `rotations retry` retired it (stale.go).
	RetiredAgain bool `json:"retired_again,omitempty"`
}

func decodeData(r *store.Rotation) data {
	var d data
	if len(r.Data) > 0 {
		_ = json.Unmarshal(r.Data, &d)
	}
	return d
}

func encodeData(r *store.Rotation, d data) {
	r.Data, _ = json.Marshal(d)
}

// StateOf maps an open rotation to a credential state.
func StateOf(r *store.Rotation) string {
	switch r.Step {
	case StepGrace, StepCommitted:
		if decodeData(r).Rollback {
			return "rolling_back"
		}
		return "grace"
	case StepNeedsAttention:
		return "needs_attention"
	case StepReauthRequired:
		return "reauth_required"
	case StepRolledBack:
		return "rolled_back"
	default:
		return "rotating"
	}
}

// Prune deletes the oldest versions beyond keep, never a labelled one and
// never one an open rotation refers to.
func Prune(ctx context.Context, tx store.Tx, id string, keep int) error {
	vs, err := tx.VersionNumbers(ctx, id) // the numbers only: it runs in every commit
	if err != nil || len(vs) <= keep {
		return err
	}
	labels, err := tx.Labels(ctx, id)
	if err != nil {
		return err
	}
	protected := map[int]bool{}
	for _, v := range labels {
		protected[v] = true
	}
	if r, err := tx.OpenRotation(ctx, id); err == nil {
		protected[r.FromVersion], protected[r.ToVersion] = true, true
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	excess := len(vs) - keep
	for _, v := range vs { // ascending: oldest first
		if excess == 0 {
			break
		}
		if protected[v] {
			continue
		}
		if err := tx.DeleteVersion(ctx, id, v); err != nil {
			return fmt.Errorf("prune version %d: %w", v, err)
		}
		excess--
	}
	return nil
}

// ParseSettings decodes stored settings ("" or "{}" means defaults).
func ParseSettings(b []byte) (Settings, error) {
	var s Settings
	if len(b) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("decode rotation settings: %w", err)
	}
	return s, nil
}
