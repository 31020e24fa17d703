// Package notify delivers webhook notifications of rotation outcomes and
// credential conditions, at least once, through the store's outbox.
//
// Reach for Service to manage subscriptions (Add, List, Remove, Test,
// DeadLetters, Replay), Dispatcher to deliver (run one per server; several
// servers sharing a store cooperate through delivery leases), and Verify in
// a receiver to check the X-Nebula-Signature header.
//
// How a notification travels: the store writes a copy of every stored event
// to the outbox in the event's own transaction. The dispatcher fans each
// outbox row out into one delivery per matching subscription (kind and
// prefix) and deletes the row, in one transaction. Conditions that are not
// events (grace ending soon, a certificate expiring, a credential overdue for
// its policy, consumers left on the old version) are found by a periodic
// check that inserts deliveries under deterministic event IDs, so a
// condition is reported once per subscription. A delivery is leased to one
// dispatcher at a time, sent with the event ID as Idempotency-Key, retried
// with exponential backoff and full jitter, and moved to the dead-letter
// queue after MaxAttempts failed attempts; Replay puts it back.
//
// Payloads never contain a secret value: they are built from event metadata
// only. A subscription's URL and signing secret are sealed in the store like
// credential versions; listings and logs show the URL redacted (RedactURL).
// See docs/notifications.md for the payload schema and the signature format.
package notify

import (
	"errors"
	"slices"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Kinds of notification. The strings are part of the stable payload schema.
const (
	KindCommitted      = "rotation_committed"   // a rotation made a new version current
	KindFailed         = "rotation_failed"      // a rotation failed before touching the target
	KindRolledBack     = "rolled_back"          // a rotation was rolled back (automatically or by a person)
	KindNeedsAttention = "needs_attention"      // a rotation stopped and a person must act
	KindReauthRequired = "reauth_required"      // the provider rejected the refresh token: re-authorise
	KindGraceEnding    = "grace_ending"         // a grace period ends within the subscription's warning window
	KindCertExpiring   = "certificate_expiring" // the current version expires within the subscription's N days
	KindOverdue        = "policy_overdue"       // a credential is past its policy's rotation due time
	KindConsumersStale = "consumers_behind"     // grace ended while consumers still reported the old version
	KindTest           = "test"                 // sent by `notify test`
)

// Kinds lists every kind a subscription may ask for (KindTest is always sent).
func Kinds() []string {
	return []string{KindCommitted, KindFailed, KindRolledBack, KindNeedsAttention, KindReauthRequired,
		KindGraceEnding, KindCertExpiring, KindOverdue, KindConsumersStale}
}

// Formats of the request body.
const (
	FormatJSON  = "json"  // the generic schema (Payload)
	FormatSlack = "slack" // a Slack incoming-webhook message {"text": ...}
)

// Errors callers branch on.
var (
	// ErrInvalid: a subscription or request does not validate.
	ErrInvalid = errors.New("invalid notification subscription")
	// ErrNotFound: no such subscription or delivery (it is store.ErrNotFound).
	ErrNotFound = store.ErrNotFound
	// ErrBadSignature: Verify rejected a request.
	ErrBadSignature = errors.New("webhook signature does not verify")
)

// Subscription is a webhook subscription as listed: without its URL's
// secrets and without its signing secret.
type Subscription struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	URL        string    `json:"url"` // redacted (RedactURL)
	Prefix     string    `json:"prefix"`
	Events     []string  `json:"events"`
	Format     string    `json:"format"`
	ExpiryDays int       `json:"expiry_days"` // certificate_expiring: warn this many days ahead
	GraceWarn  Duration  `json:"grace_warn"`  // grace_ending: warn this long before grace ends
	OverdueFor Duration  `json:"overdue_for"` // policy_overdue: report this long after the due time
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Wants reports whether s subscribes to kind on credential id.
func (s *Subscription) Wants(kind, id string) bool {
	if kind == KindTest {
		return true
	}
	return slices.Contains(s.Events, kind) && covers(s.Prefix, id)
}

// Duration is a time.Duration written in JSON as a Go duration string ("1h").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// covers is acl.Covers without the dependency: "prod/db" covers "prod/db"
// and "prod/db/x" but not "prod/dbx"; "" covers everything.
func covers(prefix, id string) bool {
	for len(prefix) > 0 && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}
	if prefix == "" || prefix == "*" || id == prefix {
		return true
	}
	return len(id) > len(prefix) && id[:len(prefix)] == prefix && id[len(prefix)] == '/'
}
