package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// ConsumerConfig is how the server tracks the consumers of credentials
// (agents, pools) and, if asked, ends grace early once they all moved.
type ConsumerConfig struct {
	// Timeout: a consumer that has not reported for this long no longer
	// counts as live (default 90s). Consumers are asked to report every
	// Timeout/3.
	Timeout time.Duration
	// Retention: rows of consumers silent for this long are deleted
	// (default 24h); until then `consumers` shows them as gone.
	Retention time.Duration
	// EarlyRetire ends a rotation's grace period as soon as every live
	// consumer of the credential confirmed the new version (with its action
	// succeeded), but never before EarlyRetireMin after the commit (default
	// 30s). A credential with no live consumer keeps its full grace. The
	// grace length stays the upper bound.
	EarlyRetire    bool
	EarlyRetireMin time.Duration
	// CheckInterval is how often the server re-checks rotations in grace,
	// for consumers that timed out and minimums that passed (default 1s).
	CheckInterval time.Duration
}

func (c *ConsumerConfig) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 90 * time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.EarlyRetireMin < 0 {
		c.EarlyRetireMin = 0
	} else if c.EarlyRetireMin == 0 {
		c.EarlyRetireMin = 30 * time.Second
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Second
	}
}

// consumers tracks consumer reports and ends grace early.
type consumers struct {
	s      *Server
	cfg    ConsumerConfig
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	checking map[string]bool // credential IDs being evaluated

	passes atomic.Int64 // check passes completed (tests wait on it)
}

func newConsumers(s *Server, cfg ConsumerConfig) *consumers {
	cfg.setDefaults()
	c := &consumers{s: s, cfg: cfg, checking: map[string]bool{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.loop()
	return c
}

func (c *consumers) close() {
	c.cancel()
	c.wg.Wait()
}

// loop deletes long-gone consumers and re-checks every rotation in grace: a
// consumer whose heartbeats stopped, or a minimum grace that passed, can be
// what lets grace end.
func (c *consumers) loop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		now := c.s.clock()
		if now.Sub(lastPrune) > time.Minute {
			lastPrune = now
			err := c.s.m.Store().Update(c.ctx, func(tx store.Tx) error {
				_, err := tx.DeleteConsumersSeenBefore(c.ctx, now.Add(-c.cfg.Retention))
				return err
			})
			if err != nil && c.ctx.Err() == nil {
				c.s.log.Warn("consumers: pruning", "err", err)
			}
		}
		c.check()
		c.passes.Add(1)
	}
}

// check evaluates every rotation in grace.
func (c *consumers) check() {
	if !c.cfg.EarlyRetire {
		return
	}
	rs, err := c.s.m.Rotations(c.ctx, "", true, 1000)
	if err != nil {
		if c.ctx.Err() == nil {
			c.s.log.Warn("consumers: listing rotations in grace", "err", err)
		}
		return
	}
	for _, r := range rs {
		if r.Step == rotation.StepGrace {
			c.evaluate(r.CredentialID)
		}
	}
}

// evaluate ends the grace of id's open rotation in the background if every
// live consumer confirmed its new version. One evaluation per credential at a
// time; the loop catches anything a skipped one would have found.
func (c *consumers) evaluate(id string) {
	if !c.cfg.EarlyRetire {
		return
	}
	c.mu.Lock()
	if c.checking[id] || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.checking[id] = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.checking, id)
			c.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.LongRequestTimeout)
		defer cancel()
		if err := c.endGraceIfConfirmed(ctx, id); err != nil && ctx.Err() == nil {
			c.s.log.Warn("consumers: ending grace early", "credential", id, "err", err)
		}
	}()
}

func (c *consumers) endGraceIfConfirmed(ctx context.Context, id string) error {
	var (
		open *store.Rotation
		rows []store.Consumer
	)
	err := c.s.m.Store().View(ctx, func(tx store.Tx) error {
		var err error
		if open, err = tx.OpenRotation(ctx, id); err != nil {
			return err
		}
		rows, err = tx.ListConsumers(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if open.Step != rotation.StepGrace || open.GraceEndsAt == nil {
		return nil
	}
	now := c.s.clock()
	live := 0
	for _, r := range rows {
		if now.Sub(r.LastSeen) > c.cfg.Timeout {
			continue
		}
		live++
		if r.Version != open.ToVersion || !r.ActionOK {
			return nil
		}
	}
	if live == 0 {
		return nil
	}
	if at := rotation.CommittedAt(open); at != nil && now.Before(at.Add(c.cfg.EarlyRetireMin)) {
		return nil
	}
	detail := fmt.Sprintf("%d live consumer(s) confirmed version %d", live, open.ToVersion)
	_, err = c.s.m.Engine().EndGraceEarly(ctx, id, rotation.EndGraceRequest{Version: open.ToVersion, MinGrace: c.cfg.EarlyRetireMin, Detail: detail})
	switch {
	case err == nil:
		c.s.log.Info("grace ended early", "credential", id, "version", open.FromVersion, "detail", detail)
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, rotation.ErrWrongStep), errors.Is(err, rotation.ErrGraceMinimum),
		errors.Is(err, store.ErrFenced), errors.Is(err, store.ErrRotationInProgress):
		return nil // moved on, not yet, or another process is on it
	}
	return err
}

// validConsumerID accepts 1–128 characters of [A-Za-z0-9._:@/-].
func validConsumerID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == ':' || r == '@' || r == '/' || r == '-') {
			return false
		}
	}
	return true
}

func shortText(s string, n int) bool { return utf8.ValidString(s) && len(s) <= n }

// maxReportedSeconds bounds a reported refresh interval or drain timeout.
const maxReportedSeconds = 366 * 24 * 3600

func validSeconds(f float64) bool { return f >= 0 && f <= maxReportedSeconds } // NaN fails both

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// reportConsumer serves POST /v1/consumers: a registration or heartbeat.
// Every credential reported needs read: a consumer receives its secrets.
func (s *Server) reportConsumer(rq *request) error {
	var b credential.ConsumerReport
	if err := rq.decode(&b, false); err != nil {
		return err
	}
	switch {
	case !validConsumerID(b.ID):
		return invalidf(`"id" must be 1 to 128 characters of letters, digits and . _ : @ / -`)
	case !shortText(b.Name, 200), !shortText(b.Host, 255), !shortText(b.Kind, 32):
		return invalidf(`"name", "host" and "kind" must be UTF-8 of at most 200, 255 and 32 bytes`)
	case len(b.Credentials) > 1000:
		return invalidf(`at most 1000 credentials per report`)
	}
	seen := map[string]bool{}
	for _, d := range b.Credentials {
		if err := credential.ValidateID(d.ID); err != nil {
			return err
		}
		if seen[d.ID] {
			return invalidf("credential %s is reported twice", d.ID)
		}
		seen[d.ID] = true
		if d.Version < 0 {
			return invalidf("credential %s: version must not be negative", d.ID)
		}
		if !shortText(d.ActionError, 2000) {
			return invalidf("credential %s: action_error must be UTF-8 of at most 2000 bytes", d.ID)
		}
		if !validSeconds(d.RefreshSeconds) || !validSeconds(d.DrainTimeoutSeconds) {
			return invalidf("credential %s: refresh_seconds and drain_timeout_seconds must be between 0 and %d (a year)", d.ID, int(maxReportedSeconds))
		}
		if err := rq.authorize(acl.Read, d.ID); err != nil {
			return err
		}
	}
	rq.id = ""
	if len(b.Credentials) == 1 {
		rq.id = b.Credentials[0].ID
	}
	rq.detail = "consumer " + b.ID
	now := rq.now.UTC()
	err := s.m.Store().Update(rq.ctx, func(tx store.Tx) error {
		for _, d := range b.Credentials {
			if d.Version == 0 {
				continue // nothing delivered yet
			}
			row := store.Consumer{
				ID: b.ID, CredentialID: d.ID, Name: b.Name, Host: b.Host, Kind: b.Kind, Version: d.Version,
				ActionOK: d.ActionOK, ActionError: d.ActionError, TokenID: rq.tok.ID, FirstSeen: now, LastSeen: now,
				Refresh: seconds(d.RefreshSeconds), DrainTimeout: seconds(d.DrainTimeoutSeconds),
			}
			if err := tx.PutConsumer(rq.ctx, &row); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := rq.respond(http.StatusOK, credential.ConsumerAck{
		HeartbeatSeconds: (s.cons.cfg.Timeout / 3).Seconds(), TimeoutSeconds: s.cons.cfg.Timeout.Seconds(),
	}); err != nil {
		return err
	}
	for _, d := range b.Credentials {
		if d.Version > 0 && d.ActionOK {
			s.cons.evaluate(d.ID)
		}
	}
	return nil
}

// listConsumers serves GET /v1/consumers[?id=ID]: the consumers of the
// credentials the token's grants cover.
func (s *Server) listConsumers(rq *request) error {
	id := rq.query("id")
	if id != "" {
		if err := credential.ValidateID(id); err != nil {
			return err
		}
		if err := rq.see(id); err != nil {
			return err
		}
	}
	out, err := s.cons.list(rq.ctx, id, func(cid string) bool { return acl.Visible(rq.tok.Grants, cid) })
	if err != nil {
		return err
	}
	return rq.respond(http.StatusOK, struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}{out})
}

// list reads the consumers of id ("" all) that visible allows.
func (c *consumers) list(ctx context.Context, id string, visible func(string) bool) ([]credential.ConsumerInfo, error) {
	return ListConsumers(ctx, c.s.m.Store(), id, c.s.clock(), c.cfg.Timeout, visible)
}

// ListConsumers reads the consumers of credential id ("" for all) straight
// from a store, with the current version of each credential; a consumer is
// live if it reported within timeout before now. visible (nil: all) filters
// by credential ID. The CLI uses it on a local store.
func ListConsumers(ctx context.Context, st store.Store, id string, now time.Time, timeout time.Duration, visible func(string) bool) ([]credential.ConsumerInfo, error) {
	out := []credential.ConsumerInfo{}
	err := st.View(ctx, func(tx store.Tx) error {
		rows, err := tx.ListConsumers(ctx, id)
		if err != nil {
			return err
		}
		current := map[string]int{}
		for _, r := range rows {
			if visible != nil && !visible(r.CredentialID) {
				continue
			}
			cur, ok := current[r.CredentialID]
			if !ok {
				labels, err := tx.Labels(ctx, r.CredentialID)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				cur = labels["current"]
				current[r.CredentialID] = cur
			}
			out = append(out, credential.ConsumerInfo{
				ConsumerID: r.ID, CredentialID: r.CredentialID, Name: r.Name, Host: r.Host, Kind: r.Kind,
				Version: r.Version, CurrentVersion: cur, UpToDate: r.Version == cur,
				ActionOK: r.ActionOK, ActionError: r.ActionError,
				RefreshSeconds: r.Refresh.Seconds(), DrainTimeoutSeconds: r.DrainTimeout.Seconds(),
				Live: now.Sub(r.LastSeen) <= timeout, FirstSeen: r.FirstSeen, LastSeen: r.LastSeen,
			})
		}
		return nil
	})
	return out, err
}

var (
	descConsumers = prometheus.NewDesc("nebula_credential_consumers",
		"Live consumers (agents, pools) of the credential.", []string{"id"}, nil)
	descConsumersBehind = prometheus.NewDesc("nebula_credential_consumers_not_current",
		"Live consumers of the credential that have not confirmed its current version (or whose action after delivery failed).", []string{"id"}, nil)
)

// consumerCollector exposes the consumer gauges of the credentials a scrape
// may see.
type consumerCollector struct {
	c       *consumers
	visible func(string) bool
}

func (cc *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConsumers
	ch <- descConsumersBehind
}

func (cc *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), cc.c.s.cfg.RequestTimeout)
	defer cancel()
	rows, err := cc.c.list(ctx, "", cc.visible)
	if err != nil {
		cc.c.s.log.Warn("metrics: reading consumers", "err", err)
		return
	}
	live, behind := map[string]int{}, map[string]int{}
	var ids []string
	for _, r := range rows {
		if !r.Live {
			continue
		}
		if _, ok := live[r.CredentialID]; !ok {
			ids = append(ids, r.CredentialID)
		}
		live[r.CredentialID]++
		if !r.UpToDate || !r.ActionOK {
			behind[r.CredentialID]++
		}
	}
	for i, id := range ids {
		if i >= cc.c.s.cfg.MetricsMaxCredentials {
			break
		}
		ch <- prometheus.MustNewConstMetric(descConsumers, prometheus.GaugeValue, float64(live[id]), id)
		ch <- prometheus.MustNewConstMetric(descConsumersBehind, prometheus.GaugeValue, float64(behind[id]), id)
	}
}
