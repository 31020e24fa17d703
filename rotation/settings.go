package rotation

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// Defaults.
const (
	DefaultGrace          = 5 * time.Minute
	DefaultRetention      = 10
	DefaultBackoffBase    = time.Second
	DefaultBackoffCap     = 5 * time.Minute
	DefaultBackoffAttempt = 5
	DefaultFraction       = 0.8
)

// Duration is a time.Duration that reads and writes JSON as "5m", "90d" or seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "5m", "36h", "90d" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var n float64
	if err := json.Unmarshal(b, &n); err == nil {
		*d = Duration(time.Duration(n * float64(time.Second)))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"5m\" or a number of seconds")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration is time.ParseDuration plus a "d" (24h) suffix: "90d", "1d12h".
func ParseDuration(s string) (time.Duration, error) {
	var days int
	if i := indexDay(s); i >= 0 {
		if _, err := fmt.Sscanf(s[:i], "%d", &days); err != nil || days < 0 {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 5m, 36h or 90d", s)
		}
		s = s[i+1:]
		if s == "" {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 5m, 36h or 90d", s)
	}
	return time.Duration(days)*24*time.Hour + d, nil
}

func indexDay(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == 'd' {
			return i
		}
	}
	return -1
}

// Settings are a credential's rotation settings, stored as JSON in
// store.Credential.Settings. The zero value means the defaults.
type Settings struct {
	// Strategy forces one strategy; empty lets the engine pick the rotator's best.
	Strategy rotator.Strategy `json:"strategy,omitempty"`
	// Grace is how long the previous version stays valid (default 5m; 0 allowed
	// with a warning). Nil means the default.
	Grace *Duration `json:"grace,omitempty"`
	// Validate verifies the new secret before commit (default true).
	Verify *bool `json:"validate,omitempty"`
	// AutoRollback reverts automatically on a failed apply or verify (default true).
	AutoRollback *bool `json:"auto_rollback,omitempty"`
	// Retention is how many versions to keep (default 10); labelled versions are
	// always kept.
	Retention int `json:"retention,omitempty"`
	// Policies decide when rotations happen; the earliest due wins.
	Policies []Policy `json:"policies,omitempty"`
	// Backoff for retryable failures.
	Backoff Backoff `json:"backoff,omitzero"`
	// ConsumerMaxStaleness is the longest a consumer of this credential may
	// serve a version it cached (a client cache TTL, a refresh interval). A
	// grace shorter than that fails logins; doctor and policy set warn.
	ConsumerMaxStaleness Duration `json:"consumer_max_staleness,omitempty"`
}

// Backoff is exponential backoff with full jitter. A step that fails
// transiently (the target did not answer) is retried for Budget, measured
// from its first failure; Attempts, when set, also bounds the tries.
type Backoff struct {
	Base     Duration `json:"base,omitempty"`
	Cap      Duration `json:"cap,omitempty"`
	Attempts int      `json:"attempts,omitempty"`
	// Budget is how long transient failures of one step are retried (default
	// 30m, never less than the grace period).
	Budget Duration `json:"budget,omitempty"`
}

// GraceOrDefault returns the grace period.
func (s Settings) GraceOrDefault() time.Duration {
	if s.Grace == nil {
		return DefaultGrace
	}
	return time.Duration(*s.Grace)
}

// ValidateOrDefault returns whether to verify before commit.
func (s Settings) ValidateOrDefault() bool { return s.Verify == nil || *s.Verify }

// AutoRollbackOrDefault returns whether failures roll back automatically.
func (s Settings) AutoRollbackOrDefault() bool { return s.AutoRollback == nil || *s.AutoRollback }

// RetentionOrDefault returns the number of versions to keep.
func (s Settings) RetentionOrDefault() int {
	if s.Retention <= 0 {
		return DefaultRetention
	}
	return s.Retention
}

func (b Backoff) base() time.Duration {
	if b.Base <= 0 {
		return DefaultBackoffBase
	}
	return time.Duration(b.Base)
}

func (b Backoff) cap() time.Duration {
	if b.Cap <= 0 {
		return DefaultBackoffCap
	}
	return time.Duration(b.Cap)
}

// AttemptsOrDefault is how many tries a retryable step gets.
func (b Backoff) AttemptsOrDefault() int {
	if b.Attempts <= 0 {
		return DefaultBackoffAttempt
	}
	return b.Attempts
}

// Delay returns the wait before retry number attempt (1-based): a uniform
// random duration in [0, min(cap, base*2^(attempt-1))] ("full jitter").
func (b Backoff) Delay(attempt int, rand func(n int64) int64) time.Duration {
	d := b.base()
	for i := 1; i < attempt && d < b.cap(); i++ {
		d *= 2
	}
	d = min(d, b.cap())
	return time.Duration(rand(int64(d) + 1))
}

// Validate checks the settings.
func (s Settings) Validate() error {
	if s.Grace != nil && *s.Grace < 0 {
		return errors.New("grace must not be negative")
	}
	if s.Retention < 0 || s.Retention > 1000 {
		return errors.New("retention must be between 1 and 1000")
	}
	switch s.Strategy {
	case "", rotator.Dual, rotator.Alternating, rotator.InPlace, rotator.Reissue:
	default:
		return fmt.Errorf("unknown strategy %q (want dual, alternating, in_place or reissue, or leave it empty for the rotator's best)", s.Strategy)
	}
	if s.Backoff.Base < 0 || s.Backoff.Cap < 0 || s.Backoff.Attempts < 0 || s.Backoff.Budget < 0 {
		return errors.New("backoff base, cap, attempts and budget must not be negative")
	}
	for i, p := range s.Policies {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("policy %d (%s): %w", i+1, p.Kind, err)
		}
	}
	return nil
}

// Policy kinds.
const (
	Periodic     = "periodic"
	BeforeExpiry = "before_expiry"
	Scheduled    = "scheduled"
	Manual       = "manual"
)

// Policy is one rule deciding when a credential rotates.
type Policy struct {
	Kind string `json:"kind"`
	// periodic
	Interval Duration `json:"interval,omitempty"`
	// Jitter spreads rotations *earlier* than due (never later), so a compliance
	// maximum holds.
	Jitter Duration `json:"jitter,omitempty"`
	// before_expiry: rotate when Fraction of the secret's lifetime has passed
	// (default 0.8), and no later than MinRemaining before expiry.
	Fraction     float64  `json:"fraction,omitempty"`
	MinRemaining Duration `json:"min_remaining,omitempty"`
	// scheduled: a cron expression (UTC) and a window after each firing in which
	// the rotation may start; a firing missed by more than Window waits for the next.
	Cron   string   `json:"cron,omitempty"`
	Window Duration `json:"window,omitempty"`
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate checks one policy.
func (p Policy) Validate() error {
	switch p.Kind {
	case Periodic:
		if p.Interval <= 0 {
			return errors.New("periodic needs an interval > 0")
		}
		if p.Jitter < 0 || p.Jitter >= p.Interval {
			return errors.New("jitter must be >= 0 and smaller than the interval")
		}
	case BeforeExpiry:
		if p.Fraction < 0 || p.Fraction >= 1 {
			return errors.New("fraction must be in (0, 1)")
		}
		if p.MinRemaining < 0 {
			return errors.New("min_remaining must not be negative")
		}
	case Scheduled:
		if _, err := cronParser.Parse(p.Cron); err != nil {
			return fmt.Errorf("invalid cron expression %q: %w", p.Cron, err)
		}
		if p.Window < 0 {
			return errors.New("window must not be negative")
		}
	case Manual:
	default:
		return fmt.Errorf("unknown policy kind %q (want periodic, before_expiry, scheduled or manual)", p.Kind)
	}
	return nil
}

// DueInput is what NextDue needs to know about a credential.
type DueInput struct {
	ID            string
	LastRotatedAt time.Time  // when current became current
	CreatedAt     time.Time  // when the current version's secret was created
	ExpiresAt     *time.Time // expiry of the current version, if known
	Now           time.Time
}

// NextDue returns when the credential should rotate next, nil if never (manual
// only). With several policies, the earliest wins. Jitter is deterministic per
// credential and rotation, so a restart computes the same time.
func (s Settings) NextDue(in DueInput) *time.Time {
	var best *time.Time
	take := func(t time.Time) {
		if best == nil || t.Before(*best) {
			t := t.UTC()
			best = &t
		}
	}
	for _, p := range s.Policies {
		switch p.Kind {
		case Periodic:
			due := in.LastRotatedAt.Add(time.Duration(p.Interval))
			if p.Jitter > 0 {
				due = due.Add(-jitter(in.ID, in.LastRotatedAt, time.Duration(p.Jitter)))
			}
			take(due)
		case BeforeExpiry:
			if in.ExpiresAt == nil {
				continue
			}
			f := p.Fraction
			if f == 0 {
				f = DefaultFraction
			}
			life := in.ExpiresAt.Sub(in.CreatedAt)
			due := in.CreatedAt.Add(time.Duration(float64(life) * f))
			if latest := in.ExpiresAt.Add(-time.Duration(p.MinRemaining)); latest.Before(due) {
				due = latest
			}
			take(due)
		case Scheduled:
			sched, err := cronParser.Parse(p.Cron)
			if err != nil {
				continue
			}
			// The next firing after the last rotation; if that firing is already
			// past its window, the next one after now.
			next := sched.Next(in.LastRotatedAt.UTC())
			if p.Window > 0 && in.Now.After(next.Add(time.Duration(p.Window))) {
				next = sched.Next(in.Now.UTC())
			}
			take(next)
		}
	}
	return best
}

// InWindow reports whether a scheduled policy allows a rotation starting at now
// for a firing at due. Other policies are always in window.
func (s Settings) InWindow(due, now time.Time) bool {
	for _, p := range s.Policies {
		if p.Kind == Scheduled && p.Window > 0 {
			sched, err := cronParser.Parse(p.Cron)
			if err != nil {
				continue
			}
			if fire := sched.Next(due.Add(-time.Second)); fire.Equal(due) && now.After(due.Add(time.Duration(p.Window))) {
				return false
			}
		}
	}
	return true
}

// jitter returns a deterministic duration in [0, max) for one credential and cycle.
func jitter(id string, cycle time.Time, max time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte(cycle.UTC().Format(time.RFC3339Nano)))
	return time.Duration(h.Sum64() % uint64(max))
}
