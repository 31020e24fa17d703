package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Keys seals and opens the secret part of a subscription (its URL and
// signing secret). credential.Manager.SubscriptionKeys satisfies it.
type Keys interface {
	Seal(plaintext, aad []byte) (kekID string, wrappedKey, ciphertext []byte, err error)
	// Open fails if the blob was altered or moved to another subscription.
	Open(kekID string, wrappedKey, ciphertext, aad []byte) ([]byte, error)
}

// Service manages subscriptions and the dead-letter queue. The server's API
// and the CLI's local mode both use it; it does no authorisation.
type Service struct {
	Store store.Store
	Keys  Keys
	// Clock returns the time; default time.Now.
	Clock func() time.Time
}

// Defaults of the per-subscription settings.
const (
	DefaultExpiryDays = 14
	DefaultGraceWarn  = time.Hour
	DefaultOverdueFor = time.Hour
)

// AddRequest describes a new subscription.
type AddRequest struct {
	Name   string
	URL    secret.Value // http or https; may hold a credential (it is sealed)
	Prefix string       // credential ID prefix; "" for all
	Events []string     // kinds (Kinds()); empty for all
	Format string       // FormatJSON (default) or FormatSlack
	// ExpiryDays, GraceWarn and OverdueFor tune certificate_expiring,
	// grace_ending and policy_overdue; zero means the default.
	ExpiryDays int
	GraceWarn  time.Duration
	OverdueFor time.Duration
}

// config is the non-secret part stored in store.Subscription.Config.
type config struct {
	Name       string   `json:"name,omitempty"`
	URL        string   `json:"url"` // redacted
	Events     []string `json:"events"`
	Format     string   `json:"format"`
	ExpiryDays int      `json:"expiry_days"`
	GraceWarn  Duration `json:"grace_warn"`
	OverdueFor Duration `json:"overdue_for"`
}

// sealed is the secret part.
type sealed struct {
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

// SealAAD is the associated data that binds a subscription's sealed part
// to its ID (what Keys.Seal and Keys.Open get).
func SealAAD(id string) []byte { return []byte("nebula-credential notify subscription v1\x00" + id) }

func subAAD(id string) []byte { return SealAAD(id) }

func (s *Service) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}

// ValidateURL checks a receiver URL: absolute http or https with a host.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: the URL must be absolute http:// or https:// with a host (got %s)", ErrInvalid, RedactURL(raw))
	}
	return nil
}

func (r *AddRequest) validate() error {
	if err := ValidateURL(r.URL.Reveal()); err != nil {
		return err
	}
	if len(r.Name) > 100 {
		return fmt.Errorf("%w: name longer than 100 characters", ErrInvalid)
	}
	if r.Format == "" {
		r.Format = FormatJSON
	}
	if r.Format != FormatJSON && r.Format != FormatSlack {
		return fmt.Errorf("%w: format %q: want json or slack", ErrInvalid, r.Format)
	}
	if len(r.Events) == 0 {
		r.Events = Kinds()
	}
	for _, k := range r.Events {
		if !slices.Contains(Kinds(), k) {
			return fmt.Errorf("%w: unknown event %q (want %s)", ErrInvalid, k, strings.Join(Kinds(), ", "))
		}
	}
	r.Prefix = strings.TrimSuffix(strings.TrimSuffix(r.Prefix, "*"), "/")
	if r.ExpiryDays < 0 || r.GraceWarn < 0 || r.OverdueFor < 0 {
		return fmt.Errorf("%w: expiry days, grace warning and overdue time must not be negative", ErrInvalid)
	}
	if r.ExpiryDays == 0 {
		r.ExpiryDays = DefaultExpiryDays
	}
	if r.GraceWarn == 0 {
		r.GraceWarn = DefaultGraceWarn
	}
	if r.OverdueFor == 0 {
		r.OverdueFor = DefaultOverdueFor
	}
	return nil
}

// Add creates a subscription and returns it with its signing secret, which
// is shown this once: receivers need it to verify signatures.
func (s *Service) Add(ctx context.Context, req AddRequest) (*Subscription, secret.Value, error) {
	if err := req.validate(); err != nil {
		return nil, secret.Value{}, err
	}
	var rb [8]byte
	rand.Read(rb[:])
	id := "sub_" + hex.EncodeToString(rb[:])
	var kb [32]byte
	rand.Read(kb[:])
	key := "whsec_" + base64.RawURLEncoding.EncodeToString(kb[:])
	sort := slices.Clone(req.Events)
	slices.Sort(sort)
	cfg := config{Name: req.Name, URL: RedactURL(req.URL.Reveal()), Events: slices.Compact(sort), Format: req.Format,
		ExpiryDays: req.ExpiryDays, GraceWarn: Duration(req.GraceWarn), OverdueFor: Duration(req.OverdueFor)}
	cb, _ := json.Marshal(cfg)
	sb, _ := json.Marshal(sealed{URL: req.URL.Reveal(), Secret: key})
	kek, dk, ct, err := s.Keys.Seal(sb, subAAD(id))
	if err != nil {
		return nil, secret.Value{}, fmt.Errorf("notify add: seal: %w", err)
	}
	now := s.now().UTC()
	row := &store.Subscription{ID: id, Prefix: req.Prefix, Config: cb, KEKID: kek, DataKey: dk, Ciphertext: ct, CreatedAt: now, UpdatedAt: now}
	if err := s.Store.Update(ctx, func(tx store.Tx) error { return tx.PutSubscription(ctx, row) }); err != nil {
		return nil, secret.Value{}, fmt.Errorf("notify add: %w", err)
	}
	sub, err := decodeSub(row)
	return sub, secret.New(key), err
}

func decodeSub(row *store.Subscription) (*Subscription, error) {
	var c config
	if err := json.Unmarshal(row.Config, &c); err != nil {
		return nil, fmt.Errorf("subscription %s: config: %w", row.ID, err)
	}
	return &Subscription{ID: row.ID, Name: c.Name, URL: c.URL, Prefix: row.Prefix, Events: c.Events, Format: c.Format,
		ExpiryDays: c.ExpiryDays, GraceWarn: c.GraceWarn, OverdueFor: c.OverdueFor, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt}, nil
}

// List returns every subscription, ordered by ID.
func (s *Service) List(ctx context.Context) ([]Subscription, error) {
	var rows []store.Subscription
	if err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		rows, err = tx.ListSubscriptions(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("notify list: %w", err)
	}
	out := make([]Subscription, 0, len(rows))
	for i := range rows {
		sub, err := decodeSub(&rows[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *sub)
	}
	return out, nil
}

// Get returns one subscription; ErrNotFound if it does not exist.
func (s *Service) Get(ctx context.Context, id string) (*Subscription, error) {
	var row *store.Subscription
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		row, err = tx.GetSubscription(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: subscription %q (list them with `nebula-credential notify list`)", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return decodeSub(row)
}

// Remove deletes a subscription with its deliveries, dead letters included.
// ErrNotFound if it does not exist.
func (s *Service) Remove(ctx context.Context, id string) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.GetSubscription(ctx, id); errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: subscription %q (list them with `nebula-credential notify list`)", ErrNotFound, id)
		} else if err != nil {
			return err
		}
		return tx.DeleteSubscription(ctx, id)
	})
}

// Delivery is a delivery as listed.
type Delivery struct {
	ID             int64      `json:"id"`
	SubscriptionID string     `json:"subscription_id"`
	EventID        string     `json:"event_id"`
	Kind           string     `json:"kind"`
	CredentialID   string     `json:"credential_id,omitempty"`
	State          string     `json:"state"` // pending, delivered or dead
	Attempts       int        `json:"attempts"`
	LastStatus     int        `json:"last_status,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	DueAt          *time.Time `json:"due_at,omitempty"`
	DeliveredAt    *time.Time `json:"delivered_at,omitempty"`
}

func listDelivery(d *store.Delivery) Delivery {
	out := Delivery{ID: d.ID, SubscriptionID: d.SubscriptionID, EventID: d.EventID, Kind: d.Kind, CredentialID: d.CredentialID,
		State: d.State, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError, CreatedAt: d.CreatedAt, DeliveredAt: d.DeliveredAt}
	if d.State == store.DeliveryPending {
		due := d.DueAt
		out.DueAt = &due
	}
	return out
}

// Test queues a test notification to subscription id and returns its
// delivery; the dispatcher sends it like any other.
func (s *Service) Test(ctx context.Context, id string) (*Delivery, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	var rb [8]byte
	rand.Read(rb[:])
	now := s.now().UTC()
	p := &Payload{Schema: Schema, ID: "test_" + hex.EncodeToString(rb[:]), Kind: KindTest, At: now}
	p.Summary = summary(p)
	pb, _ := json.Marshal(p)
	d := &store.Delivery{SubscriptionID: id, EventID: p.ID, Kind: KindTest, Payload: pb, State: store.DeliveryPending,
		CreatedAt: now, UpdatedAt: now, DueAt: now, LeaseUntil: now}
	if err := s.Store.Update(ctx, func(tx store.Tx) error { _, err := tx.InsertDelivery(ctx, d); return err }); err != nil {
		return nil, fmt.Errorf("notify test: %w", err)
	}
	out := listDelivery(d)
	return &out, nil
}

// GetDelivery returns one delivery; ErrNotFound if it does not exist.
func (s *Service) GetDelivery(ctx context.Context, id int64) (*Delivery, error) {
	var d *store.Delivery
	err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		d, err = tx.GetDelivery(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: delivery %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	out := listDelivery(d)
	return &out, nil
}

// Deliveries lists deliveries by filter (State store.DeliveryDead for the
// dead-letter queue), ordered by ID.
func (s *Service) Deliveries(ctx context.Context, f store.DeliveryFilter) ([]Delivery, error) {
	var ds []store.Delivery
	if err := s.Store.View(ctx, func(tx store.Tx) error {
		var err error
		ds, err = tx.ListDeliveries(ctx, f)
		return err
	}); err != nil {
		return nil, fmt.Errorf("notify deliveries: %w", err)
	}
	out := make([]Delivery, 0, len(ds))
	for i := range ds {
		out = append(out, listDelivery(&ds[i]))
	}
	return out, nil
}

// Replay puts dead deliveries back in the queue with a fresh attempt count:
// the ones listed in ids, or with ids empty every dead delivery of
// subscriptionID ("" for all). It returns the deliveries replayed; an ID
// that is not dead is an error and replays nothing.
func (s *Service) Replay(ctx context.Context, subscriptionID string, ids []int64) ([]Delivery, error) {
	var out []Delivery
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		out = out[:0]
		var ds []store.Delivery
		if len(ids) == 0 {
			var err error
			ds, err = tx.ListDeliveries(ctx, store.DeliveryFilter{State: store.DeliveryDead, SubscriptionID: subscriptionID})
			if err != nil {
				return err
			}
		}
		for _, id := range ids {
			d, err := tx.GetDelivery(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%w: delivery %d (list dead letters with `nebula-credential notify dead-letters`)", ErrNotFound, id)
			}
			if err != nil {
				return err
			}
			if d.State != store.DeliveryDead {
				return fmt.Errorf("%w: delivery %d is %s, not dead: only dead letters can be replayed", ErrInvalid, id, d.State)
			}
			ds = append(ds, *d)
		}
		now := s.now().UTC()
		for i := range ds {
			d := &ds[i]
			d.State, d.Attempts, d.DueAt, d.UpdatedAt, d.LeaseOwner, d.LeaseUntil = store.DeliveryPending, 0, now, now, "", now
			if err := tx.UpdateDelivery(ctx, d); err != nil {
				return err
			}
			out = append(out, listDelivery(d))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("notify replay: %w", err)
	}
	return out, nil
}

// target is what the dispatcher needs to send to a subscription.
type target struct {
	sub    *Subscription
	url    string
	secret []byte
}

func (s *Service) openTarget(row *store.Subscription) (*target, error) {
	sub, err := decodeSub(row)
	if err != nil {
		return nil, err
	}
	pb, err := s.Keys.Open(row.KEKID, row.DataKey, row.Ciphertext, subAAD(row.ID))
	if err != nil {
		return nil, fmt.Errorf("subscription %s: open sealed URL and secret: %w", row.ID, err)
	}
	var sd sealed
	if err := json.Unmarshal(pb, &sd); err != nil {
		return nil, fmt.Errorf("subscription %s: sealed part: %w", row.ID, err)
	}
	return &target{sub: sub, url: sd.URL, secret: []byte(sd.Secret)}, nil
}
