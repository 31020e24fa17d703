package rotation

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// Consumers are what the credential's consumers reported about how long
	// they keep using a version after it stopped being current.
	Consumers []ConsumerTiming
}

// ConsumerTiming is one consumer's report (POST /v1/consumers) of its
// refresh interval and, for a pool, its drain timeout.
type ConsumerTiming struct {
	ID, Name, Host, Kind string
	Refresh              time.Duration
	DrainTimeout         time.Duration
}

// Need is how long the consumer may keep using a version after it stopped
// being current: its refresh interval plus its drain timeout.
func (c ConsumerTiming) Need() time.Duration { return c.Refresh + c.DrainTimeout }

// ConsumerWindow is how long ago a consumer must have reported for its
// timing to count in CheckPolicy (the server deletes silent consumers after
// the same time by default).
const ConsumerWindow = 24 * time.Hour

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
				Title: fmt.Sprintf("periodic interval %s is not longer than grace %s plus the time a rotation takes (%s)", iv, grace, in.RotationTime.Round(time.Millisecond)),
				Detail: fmt.Sprintf("a rotation stays open through its grace period, so rotations could run at best every %s, not every %s; a grace shorter than %s also fits",
					need.Round(time.Millisecond), iv, iv-in.RotationTime),
				Fix: fmt.Sprintf("nebula-credential policy set %s --periodic %s%s", in.ID, fmtDur(roundUp(need+time.Second)), jitterFlag(p)),
			})
		}
	}
	if !inPlace && grace < time.Second {
		out = append(out, Finding{Severity: "warning",
			Title:  fmt.Sprintf("grace %s is under 1s on strategy %s", grace, strategyName(in.Strategy)),
			Detail: "consumers that cache the credential or open connections with it fail until they refetch",
			Fix:    graceFix(s, in, DefaultGrace),
		})
	}
	if st := time.Duration(s.ConsumerMaxStaleness); !inPlace && st > 0 && grace < st {
		out = append(out, Finding{Severity: "warning",
			Title:  fmt.Sprintf("grace %s is shorter than consumer_max_staleness %s", grace, st),
			Detail: "a consumer serving a cached version that long still uses the previous version after it was retired",
			Fix:    graceFix(s, in, st),
		})
	}
	if f := consumerFinding(s, in, grace); f != nil && !inPlace {
		out = append(out, *f)
	}
	return out
}

// consumerFinding warns when a consumer reported a refresh interval plus
// drain timeout longer than the grace period: after the previous version is
// retired it still serves it (logins fail) or holds connections opened with it.
func consumerFinding(s Settings, in PolicyInput, grace time.Duration) *Finding {
	var (
		worst ConsumerTiming
		over  int
	)
	for _, c := range in.Consumers {
		if c.Need() > grace {
			over++
			if c.Need() > worst.Need() {
				worst = c
			}
		}
	}
	if over == 0 {
		return nil
	}
	who := fmt.Sprintf("consumer %s (%s", worst.ID, worst.Kind)
	if worst.Host != "" {
		who += " on " + worst.Host
	}
	who += ")"
	var title, detail string
	switch {
	case worst.DrainTimeout > grace:
		title = fmt.Sprintf("grace %s is shorter than the drain timeout %s of %s", grace, worst.DrainTimeout, who)
		detail = fmt.Sprintf("its connections opened with the previous version stay open up to %s after the rotation, past the retirement at the end of grace", worst.Need())
	case worst.DrainTimeout > 0:
		title = fmt.Sprintf("grace %s is shorter than the refresh interval %s plus drain timeout %s of %s", grace, worst.Refresh, worst.DrainTimeout, who)
		detail = fmt.Sprintf("it may use the previous version up to %s after the rotation, past the retirement at the end of grace", worst.Need())
	default:
		title = fmt.Sprintf("grace %s is shorter than the refresh interval %s of %s", grace, worst.Refresh, who)
		detail = fmt.Sprintf("it serves a cached version up to %s, so its logins fail after the previous version is retired until it refreshes", worst.Refresh)
	}
	if over > 1 {
		detail += fmt.Sprintf(" (%d consumers need more than the grace; this one the most)", over)
	}
	if worst.DrainTimeout > 0 {
		detail += "; or lower the pool's drain timeout (pgxswap.Config.DrainTimeout, sqlswap.Config.DrainTimeout) below the grace"
	}
	return &Finding{Severity: "warning", Title: title, Detail: detail, Fix: graceFix(s, in, worst.Need())}
}

// graceFix is the command that sets a grace of at least need, rounded up to
// a second, lengthening a periodic interval that would no longer fit (a
// policy set that the periodic check would refuse is no fix).
func graceFix(s Settings, in PolicyInput, need time.Duration) string {
	g := roundUp(need)
	fix := fmt.Sprintf("nebula-credential policy set %s --grace %s", in.ID, fmtDur(g))
	if len(s.Policies) == 1 && s.Policies[0].Kind == Periodic && time.Duration(s.Policies[0].Interval) <= g+in.RotationTime {
		fix += fmt.Sprintf(" --periodic %s%s", fmtDur(roundUp(g+in.RotationTime+time.Second)), jitterFlag(s.Policies[0]))
	}
	return fix
}

func jitterFlag(p Policy) string {
	if p.Jitter > 0 {
		return " --jitter " + fmtDur(time.Duration(p.Jitter))
	}
	return ""
}

// fmtDur writes d as policy set reads it, without trailing zero units
// ("5m", "1h30m", "90s").
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
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
	if cs, err := tx.ListConsumers(ctx, c.ID); err == nil {
		now := e.now()
		for _, r := range cs {
			if now.Sub(r.LastSeen) <= ConsumerWindow && r.Refresh+r.DrainTimeout > 0 {
				in.Consumers = append(in.Consumers, ConsumerTiming{ID: r.ID, Name: r.Name, Host: r.Host, Kind: r.Kind, Refresh: r.Refresh, DrainTimeout: r.DrainTimeout})
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
	_, err := e.CheckPolicyTx(ctx, tx, c, s)
	return err
}

// CheckPolicyTx checks settings s about to be written for credential c
// (which may not be stored yet) inside tx: it returns the warnings, or an
// error wrapping ErrPolicy when a finding is an error (then nothing may be
// written). policy set and put both call it, so they refuse and warn alike.
func (e *Engine) CheckPolicyTx(ctx context.Context, tx store.Tx, c *store.Credential, s Settings) ([]Finding, error) {
	var (
		errs  []error
		warns []Finding
	)
	for _, f := range CheckPolicy(s, e.policyInput(ctx, tx, c, s)) {
		if f.Severity == "error" {
			errs = append(errs, fmt.Errorf("%w: %s (%s); fix: %s", ErrPolicy, f.Title, f.Detail, f.Fix))
		} else {
			warns = append(warns, f)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return warns, nil
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
