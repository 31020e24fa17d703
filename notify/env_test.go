package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// waitLimit is the one generous deadline of every wait: outcomes are
// awaited, never timed.
const waitLimit = 2 * time.Minute

// clock is a settable clock shared by the Manager and the notify Service.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// env is a real Manager on a temporary SQLite store, a notify Service over
// it and a dispatcher with short, configured backoffs.
type env struct {
	t      *testing.T
	ctx    context.Context
	m      *credential.Manager
	svc    *notify.Service
	clk    *clock
	target *rotatortest.Target
	logs   *testenv.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	logs := &testenv.Buffer{}
	target := rotatortest.NewTarget("")
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), target.Rotator())
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"),
		Create: true, Rotators: reg, Clock: clk.Now, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &env{t: t, ctx: ctx, m: m, clk: clk, target: target, logs: logs,
		svc: &notify.Service{Store: m.Store(), Keys: m.SubscriptionKeys(), Clock: clk.Now}}
}

// realTime makes the notify Service (and so the dispatcher) use the real
// clock, so that backoffs pass; the Manager keeps the settable one.
func (e *env) realTime() { e.svc.Clock = nil }

// dispatcher starts a dispatcher with short backoffs; it stops at cleanup.
func (e *env) dispatcher(mod func(*notify.DispatcherConfig)) *notify.Dispatcher {
	e.t.Helper()
	cfg := notify.DispatcherConfig{
		Service: e.svc, Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
		PollInterval: 5 * time.Millisecond, BackoffBase: 2 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		MaxAttempts: 4, BreakerFailures: 1000, CheckInterval: -1, AttemptTimeout: 30 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := notify.NewDispatcher(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return d
}

func (e *env) subscribe(rawURL string, mod func(*notify.AddRequest)) (*notify.Subscription, []byte) {
	e.t.Helper()
	req := notify.AddRequest{URL: secret.New(rawURL), Name: "test"}
	if mod != nil {
		mod(&req)
	}
	sub, key, err := e.svc.Add(e.ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return sub, []byte(key.Reveal())
}

// putGeneric stores a generic credential with a known secret value.
func (e *env) putGeneric(id, value string, mod func(*credential.PutRequest)) {
	e.t.Helper()
	req := credential.PutRequest{Type: credential.Generic, Secret: secret.FromStrings(map[string]string{"key": value})}
	if mod != nil {
		mod(&req)
	}
	if _, err := e.m.Put(e.ctx, id, req); err != nil {
		e.t.Fatal(err)
	}
}

// secrets returns every secret value of every version of the credentials.
func (e *env) secrets(ids ...string) []string {
	e.t.Helper()
	var out []string
	for _, id := range ids {
		vs, err := e.m.Versions(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, v := range vs {
			c, err := e.m.Get(e.ctx, id, credential.GetOptions{Version: v.Version})
			if err != nil {
				continue // retired versions may be gone
			}
			for _, s := range c.Secret {
				out = append(out, s.Reveal())
			}
		}
	}
	return out
}

// delivery is one request the receiver got.
type delivery struct {
	header http.Header
	body   []byte
	ok     bool // answered 2xx
}

// receiver is a real HTTP server on 127.0.0.1. status decides the answer.
type receiver struct {
	t      *testing.T
	srv    *http.Server
	addr   string
	status atomic.Int32

	mu   sync.Mutex
	got  []delivery
	cond chan struct{} // closed and replaced on every request
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{t: t, cond: make(chan struct{})}
	r.status.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) serve(ln net.Listener) {
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		b, _ := io.ReadAll(q.Body)
		code := int(r.status.Load())
		r.mu.Lock()
		r.got = append(r.got, delivery{header: q.Header.Clone(), body: b, ok: code < 300})
		close(r.cond)
		r.cond = make(chan struct{})
		r.mu.Unlock()
		w.WriteHeader(code)
	})}
	go r.srv.Serve(ln)
}

// stop takes the receiver down: connections are refused.
func (r *receiver) stop() { r.srv.Close() }

// start brings it back on the same address.
func (r *receiver) start() {
	r.t.Helper()
	var (
		ln  net.Listener
		err error
	)
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("receiver: listen again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

func (r *receiver) url(path string) string { return "http://" + r.addr + path }

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// waitFor waits until f holds over the deliveries so far.
func (r *receiver) waitFor(what string, f func([]delivery) bool) []delivery {
	r.t.Helper()
	deadline := time.After(waitLimit)
	for {
		r.mu.Lock()
		got := append([]delivery(nil), r.got...)
		ch := r.cond
		r.mu.Unlock()
		if f(got) {
			return got
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("timed out waiting for %s; got %d requests", what, len(got))
		}
	}
}

// delivered counts successful deliveries per event ID.
func delivered(ds []delivery) map[string]int {
	n := map[string]int{}
	for _, d := range ds {
		if d.ok {
			n[d.header.Get(notify.HeaderIdempotencyKey)]++
		}
	}
	return n
}

func payloadOf(t *testing.T, d delivery) notify.Payload {
	t.Helper()
	var p notify.Payload
	if err := json.Unmarshal(d.body, &p); err != nil {
		t.Fatalf("payload is not JSON: %v: %s", err, d.body)
	}
	return p
}

// waitState waits until the delivery reaches state.
func (e *env) waitState(id int64, state string) *notify.Delivery {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		d, err := e.svc.GetDelivery(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("delivery %d: state %s after %s, want %s", id, d.State, waitLimit, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = errors.Is
var _ = url.Parse
var _ = store.DeliveryDead

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// metric gathers d's metrics and returns the value of the series whose name
// and labels (name{k="v",...} in the text format) start with series.
// counterAtLeast reads a counter until it reaches want (or waitLimit passes)
// and returns its last value. The dispatcher counts an attempt after its
// outcome is committed, so a test that saw the store change may read the
// counter a moment before it moves.
func counterAtLeast(t *testing.T, d *notify.Dispatcher, series string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		v := metric(t, d, series)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metric(t *testing.T, d *notify.Dispatcher, series string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, series) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no series %s in:\n%s", series, text)
	return 0
}
