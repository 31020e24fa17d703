package server

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// metrics holds the server's Prometheus registry. Request and rotation
// metrics are aggregates (no credential IDs) in the shared registry; the
// per-credential gauges are produced at scrape time from a cached read of the
// store, limited to the credentials the scraping token may see.
type metrics struct {
	s   *Server
	reg *prometheus.Registry

	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	rotations *prometheus.CounterVec
	rotDur    *prometheus.HistogramVec

	events chan rotation.Event
	done   chan struct{}
	wg     sync.WaitGroup

	snapMu sync.Mutex
	snap   *snapshot

	httpCache sync.Map // httpKey → *httpChildren; routes and codes are few
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		s:   s,
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nebula_credential_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nebula_credential_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nebula_credential_rotations_total",
			Help: "Rotation outcomes seen by this process, by credential type, strategy, kind and outcome (committed, failed, rolled_back, needs_attention, manual_rollback, retired).",
		}, []string{"type", "strategy", "kind", "outcome"}),
		rotDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nebula_credential_rotation_duration_seconds",
			Help:    "Time from the start of a rotation to its outcome, by credential type, strategy, kind and outcome.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}, []string{"type", "strategy", "kind", "outcome"}),
		events: make(chan rotation.Event, 256),
		done:   make(chan struct{}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.rotations, m.rotDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.cfg.Notify != nil {
		m.reg.MustRegister(s.cfg.Notify)
	}
	m.wg.Add(1)
	go m.run()
	return m
}

func (m *metrics) close() {
	close(m.done)
	m.wg.Wait()
}

// httpKey caches the children of the request metrics: looking them up by
// label values hashes the labels on every request.
type httpKey struct {
	route  string
	status int
}

type httpChildren struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

func (m *metrics) observeHTTP(route string, status int, d time.Duration) {
	k := httpKey{route, status}
	c, ok := m.httpCache.Load(k)
	if !ok {
		c, _ = m.httpCache.LoadOrStore(k, &httpChildren{
			count:   m.requests.WithLabelValues(route, strconv.Itoa(status)),
			latency: m.latency.WithLabelValues(route),
		})
	}
	hc := c.(*httpChildren)
	hc.count.Inc()
	hc.latency.Observe(d.Seconds())
}

// onEvent is the engine subscription; it must not block.
func (m *metrics) onEvent(ev rotation.Event) {
	if ev.RotationID == 0 {
		return
	}
	select {
	case m.events <- ev:
	default: // metrics are best effort; never slow the engine down
	}
}

func outcomeOf(ev rotation.Event) string {
	switch ev.Kind {
	case rotation.EventCurrentChanged:
		if ev.Detail == "rollback" {
			return "" // the rolled_back event that follows counts it
		}
		return "committed"
	case rotation.EventFailed:
		return "failed"
	case rotation.EventRolledBack:
		if ev.Detail == "" {
			return "manual_rollback"
		}
		return "rolled_back"
	case rotation.EventNeedsAttention:
		return "needs_attention"
	case rotation.EventRetired:
		return "retired"
	}
	return ""
}

func (m *metrics) run() {
	defer m.wg.Done()
	for {
		select {
		case <-m.done:
			return
		case ev := <-m.events:
			outcome := outcomeOf(ev)
			if outcome == "" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var (
				r   *store.Rotation
				typ = "unknown"
			)
			err := m.s.m.Store().View(ctx, func(tx store.Tx) error {
				var err error
				if r, err = tx.GetRotation(ctx, ev.RotationID); err != nil {
					return err
				}
				if c, err := tx.GetCredential(ctx, r.CredentialID); err == nil {
					typ = c.Type
				}
				return nil
			})
			cancel()
			if err != nil {
				continue
			}
			at := ev.At
			if at.IsZero() {
				at = m.s.clock()
			}
			labels := []string{typ, r.Strategy, r.Kind, outcome}
			m.rotations.WithLabelValues(labels...).Inc()
			m.rotDur.WithLabelValues(labels...).Observe(max(0, at.Sub(r.StartedAt).Seconds()))
		}
	}
}

// snapshot is one read of the store for the per-credential gauges.
type snapshot struct {
	at        time.Time
	creds     []credStat
	truncated bool
}

type credStat struct {
	id, typ, state      string
	age                 float64
	nextDue             *float64
	graceLeft           *float64
	consecutiveFailures int
	needsAttention      bool
	// previousValid: the previous version was not revoked though its grace
	// ended (a retire late or failing, or forced closed).
	previousValid bool
}

func (m *metrics) snapshot(ctx context.Context) (*snapshot, error) {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	now := m.s.clock()
	if m.snap != nil && now.Sub(m.snap.at) < m.s.cfg.MetricsCacheTTL && now.Sub(m.snap.at) >= 0 {
		return m.snap, nil
	}
	snap := &snapshot{at: now}
	limit := m.s.cfg.MetricsMaxScan
	err := m.s.m.Store().View(ctx, func(tx store.Tx) error {
		cs, err := tx.ListCredentials(ctx, store.ListOptions{Limit: limit + 1})
		if err != nil {
			return err
		}
		if len(cs) > limit {
			cs, snap.truncated = cs[:limit], true
		}
		open, err := tx.ListRotations(ctx, store.RotationFilter{OpenOnly: true, Limit: limit + 1})
		if err != nil {
			return err
		}
		openBy := make(map[string]*store.Rotation, len(open))
		for i := range open {
			openBy[open[i].CredentialID] = &open[i]
		}
		for _, c := range cs {
			st := credStat{id: c.ID, typ: c.Type, state: "active"}
			labels, err := tx.Labels(ctx, c.ID)
			if err != nil {
				return err
			}
			if cur, ok := labels["current"]; ok {
				v, err := tx.GetVersion(ctx, c.ID, cur)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				if v != nil {
					st.age = now.Sub(v.CreatedAt).Seconds()
					if v.ExpiresAt != nil && !v.ExpiresAt.After(now) {
						st.state = "expired"
					}
				}
			}
			if c.NextDueAt != nil {
				d := c.NextDueAt.Sub(now).Seconds()
				st.nextDue = &d
			}
			r := openBy[c.ID]
			if r != nil {
				st.state = rotation.StateOf(r)
				if r.Step == rotation.StepGrace && r.GraceEndsAt != nil {
					d := max(0, r.GraceEndsAt.Sub(now).Seconds())
					st.graceLeft = &d
				}
				st.needsAttention = r.Step == rotation.StepNeedsAttention || r.Step == rotation.StepReauthRequired
				st.previousValid = rotation.RetireOverdue(r, now)
			}
			recent, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: c.ID, Limit: 20})
			if err != nil {
				return err
			}
			st.consecutiveFailures = consecutiveFailures(recent)
			if r == nil && len(recent) > 0 && rotation.StaysValid(&recent[0]) != 0 {
				st.previousValid = true
			}
			snap.creds = append(snap.creds, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.snap = snap
	return snap, nil
}

// consecutiveFailures counts the failed rotations (newest first) since the
// last one that succeeded, plus the failed attempts of one still retrying.
func consecutiveFailures(rs []store.Rotation) int {
	n := 0
	for _, r := range rs {
		var d struct {
			Rollback   bool   `json:"rollback"`
			FailedStep string `json:"failed_step"`
		}
		_ = json.Unmarshal(r.Data, &d)
		switch {
		case r.Step == rotation.StepNeedsAttention, r.Step == rotation.StepReauthRequired:
			n++
		case r.Step == rotation.StepRolledBack && !d.Rollback:
			n++
		case r.Open && r.Attempt > 0 && r.Step != rotation.StepGrace:
			n += r.Attempt
			return n
		case r.Open:
			continue // in progress, no failure yet
		default:
			return n
		}
	}
	return n
}

// credCollector exposes a snapshot filtered by grants.
type credCollector struct {
	m      *metrics
	grants []acl.Grant // nil: everything (public metrics)
	all    bool
}

var (
	descAge = prometheus.NewDesc("nebula_credential_age_seconds",
		"Seconds since the current version was created.", []string{"id", "type"}, nil)
	descNext = prometheus.NewDesc("nebula_credential_next_rotation_seconds",
		"Seconds until the next policy-driven rotation (negative: overdue).", []string{"id", "type"}, nil)
	descFail = prometheus.NewDesc("nebula_credential_consecutive_failures",
		"Failed rotations since the last successful one.", []string{"id", "type"}, nil)
	descGrace = prometheus.NewDesc("nebula_credential_grace_remaining_seconds",
		"Seconds until the previous version is retired (credentials in grace).", []string{"id", "type"}, nil)
	descAttention = prometheus.NewDesc("nebula_credential_needs_attention",
		"1 when a rotation of the credential needs a person (see doctor).", []string{"id", "type"}, nil)
	descPrevValid = prometheus.NewDesc("nebula_credential_previous_valid_after_grace",
		"1 when the previous version was not revoked on the target though its grace ended: its retire is late or failing (the target does not answer), or the rotation was closed with resolve --force. See doctor; `nebula-credential rotations retry ID` retires it.", []string{"id", "type"}, nil)
	descPrevValidTotal = prometheus.NewDesc("nebula_credential_credentials_previous_valid_after_grace",
		"Credentials whose previous version was not revoked though its grace ended.", nil, nil)
	descAttentionTotal = prometheus.NewDesc("nebula_credential_credentials_needing_attention",
		"Credentials whose rotation needs a person.", nil, nil)
	descState = prometheus.NewDesc("nebula_credential_credentials",
		"Credentials by state.", []string{"state"}, nil)
	descTruncated = prometheus.NewDesc("nebula_credential_metrics_truncated",
		"1 when per-credential series were cut at the configured bound.", nil, nil)
	descScrapeErr = prometheus.NewDesc("nebula_credential_metrics_store_error",
		"1 when the store could not be read for the credential gauges.", nil, nil)
)

func (c *credCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAge, descNext, descFail, descGrace, descAttention, descAttentionTotal, descPrevValid, descPrevValidTotal, descState, descTruncated, descScrapeErr} {
		ch <- d
	}
}

func (c *credCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.m.s.cfg.RequestTimeout)
	defer cancel()
	snap, err := c.m.snapshot(ctx)
	if err != nil {
		c.m.s.log.Warn("metrics: reading the store", "err", err)
		ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 0)
	states := map[string]float64{}
	attention, prevValid := 0.0, 0.0
	emitted := 0
	truncated := snap.truncated
	for _, st := range snap.creds {
		if !c.all && !acl.Visible(c.grants, st.id) {
			continue
		}
		states[st.state]++
		if st.needsAttention {
			attention++
		}
		if st.previousValid {
			prevValid++
		}
		if emitted >= c.m.s.cfg.MetricsMaxCredentials {
			truncated = true
			continue
		}
		emitted++
		ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, st.age, st.id, st.typ)
		if st.nextDue != nil {
			ch <- prometheus.MustNewConstMetric(descNext, prometheus.GaugeValue, *st.nextDue, st.id, st.typ)
		}
		ch <- prometheus.MustNewConstMetric(descFail, prometheus.GaugeValue, float64(st.consecutiveFailures), st.id, st.typ)
		if st.graceLeft != nil {
			ch <- prometheus.MustNewConstMetric(descGrace, prometheus.GaugeValue, *st.graceLeft, st.id, st.typ)
		}
		ch <- prometheus.MustNewConstMetric(descAttention, prometheus.GaugeValue, b2f(st.needsAttention), st.id, st.typ)
		ch <- prometheus.MustNewConstMetric(descPrevValid, prometheus.GaugeValue, b2f(st.previousValid), st.id, st.typ)
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, n, state)
	}
	ch <- prometheus.MustNewConstMetric(descAttentionTotal, prometheus.GaugeValue, attention)
	ch <- prometheus.MustNewConstMetric(descPrevValidTotal, prometheus.GaugeValue, prevValid)
	ch <- prometheus.MustNewConstMetric(descTruncated, prometheus.GaugeValue, b2f(truncated))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves /metrics: the shared registry plus the credential
// gauges the caller may see.
func (s *Server) metricsHandler(rq *request) error {
	cc := &credCollector{m: s.met, all: rq.tok == nil}
	if rq.tok != nil {
		cc.grants = rq.tok.Grants
		cc.all = acl.Allowed(rq.tok.Grants, acl.Admin, "")
	}
	per := prometheus.NewRegistry()
	per.MustRegister(cc, &consumerCollector{c: s.cons, visible: func(id string) bool { return cc.all || acl.Visible(cc.grants, id) }})
	h := promhttp.HandlerFor(prometheus.Gatherers{s.met.reg, per}, promhttp.HandlerOpts{ErrorLog: nil, ErrorHandling: promhttp.ContinueOnError})
	rq.responded = true
	h.ServeHTTP(rq.w, rq.r)
	return nil
}
