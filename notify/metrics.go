package notify

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nebula-credential/nebula-credential/store"
)

// dispatchMetrics are the dispatcher's Prometheus metrics: counters of this
// process's attempts, and gauges of the shared queue read at scrape time.
type dispatchMetrics struct {
	st       store.Store
	attempts *prometheus.CounterVec
	dead     prometheus.Counter
	depth    *prometheus.Desc
	deadNow  *prometheus.Desc
	oldest   *prometheus.Desc
}

func newDispatchMetrics(st store.Store) *dispatchMetrics {
	return &dispatchMetrics{
		st: st,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nebula_credential_notify_deliveries_total",
			Help: "Webhook delivery attempts made by this process, by notification kind and result (delivered, failed).",
		}, []string{"kind", "result"}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nebula_credential_notify_dead_letters_total",
			Help: "Deliveries this process moved to the dead-letter queue after their last attempt.",
		}),
		depth: prometheus.NewDesc("nebula_credential_notify_queue_depth",
			"Notifications not yet delivered: outbox events not yet fanned out plus pending deliveries.", nil, nil),
		deadNow: prometheus.NewDesc("nebula_credential_notify_dead_letters",
			"Deliveries in the dead-letter queue now.", nil, nil),
		oldest: prometheus.NewDesc("nebula_credential_notify_oldest_undelivered_age_seconds",
			"Age of the oldest notification not yet delivered (0 when none).", nil, nil),
	}
}

func (m *dispatchMetrics) attempt(kind string, ok bool) {
	r := "failed"
	if ok {
		r = "delivered"
	}
	m.attempts.WithLabelValues(kind, r).Inc()
}

// Describe implements prometheus.Collector.
func (d *Dispatcher) Describe(ch chan<- *prometheus.Desc) {
	d.met.attempts.Describe(ch)
	d.met.dead.Describe(ch)
	ch <- d.met.depth
	ch <- d.met.deadNow
	ch <- d.met.oldest
}

// Collect implements prometheus.Collector. The queue gauges come from one
// store read; they are left out if the store does not answer in 5s.
func (d *Dispatcher) Collect(ch chan<- prometheus.Metric) {
	d.met.attempts.Collect(ch)
	d.met.dead.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st *store.NotifyStats
	if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
		var err error
		st, err = tx.NotifyStats(ctx)
		return err
	}); err != nil {
		return
	}
	age := 0.0
	if st.Oldest != nil {
		age = max(0, d.now().Sub(*st.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(d.met.depth, prometheus.GaugeValue, float64(st.Outbox+st.Pending))
	ch <- prometheus.MustNewConstMetric(d.met.deadNow, prometheus.GaugeValue, float64(st.Dead))
	ch <- prometheus.MustNewConstMetric(d.met.oldest, prometheus.GaugeValue, age)
}

var _ prometheus.Collector = (*Dispatcher)(nil)
