package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// DispatcherConfig configures a Dispatcher. The zero value of every field
// but Service means its default.
type DispatcherConfig struct {
	// Service holds the store, the keys and the clock. Required.
	Service *Service
	// Logger receives delivery failures; URLs are logged redacted. Default discards.
	Logger *slog.Logger
	// Client sends the requests. Default: no redirects followed, TLS from
	// the system roots. AttemptTimeout bounds each attempt either way.
	Client *http.Client
	// Owner names this dispatcher in delivery leases; default host-pid-random.
	Owner string

	// PollInterval is how often the outbox and the queue are read when
	// nothing wakes the dispatcher (default 1s); Kick wakes it at once.
	PollInterval time.Duration
	// AttemptTimeout bounds one HTTP attempt (default 10s).
	AttemptTimeout time.Duration
	// Lease is how long a claimed delivery is reserved for this dispatcher
	// (default 2×AttemptTimeout + 10s); it is renewed before each attempt.
	Lease time.Duration
	// MaxAttempts: a delivery that failed this many times goes to the
	// dead-letter queue (default 10).
	MaxAttempts int
	// BackoffBase and BackoffMax bound the wait before attempt n+1:
	// d = min(BackoffMax, BackoffBase·2^(n-1)), then a uniformly random
	// time in [d/2, d] ("equal jitter"). A Retry-After answer waits at
	// least that long, up to BackoffMax. Defaults 2s and 1h.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// EndpointConcurrency limits attempts in flight per endpoint (scheme
	// and host) across this dispatcher (default 4).
	EndpointConcurrency int
	// BreakerFailures consecutive failed attempts to one endpoint open its
	// circuit breaker for BreakerCooldown (defaults 5 and 30s): deliveries
	// to it wait without spending attempts; then one probe decides.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Batch is the most deliveries in flight at once (default 64).
	Batch int
	// CheckInterval is how often conditions (grace ending, certificates
	// expiring, overdue credentials, consumers behind) are checked
	// (default 1m; negative disables).
	CheckInterval time.Duration
	// Retention: delivered deliveries older than this are deleted (default
	// 7 days). Those of conditions (grace ending, certificate expiring,
	// policy overdue, consumers behind) are kept ConditionRetention (default
	// 400 days): the check would report a condition that lasts past its
	// row's deletion again.
	Retention          time.Duration
	ConditionRetention time.Duration
}

func (c *DispatcherConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 10 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		c.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 2*c.AttemptTimeout + 10*time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = 2 * time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Hour
	}
	if c.EndpointConcurrency <= 0 {
		c.EndpointConcurrency = 4
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = 30 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Minute
	}
	if c.Retention <= 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.ConditionRetention <= 0 {
		c.ConditionRetention = 400 * 24 * time.Hour
	}
	c.ConditionRetention = max(c.ConditionRetention, c.Retention)
}

// Dispatcher delivers notifications. Run it once per process; several
// processes sharing a store split the work through leases, and each
// delivery is in flight in at most one of them at a time.
type Dispatcher struct {
	cfg  DispatcherConfig
	svc  *Service
	log  *slog.Logger
	wake chan struct{}
	met  *dispatchMetrics

	mu        sync.Mutex
	endpoints map[string]*endpoint
	targets   map[string]*cachedTarget
	inflight  int
	lastCheck time.Time
	lastPrune time.Time
}

type cachedTarget struct {
	updated time.Time
	t       *target
}

// endpoint is the concurrency limit and circuit breaker of one receiver.
type endpoint struct {
	sem       chan struct{}
	failures  int       // consecutive
	openUntil time.Time // breaker open while now < openUntil
	probing   bool      // half-open: one attempt decides
}

// NewDispatcher returns a dispatcher; call Run.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Service == nil || cfg.Service.Store == nil || cfg.Service.Keys == nil {
		return nil, errors.New("notify: DispatcherConfig.Service with Store and Keys is required")
	}
	cfg.setDefaults()
	return &Dispatcher{cfg: cfg, svc: cfg.Service, log: cfg.Logger, wake: make(chan struct{}, 1),
		met: newDispatchMetrics(cfg.Service.Store), endpoints: map[string]*endpoint{}, targets: map[string]*cachedTarget{}}, nil
}

// Kick wakes the dispatcher: an event was just stored. It never blocks.
func (d *Dispatcher) Kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then waits for attempts in flight (they end
// with ctx too; their deliveries are retried later, by lease expiry).
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{}, d.cfg.Batch)
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := d.round(ctx, &wg, done); err != nil && ctx.Err() == nil {
			d.log.Warn("notify: dispatch round", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-done:
		case <-t.C:
		}
	}
}

func (d *Dispatcher) now() time.Time { return d.svc.now().UTC() }

// round fans out the outbox, checks conditions and prunes when due, and
// starts attempts for claimed deliveries.
func (d *Dispatcher) round(ctx context.Context, wg *sync.WaitGroup, done chan struct{}) error {
	// Without subscriptions there is nothing to do (and the store writes no
	// outbox rows): stay read-only.
	var (
		subs []store.Subscription
		head []store.Event
	)
	if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
		var err error
		if subs, err = tx.ListSubscriptions(ctx); err != nil {
			return err
		}
		head, err = tx.ListOutbox(ctx, 1)
		return err
	}); err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	for len(head) > 0 {
		n, err := d.fanOut(ctx)
		if err != nil {
			return fmt.Errorf("fan out: %w", err)
		}
		if n == 0 {
			break
		}
	}
	if len(subs) == 0 {
		return nil
	}
	now := d.now()
	if d.cfg.CheckInterval > 0 && now.Sub(d.lastCheck) >= d.cfg.CheckInterval {
		d.lastCheck = now
		if err := d.Check(ctx); err != nil {
			d.log.Warn("notify: condition check", "err", err)
		}
	}
	if now.Sub(d.lastPrune) >= time.Hour {
		d.lastPrune = now
		if err := d.svc.Store.Update(ctx, func(tx store.Tx) error {
			_, err := tx.PruneDeliveries(ctx, now.Add(-d.cfg.Retention), now.Add(-d.cfg.ConditionRetention))
			return err
		}); err != nil {
			d.log.Warn("notify: prune", "err", err)
		}
	}
	d.mu.Lock()
	room := d.cfg.Batch - d.inflight
	d.mu.Unlock()
	if room <= 0 {
		return nil
	}
	var claimed []store.Delivery
	err := d.svc.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		claimed, err = tx.ClaimDeliveries(ctx, d.cfg.Owner, now, now.Add(d.cfg.Lease), room)
		return err
	})
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	for i := range claimed {
		dl := claimed[i]
		d.mu.Lock()
		d.inflight++
		d.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.attempt(ctx, &dl)
			d.mu.Lock()
			d.inflight--
			d.mu.Unlock()
			select {
			case done <- struct{}{}:
			default:
			}
		}()
	}
	return nil
}

// fanOut turns up to 100 outbox events into deliveries, in one transaction.
func (d *Dispatcher) fanOut(ctx context.Context) (int, error) {
	n := 0
	err := d.svc.Store.Update(ctx, func(tx store.Tx) error {
		evs, err := tx.ListOutbox(ctx, 100)
		if err != nil || len(evs) == 0 {
			n = 0
			return err
		}
		n = len(evs)
		rows, err := tx.ListSubscriptions(ctx)
		if err != nil {
			return err
		}
		subs := make([]*Subscription, 0, len(rows))
		for i := range rows {
			if s, err := decodeSub(&rows[i]); err == nil {
				subs = append(subs, s)
			}
		}
		seqs := make([]int64, 0, len(evs))
		now := d.now()
		for i := range evs {
			e := &evs[i]
			seqs = append(seqs, e.Seq)
			p, ok := fromEvent(e)
			if !ok {
				continue
			}
			if err := insertFor(ctx, tx, subs, p, now); err != nil {
				return err
			}
		}
		return tx.DeleteOutbox(ctx, seqs)
	})
	return n, err
}

// insertFor inserts a delivery of p for every subscription in subs that
// wants it; existing (subscription, event) pairs are kept as they are.
func insertFor(ctx context.Context, tx store.Tx, subs []*Subscription, p *Payload, now time.Time) error {
	var pb []byte
	for _, s := range subs {
		if !s.Wants(p.Kind, p.CredentialID) {
			continue
		}
		if pb == nil {
			pb, _ = json.Marshal(p)
		}
		dl := &store.Delivery{SubscriptionID: s.ID, EventID: p.ID, Kind: p.Kind, CredentialID: p.CredentialID, Payload: pb,
			State: store.DeliveryPending, CreatedAt: now, UpdatedAt: now, DueAt: now, LeaseUntil: now}
		if _, err := tx.InsertDelivery(ctx, dl); err != nil {
			return err
		}
	}
	return nil
}

func endpointKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Scheme + "://" + u.Host
}

func (d *Dispatcher) endpoint(key string) *endpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.endpoints[key]
	if ep == nil {
		ep = &endpoint{sem: make(chan struct{}, d.cfg.EndpointConcurrency)}
		d.endpoints[key] = ep
	}
	return ep
}

// target returns the opened subscription of a delivery, cached by update time.
func (d *Dispatcher) target(ctx context.Context, id string) (*target, error) {
	var row *store.Subscription
	if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
		var err error
		row, err = tx.GetSubscription(ctx, id)
		return err
	}); err != nil {
		return nil, err
	}
	d.mu.Lock()
	c := d.targets[id]
	d.mu.Unlock()
	if c != nil && c.updated.Equal(row.UpdatedAt) {
		return c.t, nil
	}
	t, err := d.svc.openTarget(row)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.targets[id] = &cachedTarget{updated: row.UpdatedAt, t: t}
	d.mu.Unlock()
	return t, nil
}

// attempt makes one attempt of a claimed delivery and records its outcome.
func (d *Dispatcher) attempt(ctx context.Context, dl *store.Delivery) {
	t, err := d.target(ctx, dl.SubscriptionID)
	if errors.Is(err, store.ErrNotFound) {
		return // the subscription was removed with its deliveries
	}
	if err != nil {
		d.log.Error("notify: subscription unusable", "subscription", dl.SubscriptionID, "err", err)
		d.finish(ctx, dl, 0, err.Error(), 0, false)
		return
	}
	ep := d.endpoint(endpointKey(t.url))
	select {
	case ep.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-ep.sem }()

	// The breaker: while open, the delivery waits without spending an attempt.
	d.mu.Lock()
	now := d.now()
	if now.Before(ep.openUntil) || ep.probing {
		wait := ep.openUntil
		if ep.probing || wait.Before(now) {
			wait = now.Add(d.cfg.PollInterval)
		}
		d.mu.Unlock()
		d.postpone(ctx, dl, wait)
		return
	}
	probe := ep.failures >= d.cfg.BreakerFailures
	if probe {
		ep.probing = true
	}
	d.mu.Unlock()

	if !d.renew(ctx, dl) {
		if probe {
			d.mu.Lock()
			ep.probing = false
			d.mu.Unlock()
		}
		return
	}
	status, errText, retryAfter := d.send(ctx, t, dl)
	if ctx.Err() != nil && status == 0 {
		// Shutting down: the attempt did not finish; the lease expires and
		// another dispatcher (or this one, restarted) tries again.
		d.mu.Lock()
		ep.probing = false
		d.mu.Unlock()
		return
	}
	ok := status >= 200 && status < 300
	d.mu.Lock()
	ep.probing = false
	if ok {
		ep.failures = 0
	} else {
		ep.failures++
		if ep.failures >= d.cfg.BreakerFailures {
			ep.openUntil = d.now().Add(d.cfg.BreakerCooldown)
			d.log.Warn("notify: circuit breaker open", "endpoint", RedactURL(endpointKey(t.url)), "cooldown", d.cfg.BreakerCooldown.String())
		}
	}
	d.mu.Unlock()
	if !ok {
		d.log.Warn("notify: delivery attempt failed", "delivery", dl.ID, "subscription", dl.SubscriptionID, "url", t.sub.URL,
			"attempt", dl.Attempts+1, "status", status, "err", errText)
	}
	d.finish(ctx, dl, status, errText, retryAfter, ok)
}

// send makes the HTTP request.
func (d *Dispatcher) send(ctx context.Context, t *target, dl *store.Delivery) (status int, errText string, retryAfter time.Duration) {
	b, err := body(dl.Payload, t.sub.Format)
	if err != nil {
		return 0, "render payload: " + err.Error(), 0
	}
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, t.url, strings.NewReader(string(b)))
	if err != nil {
		return 0, "build request for " + t.sub.URL, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nebula-credential-notify/1")
	req.Header.Set(HeaderIdempotencyKey, dl.EventID)
	req.Header.Set(HeaderEvent, dl.Kind)
	req.Header.Set(HeaderDelivery, strconv.FormatInt(dl.ID, 10))
	req.Header.Set(HeaderSignature, Sign(t.secret, d.now(), b))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return 0, redactErr(err, t), 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return resp.StatusCode, "receiver answered " + resp.Status, retryAfter
	}
	return resp.StatusCode, "", 0
}

// redactErr describes a transport error without the URL (which may hold a
// credential): url.Error carries it, so only its cause is kept.
func redactErr(err error, t *target) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, t.url, t.sub.URL)
	return "POST " + t.sub.URL + ": " + msg
}

// renew re-reads a claimed delivery and extends its lease, reporting false
// if it is no longer this dispatcher's (replayed, removed, or taken over).
func (d *Dispatcher) renew(ctx context.Context, dl *store.Delivery) bool {
	ok := false
	err := d.svc.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.GetDelivery(ctx, dl.ID)
		if err != nil {
			return err
		}
		ok = cur.State == store.DeliveryPending && cur.LeaseOwner == d.cfg.Owner && cur.Attempts == dl.Attempts
		if !ok {
			return nil
		}
		cur.LeaseUntil = d.now().Add(d.cfg.Lease)
		*dl = *cur
		return tx.UpdateDelivery(ctx, cur)
	})
	return err == nil && ok
}

// postpone releases a delivery until wait without counting an attempt.
func (d *Dispatcher) postpone(ctx context.Context, dl *store.Delivery, wait time.Time) {
	_ = d.svc.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.GetDelivery(ctx, dl.ID)
		if err != nil || cur.State != store.DeliveryPending || cur.LeaseOwner != d.cfg.Owner {
			return err
		}
		cur.DueAt, cur.LeaseUntil = wait, d.now()
		return tx.UpdateDelivery(ctx, cur)
	})
}

// backoff is the wait after the n-th failed attempt.
func (d *Dispatcher) backoff(n int, retryAfter time.Duration) time.Duration {
	b := d.cfg.BackoffBase
	for i := 1; i < n && b < d.cfg.BackoffMax; i++ {
		b *= 2
	}
	b = min(b, d.cfg.BackoffMax)
	w := b/2 + time.Duration(mrand.Int64N(int64(b/2)+1))
	return min(max(w, retryAfter), d.cfg.BackoffMax)
}

// finish records an attempt's outcome if the delivery is still ours.
func (d *Dispatcher) finish(ctx context.Context, dl *store.Delivery, status int, errText string, retryAfter time.Duration, ok bool) {
	var state string
	ctx = context.WithoutCancel(ctx) // the attempt happened: record it
	err := d.svc.Store.Update(ctx, func(tx store.Tx) error {
		state = ""
		cur, err := tx.GetDelivery(ctx, dl.ID)
		if err != nil {
			return err
		}
		if cur.State != store.DeliveryPending || cur.LeaseOwner != d.cfg.Owner || cur.Attempts != dl.Attempts {
			return nil // replayed or taken over meanwhile: its new owner records
		}
		now := d.now()
		cur.Attempts++
		cur.LastStatus, cur.LastError, cur.UpdatedAt, cur.LeaseUntil = status, errText, now, now
		switch {
		case ok:
			cur.State, cur.DeliveredAt, cur.LastError = store.DeliveryDelivered, &now, ""
		case cur.Attempts >= d.cfg.MaxAttempts:
			cur.State = store.DeliveryDead
		default:
			cur.DueAt = now.Add(d.backoff(cur.Attempts, retryAfter))
		}
		state = cur.State
		return tx.UpdateDelivery(ctx, cur)
	})
	if err != nil {
		d.log.Error("notify: recording delivery outcome", "delivery", dl.ID, "err", err)
		return
	}
	d.met.attempt(dl.Kind, ok)
	if state == store.DeliveryDead {
		d.met.dead.Inc()
		d.log.Error("notify: delivery moved to the dead-letter queue; replay it with `nebula-credential notify replay`",
			"delivery", dl.ID, "subscription", dl.SubscriptionID, "event", dl.EventID, "attempts", d.cfg.MaxAttempts, "err", errText)
	}
}
