// Package consumer keeps applications up while their credentials rotate.
//
// Which API to reach for:
//
//   - [Source] is where a consumer reads the current version of a credential
//     and hears that it moved. [FromManager] adapts an in-process
//     *credential.Manager; the HTTP client is the other implementation.
//   - consumer/pgxswap: a pgxpool.Pool whose new connections always log in with
//     the current version, and whose connections on an older version are
//     drained: idle ones at once, busy ones when released, the rest
//     force-closed after a drain timeout.
//   - consumer/sqlswap: the same for database/sql, as a driver.Connector that
//     works with pgx's stdlib and go-sql-driver/mysql (or any driver whose dial
//     function can be set).
//   - consumer/bluegreen: moves traffic from a *sql.DB on the old credential to
//     one on the new in steps (10/25/50/75/100 %), watches the new side's error
//     rate, and rolls the rotation back when it is too high.
//
// The rotation protocol keeps the previous version valid for a grace period
// (default 5 minutes): drains and blue-green ramps must finish inside it.
package consumer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nebula-credential/nebula-credential/secret"
)

// Credential is one version of a credential as a consumer sees it. Fields and
// Secret are shared with the Source's cache: do not modify them.
type Credential struct {
	ID      string
	Type    string
	Version int
	// Fields are the non-secret fields (host, port, database, username, ...).
	Fields map[string]any
	// Secret holds the secret fields (password, token, ...).
	Secret secret.Map
}

// Field returns a non-secret field as a string: "" when absent, numbers
// without exponent (JSON numbers arrive as float64).
func (c Credential) Field(name string) string {
	switch v := c.Fields[name].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// Change tells a watcher that the current version of a credential moved
// (a rotation committed, a rollback, a put or a restore).
type Change struct {
	ID string
	// Version is the version the event announced. It is a hint: read
	// Source.Current for the authoritative current version, since changes may
	// be coalesced.
	Version int
	// Kind is the event kind, e.g. "current_changed" or "rolled_back".
	Kind string
	At   time.Time
}

// Source gives consumers the current version of a credential and tells them
// when it moves. Implementations: [ManagerSource] (in-process) and the HTTP
// client. They must be safe for concurrent use.
type Source interface {
	// Current returns the current version of credential id. It may be served
	// from a cache, but once a Change for id has been delivered on a Watch
	// channel, Current must return that version or a later one. Errors wrap
	// credential.ErrNotFound when id does not exist.
	Current(ctx context.Context, id string) (Credential, error)

	// Watch delivers a Change every time the current version of id moves,
	// until ctx is done; the channel is then closed. The channel holds at most
	// one undelivered change: a slow receiver loses intermediate changes but
	// never the latest. A channel closed while ctx is still live means the
	// stream broke: call Watch again (after Current, to catch up).
	Watch(ctx context.Context, id string) (<-chan Change, error)
}

// UnusedReporter is optionally implemented by a Source: a consumer reports
// that it no longer holds any connection on version of credential id (its
// drain finished), so the engine may retire that version before the end of
// grace. Reporting is idempotent; a version may be reported again if it
// became current again in between.
type UnusedReporter interface {
	ReportUnused(ctx context.Context, id string, version int) error
}

// TimingReporter is optionally implemented by a Source that reports to a
// server: a pool (pgxswap, sqlswap) tells it, when it opens, the version it
// starts on and its drain timeout; the source reports them with its own
// refresh interval, so that policy set and doctor can warn about a grace
// period shorter than refresh plus drain timeout.
type TimingReporter interface {
	ReportTiming(ctx context.Context, id string, version int, drainTimeout time.Duration) error
}

// Drain is the outcome of draining one old version from a pool.
type Drain struct {
	ID      string
	Version int
	// Started is when the version stopped being current for the pool.
	Started time.Time
	// Took is how long the last connection on Version took to close.
	Took time.Duration
	// ForceClosed counts connections closed at the drain timeout.
	ForceClosed int
}
