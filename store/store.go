// Package store defines the storage interface of nebula-credential.
//
// A Store only ever sees ciphertext: secret fields are sealed by the keyring
// before they reach it. Two implementations exist, store/sqlite (the embedded
// default) and store/postgres (shared deployments); both pass the conformance
// suite in store/storetest.
//
// All reads and writes happen inside a transaction: View for reads, Update for
// writes. Update transactions are serializable: an implementation either runs
// them one at a time (SQLite) or retries fn on a serialization failure
// (PostgreSQL), so fn must have no side effects outside the Tx.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Implementations return them (possibly wrapped).
var (
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: an insert collided with an existing row (for example a version
	// number already taken by a concurrent writer).
	ErrConflict = errors.New("conflict")
	// ErrRotationInProgress: CreateRotation found another open rotation for the credential.
	ErrRotationInProgress = errors.New("rotation in progress")
	// ErrFenced: a journal write carried a fencing token that is no longer current:
	// another process has taken over the rotation.
	ErrFenced = errors.New("fenced: rotation lease lost")
	// ErrBusy: Update gave up after its bounded retries of transactions that
	// lost to concurrent ones; nothing was written. Try again shortly.
	ErrBusy = errors.New("store busy: too many concurrent conflicting writes")
)

// Store is a transactional credential store.
type Store interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write, serializable transaction and commits it
	// durably if fn returns nil. fn may be called more than once.
	Update(ctx context.Context, fn func(Tx) error) error
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// RelaxedUpdater is implemented by stores that can commit without waiting
// for the disk (SQLite synchronous=NORMAL in WAL mode, PostgreSQL
// synchronous_commit=off). Such a transaction is atomic and ordered like any
// other: it survives the process being killed, and a later durable commit
// makes it durable too; only an OS crash or power failure may lose it, whole.
// The rotation engine uses it for journal steps that recovery recomputes.
type RelaxedUpdater interface {
	UpdateRelaxed(ctx context.Context, fn func(Tx) error) error
}

// Tx is one transaction. Methods that write fail with an error in a View.
type Tx interface {
	// Meta is a small key/value table for store-wide settings (key mode, salts).
	GetMeta(ctx context.Context, key string) ([]byte, error) // ErrNotFound
	SetMeta(ctx context.Context, key string, value []byte) error

	// KEKs are key-encryption keys, each stored wrapped by the root key.
	PutKEK(ctx context.Context, k *KEK) error // insert or replace by ID
	ListKEKs(ctx context.Context) ([]KEK, error)
	DeleteKEK(ctx context.Context, id string) error
	// CountVersionsByKEK returns how many data keys kekID wraps: of versions
	// and of notification subscriptions.
	CountVersionsByKEK(ctx context.Context, kekID string) (int, error)

	// Credentials. GetCredential returns soft-deleted credentials too (check DeletedAt).
	GetCredential(ctx context.Context, id string) (*Credential, error) // ErrNotFound
	// GetCredentialWrite is GetCredential plus, in the same statement, what
	// writing a new version of the credential needs (see WriteInfo).
	GetCredentialWrite(ctx context.Context, id string) (*Credential, WriteInfo, error)
	// GetCredentialState reads what serving a credential needs — its row,
	// its open rotation's step, one version (by number, or else by label;
	// Version is nil if there is none) and the labels that name that version
	// — in one statement. ErrNotFound when the credential does not exist.
	GetCredentialState(ctx context.Context, id, label string, version int) (*CredentialState, error)
	PutCredential(ctx context.Context, c *Credential) error // insert or replace
	// ListCredentials returns credentials ordered by ID, after opts.After, at most opts.Limit.
	ListCredentials(ctx context.Context, opts ListOptions) ([]Credential, error)
	// PurgeCredential deletes a credential with all its versions, labels, rotations
	// and history. It is idempotent.
	PurgeCredential(ctx context.Context, id string) error
	// DueCredentials returns non-deleted credentials whose NextDueAt is at or before
	// now and which have no open rotation, in order of NextDueAt, at most limit.
	DueCredentials(ctx context.Context, now time.Time, limit int) ([]Credential, error)

	// Versions.
	InsertVersion(ctx context.Context, v *Version) error // ErrConflict if the number is taken
	GetVersion(ctx context.Context, id string, version int) (*Version, error)
	// ListVersions returns every version of a credential in ascending order.
	ListVersions(ctx context.Context, id string) ([]Version, error)
	// VersionNumbers returns the numbers of every version of a credential in
	// ascending order, without reading the versions (pruning).
	VersionNumbers(ctx context.Context, id string) ([]int, error)
	// ListVersionKeys pages through every version of every credential, ordered by
	// (CredentialID, Version), strictly after the given position; Ciphertext is left empty.
	ListVersionKeys(ctx context.Context, afterID string, afterVersion int, limit int) ([]Version, error)
	// UpdateVersionKey replaces the wrapped data key of one version (rewrap).
	UpdateVersionKey(ctx context.Context, id string, version int, kekID string, wrappedKey []byte) error
	DeleteVersion(ctx context.Context, id string, version int) error
	// MaxVersion is the highest version number ever inserted for id (0 if none).
	MaxVersion(ctx context.Context, id string) (int, error)

	// Labels: a label sits on at most one version of a credential.
	Labels(ctx context.Context, id string) (map[string]int, error)
	// SetLabel moves label to version; version 0 removes the label.
	SetLabel(ctx context.Context, id, label string, version int) error

	// Rotations are the journal. At most one rotation per credential is open
	// (Open == true); CreateRotation enforces it with ErrRotationInProgress.
	CreateRotation(ctx context.Context, r *Rotation) error // sets r.ID
	GetRotation(ctx context.Context, id int64) (*Rotation, error)
	OpenRotation(ctx context.Context, credentialID string) (*Rotation, error) // ErrNotFound
	// UpdateRotation writes r if the stored fence equals r.Fence, else ErrFenced.
	UpdateRotation(ctx context.Context, r *Rotation) error
	// ClaimRotation takes the lease of an open rotation if it is free (expired at
	// now) or already held by owner: it increments Fence, sets the lease and
	// returns the row. ErrFenced if another owner holds a live lease.
	ClaimRotation(ctx context.Context, id int64, owner string, now, leaseUntil time.Time) (*Rotation, error)
	// ListRotations returns rotations newest first.
	ListRotations(ctx context.Context, f RotationFilter) ([]Rotation, error)
	// DueRotations returns open rotations whose DueAt is at or before now and whose
	// lease has expired, in order of DueAt, at most limit.
	DueRotations(ctx context.Context, now time.Time, limit int) ([]Rotation, error)

	// History of a credential, newest first.
	AppendHistory(ctx context.Context, h *HistoryEntry) error
	ListHistory(ctx context.Context, credentialID string, limit int) ([]HistoryEntry, error)

	// Audit log. AppendAudit assigns Seq = last Seq + 1 and stores the record as given;
	// the caller computes the hash chain from LastAudit in the same transaction.
	AppendAudit(ctx context.Context, a *AuditRecord) error
	LastAudit(ctx context.Context) (*AuditRecord, error) // ErrNotFound when empty
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]AuditRecord, error)

	// Tokens for the server's access control; only the hash of a token is stored.
	PutToken(ctx context.Context, t *Token) error
	GetTokenByHash(ctx context.Context, hash []byte) (*Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error

	// Events feed the watch stream; Seq is assigned on append and strictly increases.
	AppendEvent(ctx context.Context, e *Event) error
	ListEvents(ctx context.Context, afterSeq int64, limit int) ([]Event, error)

	// Consumers are the processes that receive a credential (agents, pools)
	// and the version each last confirmed. One row per (consumer, credential).
	// PutConsumer inserts or replaces the row; FirstSeen of an existing row is
	// kept. ListConsumers returns the rows of one credential ("" for all),
	// ordered by credential ID, then consumer ID. DeleteConsumersSeenBefore
	// drops rows whose LastSeen is before t and returns how many; it is
	// idempotent.
	PutConsumer(ctx context.Context, c *Consumer) error
	ListConsumers(ctx context.Context, credentialID string) ([]Consumer, error)
	DeleteConsumersSeenBefore(ctx context.Context, t time.Time) (int, error)
	// Instances are the server processes sharing the store, each upserting
	// its row at every heartbeat. PutInstance inserts or replaces the row by
	// ID, keeping StartedAt of an existing row. ListInstances is ordered by
	// ID. DeleteInstancesSeenBefore drops rows whose LastHeartbeat is before
	// t and returns how many; it is idempotent.
	PutInstance(ctx context.Context, in *Instance) error
	ListInstances(ctx context.Context) ([]Instance, error)
	DeleteInstancesSeenBefore(ctx context.Context, t time.Time) (int, error)
	// Notifications (package notify). AppendEvent also writes a copy of the
	// event to the outbox, in the same transaction, whenever at least one
	// subscription exists; the dispatcher fans it out into deliveries.
	PutSubscription(ctx context.Context, s *Subscription) error            // insert or replace by ID
	GetSubscription(ctx context.Context, id string) (*Subscription, error) // ErrNotFound
	ListSubscriptions(ctx context.Context) ([]Subscription, error)         // ordered by ID
	// DeleteSubscription deletes a subscription and its deliveries. Idempotent.
	DeleteSubscription(ctx context.Context, id string) error
	// ListOutbox returns the oldest outbox events (by Seq), at most limit.
	ListOutbox(ctx context.Context, limit int) ([]Event, error)
	// DeleteOutbox removes outbox events by Seq; missing ones are ignored.
	DeleteOutbox(ctx context.Context, seqs []int64) error
	// InsertDelivery inserts d and sets d.ID. It reports false, and changes
	// nothing, when (SubscriptionID, EventID) already exists.
	InsertDelivery(ctx context.Context, d *Delivery) (bool, error)
	GetDelivery(ctx context.Context, id int64) (*Delivery, error) // ErrNotFound
	// UpdateDelivery writes every field of d by ID. ErrNotFound if missing.
	UpdateDelivery(ctx context.Context, d *Delivery) error
	// ClaimDeliveries leases to owner, until leaseUntil, the pending
	// deliveries due at now whose lease has expired, oldest due first, at
	// most limit, and returns them.
	ClaimDeliveries(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]Delivery, error)
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// PruneDeliveries deletes delivered deliveries delivered before before
	// and returns how many. Deliveries of conditions (an event ID holding a
	// ':', such as "certificate_expiring:tls/web:v3"), which a periodic
	// check would report again once their row is gone, are kept until
	// conditionsBefore instead.
	PruneDeliveries(ctx context.Context, before, conditionsBefore time.Time) (int, error)
	NotifyStats(ctx context.Context) (*NotifyStats, error)
}

// KEK is a key-encryption key, wrapped by the root key (key file or passphrase).
type KEK struct {
	ID        string
	Wrapped   []byte
	CreatedAt time.Time
	RetiredAt *time.Time // set when a newer KEK took over; deleted once unused
}

// Credential is the per-credential row; versions hold the values.
type Credential struct {
	ID        string
	Type      string
	Settings  []byte // JSON rotation settings and policies (never secret)
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt *time.Time // soft delete
	NextDueAt *time.Time // next policy-driven rotation, indexed
}

// WriteInfo is what writing a new version of an existing credential needs
// besides its row (Tx.GetCredentialWrite).
type WriteInfo struct {
	Rotating   bool // a rotation is open on it (Tx.OpenRotation finds it)
	MaxVersion int  // as Tx.MaxVersion
	Current    int  // the version labelled current, 0 if none
}

// CredentialState is the hot-path view of a credential (see GetCredentialState).
type CredentialState struct {
	Type      string
	DeletedAt *time.Time
	NextDueAt *time.Time
	// Open is the open rotation with only Step, GraceEndsAt and Data filled, or nil.
	Open *Rotation
	// Version is the version asked for, or nil if it does not exist.
	Version *Version
	// Labels are the labels (of current, pending and previous) that name
	// Version, sorted; nil if none does or Version is nil.
	Labels []string
}

// Version is one immutable snapshot of a credential's values.
type Version struct {
	CredentialID string
	Version      int
	Fields       []byte // JSON of the non-secret fields (plaintext)
	KEKID        string // which KEK wraps DataKey
	DataKey      []byte // the per-version data key, wrapped by the KEK
	Ciphertext   []byte // the secret fields, sealed with the data key
	CreatedAt    time.Time
	ExpiresAt    *time.Time // when the secret stops working on the target, if known
}

// ListOptions selects credentials.
type ListOptions struct {
	Prefix         string
	Type           string
	After          string // exclusive cursor: the last ID of the previous page
	Limit          int    // 0 means no limit
	IncludeDeleted bool
}

// Rotation is one journaled transaction (a rotation, rollback or restore).
type Rotation struct {
	ID           int64
	CredentialID string
	Kind         string // "rotate", "rollback", "restore"
	Step         string // see package rotation for the state machine
	Open         bool
	Strategy     string
	FromVersion  int
	ToVersion    int
	Attempt      int
	ErrorClass   string
	LastError    string // sanitized: never contains a secret
	Actor        string
	Reason       string
	Data         []byte // JSON, step-specific and rotator state (never secret)
	GraceEndsAt  *time.Time
	DueAt        time.Time // when the scheduler should work on this row next
	StartedAt    time.Time
	UpdatedAt    time.Time
	FinishedAt   *time.Time
	LeaseOwner   string
	LeaseUntil   time.Time
	Fence        int64
}

// RotationFilter selects rotations.
type RotationFilter struct {
	CredentialID string // "" for all
	OpenOnly     bool
	Limit        int
}

// HistoryEntry records an event in a credential's life: put, rotation, rollback, delete.
type HistoryEntry struct {
	ID           int64
	CredentialID string
	At           time.Time
	Action       string
	Actor        string
	Reason       string
	FromVersion  int
	ToVersion    int
	RotationID   int64
	Outcome      string
	Detail       string // never secret
	DurationMS   int64
}

// AuditRecord is one link of the hash-chained audit log.
type AuditRecord struct {
	Seq      int64
	At       time.Time
	Payload  []byte // canonical JSON of the entry
	PrevHash []byte
	Hash     []byte
}

// Token is an API bearer token; only its hash is stored.
type Token struct {
	ID        string
	Name      string
	Hash      []byte
	Grants    []byte // JSON list of grants
	CreatedAt time.Time
	ExpiresAt *time.Time
}

// Event is a change notification for watchers.
type Event struct {
	Seq          int64
	At           time.Time
	Kind         string // "current_changed", "rotation_failed", "rolled_back", ...
	CredentialID string
	Version      int
	Detail       []byte // JSON, never secret
}

// Instance is one server process using the store, as of its last heartbeat.
type Instance struct {
	ID            string // the lease owner name of its rotation engine
	Host          string
	Address       string // where it listens, as configured
	Version       string // of nebula-credential
	StartedAt     time.Time
	LastHeartbeat time.Time
}

// Consumer is what one consumer of a credential last reported: the version it
// delivered (an agent) or holds exclusively (a pool whose drain finished).
type Consumer struct {
	ID           string // chosen by the consumer, stable across its restarts
	CredentialID string
	Name         string
	Host         string
	Kind         string // "agent", "pool", ...
	Version      int    // the version it confirmed
	ActionOK     bool   // the action after delivery succeeded (true when there is none)
	ActionError  string // why it failed; never secret
	TokenID      string // the token that reported
	FirstSeen    time.Time
	LastSeen     time.Time
	// Refresh is the longest the consumer serves a version it cached before
	// it reads again (a cache TTL, a poll interval); DrainTimeout, for a
	// pool, how long connections on an old version may stay open. Stored to
	// the millisecond; 0 = not reported.
	Refresh      time.Duration
	DrainTimeout time.Duration
}
