package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// PolicyInput is what CheckPolicy needs besides the settings.
type PolicyInput struct {
	ID       string
	Strategy rotator.Strategy // the strategy rotations will use
	// RotationTime is how long a rotation takes from start to commit (the
	// last one's, 0 if unknown).
	RotationTime time.Duration
}

// CheckPolicy finds settings that cannot do what they say. Findings with
// severity "error" are refused when the policy is written (a periodic
// interval shorter than grace plus the time a rotation takes would silently
// stretch to that sum); "warning" ones are printed by policy set and doctor.
func CheckPolicy(s Settings, in PolicyInput) []Finding {
	var out []Finding
	grace := s.GraceOrDefault()
	inPlace := in.Strategy == rotator.InPlace
	if inPlace {
		grace = 0 // in_place has no grace period
	}
	for _, p := range s.Policies {
		if p.Kind != Periodic || p.Interval <= 0 {
			continue
		}
		iv := time.Duration(p.Interval)
		if need := grace + in.RotationTime; iv <= need {
			out = append(out, Finding{Severity: "error",
				Title:  fmt.Sprintf("periodic interval %s is not longer than grace %s plus the time a rotation takes (%s)", iv, grace, in.RotationTime.Round(time.Millisecond)),
				Detail: fmt.Sprintf("a rotation stays open through its grace period, so rotations could run at best every %s, not every %s", need.Round(time.Millisecond), iv),
				Fix:    fmt.Sprintf("nebula-credential policy set %s --periodic %s (or a grace shorter than %s)", in.ID, roundUp(need+time.Second), iv-in.RotationTime),
			})
		}
	}
	if !inPlace && grace < time.Second {
		out = append(out, Finding{Severity: "warning",
			Title:  fmt.Sprintf("grace %s is under 1s on strategy %s", grace, strategyName(in.Strategy)),
			Detail: "consumers that cache the credential or open connections with it fail until they refetch",
			Fix:    fmt.Sprintf("nebula-credential policy set %s --grace 5m", in.ID),
		})
	}
	if st := time.Duration(s.ConsumerMaxStaleness); !inPlace && st > 0 && grace < st {
		out = append(out, Finding{Severity: "warning",
			Title:  fmt.Sprintf("grace %s is shorter than consumer_max_staleness %s", grace, st),
			Detail: "a consumer serving a cached version that long still uses the previous version after it was retired",
			Fix:    fmt.Sprintf("nebula-credential policy set %s --grace %s", in.ID, roundUp(st)),
		})
	}
	return out
}

func strategyName(s rotator.Strategy) string {
	if s == "" {
		return "(rotator's best)"
	}
	return string(s)
}

// roundUp rounds d up to a whole second.
func roundUp(d time.Duration) time.Duration {
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return d
}

// ErrPolicy: the settings cannot do what they say (see CheckPolicy). It
// wraps ErrBadRequest.
var ErrPolicy = fmt.Errorf("%w: policy", ErrBadRequest)

// policyInput works out the strategy and the last rotation's duration of
// credential id inside tx.
func (e *Engine) policyInput(ctx context.Context, tx store.Tx, c *store.Credential, s Settings) PolicyInput {
	in := PolicyInput{ID: c.ID, Strategy: s.Strategy}
	if in.Strategy == "" {
		if rot, err := e.reg.Lookup(c.Type); err == nil {
			if sts := rot.Capabilities().Strategies; len(sts) > 0 {
				in.Strategy = sts[0]
			}
		}
	}
	if rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: c.ID, Limit: 5}); err == nil {
		for i := range rs {
			if at := CommittedAt(&rs[i]); at != nil {
				in.RotationTime = at.Sub(rs[i].StartedAt)
				break
			}
		}
	}
	return in
}

// checkPolicy refuses settings with an error finding (ErrPolicy).
func (e *Engine) checkPolicy(ctx context.Context, tx store.Tx, c *store.Credential, s Settings) error {
	var errs []error
	for _, f := range CheckPolicy(s, e.policyInput(ctx, tx, c, s)) {
		if f.Severity == "error" {
			errs = append(errs, fmt.Errorf("%w: %s (%s); fix: %s", ErrPolicy, f.Title, f.Detail, f.Fix))
		}
	}
	return errors.Join(errs...)
}

// PolicyFindings returns the findings of CheckPolicy for credential id's
// stored settings (for policy set's warnings and doctor).
func (e *Engine) PolicyFindings(ctx context.Context, id string) ([]Finding, error) {
	var out []Finding
	err := e.st.View(ctx, func(tx store.Tx) error {
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		s, err := ParseSettings(c.Settings)
		if err != nil {
			return err
		}
		out = CheckPolicy(s, e.policyInput(ctx, tx, c, s))
		return nil
	})
	return out, err
}
