package store

import "time"

// Delivery states.
const (
	DeliveryPending   = "pending"   // waiting for its due time or in flight
	DeliveryDelivered = "delivered" // the receiver answered 2xx
	DeliveryDead      = "dead"      // gave up after the last attempt: the dead-letter queue
)

// Subscription is a webhook subscription of package notify. The store sees
// its URL and signing secret only sealed (KEKID, DataKey, Ciphertext, as for
// a Version); Config is the non-secret rest, as JSON owned by package notify.
type Subscription struct {
	ID         string
	Prefix     string // credential ID prefix filter ("" for all)
	Config     []byte // JSON, never secret
	KEKID      string
	DataKey    []byte
	Ciphertext []byte
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Delivery is one notification for one subscription: the unit the
// dispatcher sends, retries and, after its last attempt, dead-letters.
// (SubscriptionID, EventID) is unique: inserting the same pair twice keeps
// the first, which makes fan-out and condition scans idempotent.
type Delivery struct {
	ID             int64
	SubscriptionID string
	EventID        string // the idempotency key sent with every attempt
	Kind           string
	CredentialID   string
	Payload        []byte // the generic JSON payload, never secret
	State          string // DeliveryPending, DeliveryDelivered or DeliveryDead
	Attempts       int
	LastStatus     int    // HTTP status of the last attempt (0: no answer)
	LastError      string // never secret
	CreatedAt      time.Time
	UpdatedAt      time.Time
	DueAt          time.Time // next attempt, for pending deliveries
	DeliveredAt    *time.Time
	LeaseOwner     string
	LeaseUntil     time.Time
}

// DeliveryFilter selects deliveries, ordered by ID.
type DeliveryFilter struct {
	State          string // "" for all
	SubscriptionID string // "" for all
	After          int64  // exclusive cursor: the last ID of the previous page
	Limit          int    // 0 means no limit
}

// NotifyStats is what the notification metrics need, read in one statement.
type NotifyStats struct {
	Outbox  int        // events not yet fanned out
	Pending int        // deliveries not yet delivered
	Dead    int        // deliveries in the dead-letter queue
	Oldest  *time.Time // creation time of the oldest undelivered notification (outbox or pending)
}
