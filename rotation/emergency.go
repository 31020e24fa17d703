package rotation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// EndGraceOptions describe a person ending a grace period at once.
type EndGraceOptions struct {
	Reason string // recorded in the audit log; never secret
}

// EndGrace ends the running grace period of credential id now: the previous
// version is retired on the target through the journaled retire step, exactly
// as at the deadline, and the rotation closes. It fails with store.ErrNotFound
// when no rotation is open and ErrWrongStep when the open rotation is not in
// its grace period. The caller checks the rotate permission; the audit entry
// (action grace.end) names the actor of ctx.
func (e *Engine) EndGrace(ctx context.Context, id string, opts EndGraceOptions) (*store.Rotation, error) {
	r, err := e.openRotation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("end grace of %s: %w: no rotation is in its grace period (see `nebula-credential rotations %s`)", id, store.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("end grace of %s: %w", id, err)
	}
	detail := "ended by hand"
	if opts.Reason != "" {
		detail += ": " + opts.Reason
	}
	return e.EndGraceEarly(ctx, id, EndGraceRequest{Version: r.ToVersion, Detail: detail, Action: "grace.end"})
}

// EmergencyOptions describe an emergency rotation (a leaked secret).
type EmergencyOptions struct {
	Reason     string // recorded in history and the audit log; never secret
	NoValidate bool
	// Wait keeps retrying in this process through backoff (see RotateOptions.Wait).
	Wait bool
}

// Revoked is one version an emergency rotation made unusable on the target.
type Revoked struct {
	Version int    `json:"version"`
	Effect  string `json:"effect"` // what happened on the target, per strategy
}

// EmergencyResult is what RotateNow did.
type EmergencyResult struct {
	// GraceEnded is the rotation whose grace period was ended first (nil if
	// none was running).
	GraceEnded *store.Rotation
	// Rotation is the new rotation, run with zero grace.
	Rotation *store.Rotation
	// Revoked lists the versions that no longer log in, oldest first.
	Revoked []Revoked
}

// StrategyEffect says what retiring a version does on the target for a
// strategy: the text an emergency rotation reports.
func StrategyEffect(s rotator.Strategy) string {
	switch s {
	case rotator.Alternating:
		return "the spare user that held it is locked (no login, password removed); sessions already open stay open until they end"
	case rotator.Dual:
		return "the old secondary secret is discarded on the target; sessions already open stay open until they end"
	case rotator.InPlace:
		return "the password was replaced when the new version was applied: it stopped working then; sessions already open stay open until they end"
	case rotator.Reissue:
		return "the old secret is revoked at the provider"
	default:
		return "retired on the target"
	}
}

// RotateNow is the emergency rotation for a leaked secret. It ends any
// running grace period at once (retiring the previous version on the target),
// then rotates with zero grace so that the leaked current version is retired
// as soon as the new one is verified and committed. Every step is audited
// under action rotate.emergency with the actor of ctx. A rotation open at any
// other step (in flight, needs attention) is not overridden: the call fails
// with store.ErrRotationInProgress and names what to do.
//
// On error the result holds what was done so far (a grace already ended stays
// ended).
func (e *Engine) RotateNow(ctx context.Context, id string, opts EmergencyOptions) (*EmergencyResult, error) {
	res := &EmergencyResult{}
	if err := e.auditEmergency(ctx, id, "started", opts.Reason); err != nil {
		return res, fmt.Errorf("emergency rotation of %s: %w", id, err)
	}
	open, err := e.openRotation(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return res, fmt.Errorf("emergency rotation of %s: %w", id, err)
	case open.Step == StepGrace:
		ended, err := e.EndGrace(ctx, id, EndGraceOptions{Reason: "emergency rotation: " + opts.Reason})
		res.GraceEnded = ended
		if err != nil {
			_ = e.auditEmergency(ctx, id, "error", "ending the running grace failed")
			return res, err
		}
		if ended.Step == StepRetired {
			res.Revoked = append(res.Revoked, Revoked{Version: ended.FromVersion, Effect: StrategyEffect(rotator.Strategy(ended.Strategy))})
		}
	default:
		return res, fmt.Errorf("emergency rotation of %s: %w", id, inProgress(open))
	}
	reason := "emergency"
	if opts.Reason != "" {
		reason += ": " + opts.Reason
	}
	r, err := e.Rotate(ctx, id, RotateOptions{Grace: new(time.Duration), Reason: reason, NoValidate: opts.NoValidate, Wait: opts.Wait})
	res.Rotation = r
	if r != nil && r.Step == StepRetired {
		res.Revoked = append(res.Revoked, Revoked{Version: r.FromVersion, Effect: StrategyEffect(rotator.Strategy(r.Strategy))})
	}
	outcome, detail := "ok", revokedText(res.Revoked)
	if err != nil {
		outcome = "error"
	}
	if aerr := e.auditEmergency(ctx, id, outcome, detail); aerr != nil && err == nil {
		err = aerr
	}
	return res, err
}

func revokedText(rs []Revoked) string {
	if len(rs) == 0 {
		return "no version revoked"
	}
	var vs []string
	for _, r := range rs {
		vs = append(vs, fmt.Sprint(r.Version))
	}
	return "revoked version(s) " + strings.Join(vs, ", ")
}

func (e *Engine) auditEmergency(ctx context.Context, id, outcome, detail string) error {
	return e.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.GetCredential(ctx, id); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: e.now(), Action: "rotate.emergency", CredentialID: id, Outcome: outcome, Detail: detail})
	})
}

// EmergencyInfo is the public view of an EmergencyResult: the JSON the API,
// the client and the CLI's --json output share. It holds no secret.
type EmergencyInfo struct {
	Rotation   *Info     `json:"rotation"`
	GraceEnded *Info     `json:"grace_ended,omitempty"`
	Revoked    []Revoked `json:"revoked"`
}

// Info returns the public view of res (nil for nil).
func (res *EmergencyResult) Info() *EmergencyInfo {
	if res == nil {
		return nil
	}
	out := &EmergencyInfo{Rotation: InfoOf(res.Rotation), GraceEnded: InfoOf(res.GraceEnded), Revoked: res.Revoked}
	if out.Revoked == nil {
		out.Revoked = []Revoked{}
	}
	return out
}
