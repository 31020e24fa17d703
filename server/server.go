// Package server is nebula-credential's HTTP API: a JSON API under /v1/ with
// bearer tokens and per-prefix grants, a hash-chained audit entry for every
// request, Prometheus metrics, health checks and a server-sent-events watch
// stream.
//
// Reach for New to get an http.Handler over a *credential.Manager, and
// ListenAndServe to run it with graceful shutdown; CreateToken, ListTokens and
// RevokeToken manage tokens directly in the store (the CLI uses them to
// bootstrap access). The API is described by /v1/openapi.json.
//
// Credential IDs contain '/', so an ID is always the tail of the path and each
// action on a credential has its own prefix:
//
//	GET|PUT|DELETE /v1/credentials/{id}     read, write, soft-delete (?purge=true)
//	GET            /v1/history/{id}         versions and events
//	POST           /v1/rotate/{id}          rotate now
//	POST           /v1/rollback/{id}        roll back
//	GET|PUT        /v1/policy/{id}          rotation settings
//	POST           /v1/grace/{id}           extend the grace period
//	GET            /v1/doctor/{id}          diagnose
//	POST           /v1/resolve/{id}         close a rotation that needs attention
//	POST           /v1/retry/{id}           retry a failed rotation
//
// Authorisation is decided from the token's grants and the ID alone, before
// the store is consulted: a token without a grant covering an ID gets 403
// forbidden whether or not the credential exists. Any grant covering an ID
// shows its metadata (state, versions, history, policy, rotations, doctor);
// read is needed for secret values (?reveal=true) and for watch events.
//
// Audit: every request runs with audit.WithActor("token:<id>", request ID),
// so the Manager's own entries (written in the same transaction as the
// change) name the token and the request. The server adds one entry per
// request for what the Manager does not record: reads (outcome "allowed",
// written while the read runs), denials ("denied"), failures ("error:<code>")
// and the outcome of writes ("ok"). No answer is sent before that entry is
// committed: if it cannot be written the request fails with audit_failed.
// Entries of concurrent requests share one transaction (group commit).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/server/console"
	"github.com/nebula-credential/nebula-credential/store"
)

// Config configures New. The zero value of every optional field means its default.
type Config struct {
	// Manager serves the credentials. Required.
	Manager *credential.Manager
	// Logger receives access logs and errors (never secret values); default discards.
	Logger *slog.Logger
	// Clock returns the time; default time.Now.
	Clock func() time.Time

	// RequestTimeout bounds ordinary requests (default 30s).
	RequestTimeout time.Duration
	// LongRequestTimeout bounds rotate, rollback, retry, resolve, doctor,
	// grace, backup, restore and key rotation (default 10m). The watch
	// stream has no timeout.
	LongRequestTimeout time.Duration
	// MaxBodyBytes bounds JSON request bodies (default 1 MiB).
	MaxBodyBytes int64
	// MaxBackupBytes bounds the body of POST /v1/restore (default 1 GiB).
	MaxBackupBytes int64

	// RateLimit is each token's sustained request rate (default
	// DefaultRateLimit, 1,000/s: enough for an application that fetches its
	// credential on every new connection, see docs/performance.md); rate.Inf
	// disables the limit. RateBurst is its burst (default 2×, at least 10).
	RateLimit rate.Limit
	RateBurst int
	// AuthFailureLimit bounds the rate of audited authentication failures
	// across all clients (default 10/s, burst 20); beyond it, requests with a
	// bad token get 429 without an audit entry.
	AuthFailureLimit rate.Limit

	// TokenCacheTTL is how long a looked-up token is trusted before it is
	// read from the store again (default 2s; negative disables the cache). A
	// token revoked through the API stops working at once; one revoked by the
	// CLI directly in the store or through another server sharing it, within
	// this time; serve disables it on a shared (PostgreSQL) store for that reason.
	TokenCacheTTL time.Duration

	// WatchPollInterval is how often the watch stream polls the store's
	// events table (default 200ms); engine events wake it sooner.
	WatchPollInterval time.Duration
	// WatchHeartbeat is the interval of keep-alive comments (default 15s).
	WatchHeartbeat time.Duration

	// PublicMetrics serves /metrics without a token, covering every
	// credential. By default /metrics needs a token, and per-credential
	// series cover only the credentials the token's grants cover.
	PublicMetrics bool
	// Notify, if set, is the webhook dispatcher this process runs: its
	// metrics join /metrics.
	Notify *notify.Dispatcher
	// MetricsMaxCredentials bounds the per-credential series of one scrape
	// (default 1000); MetricsMaxScan bounds the credentials read per
	// refresh (default 10000); MetricsCacheTTL is how long a refresh is
	// reused (default 5s).
	MetricsMaxCredentials int
	MetricsMaxScan        int
	MetricsCacheTTL       time.Duration

	// Consumers configures consumer tracking and the early end of grace.
	Consumers ConsumerConfig

	// Instance is how this server announces itself to the others sharing
	// its store (heartbeats, `nebula-credential status`).
	Instance InstanceConfig
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Manager == nil:
		return errors.New("server: Config.Manager is required")
	case c.RequestTimeout < 0, c.LongRequestTimeout < 0:
		return errors.New("server: timeouts must not be negative")
	case c.MaxBodyBytes < 0, c.MaxBackupBytes < 0:
		return errors.New("server: body limits must not be negative")
	case c.RateLimit < 0, c.RateBurst < 0, c.AuthFailureLimit < 0:
		return errors.New("server: rate limits must not be negative")
	case c.MetricsMaxCredentials < 0, c.MetricsMaxScan < 0:
		return errors.New("server: metrics bounds must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.LongRequestTimeout == 0 {
		c.LongRequestTimeout = 10 * time.Minute
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxBackupBytes == 0 {
		c.MaxBackupBytes = 1 << 30
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = max(10, int(2*float64(min(c.RateLimit, 1e6))))
	}
	if c.AuthFailureLimit == 0 {
		c.AuthFailureLimit = 10
	}
	if c.TokenCacheTTL == 0 {
		c.TokenCacheTTL = 2 * time.Second
	}
	if c.WatchPollInterval <= 0 {
		c.WatchPollInterval = 200 * time.Millisecond
	}
	if c.WatchHeartbeat <= 0 {
		c.WatchHeartbeat = 15 * time.Second
	}
	if c.MetricsMaxCredentials == 0 {
		c.MetricsMaxCredentials = 1000
	}
	if c.MetricsMaxScan == 0 {
		c.MetricsMaxScan = 10000
	}
	if c.MetricsCacheTTL == 0 {
		c.MetricsCacheTTL = 5 * time.Second
	}
}

var _ http.Handler = (*Server)(nil)

// Server is the HTTP API. It is an http.Handler; Close releases it.
type Server struct {
	cfg   Config
	m     *credential.Manager
	log   *slog.Logger
	clock func() time.Time
	mux   *http.ServeMux
	// routes as registered, for the OpenAPI consistency test.
	routes []*route

	audit *auditLog
	hub   *hub
	met   *metrics
	ui    *console.Console
	cons  *consumers
	inst  *instance

	tokMu    sync.Mutex
	tokCache map[[32]byte]cachedToken
	tokGen   uint64 // bumped by dropTokens: a lookup begun before is not cached
	limiters map[string]*rate.Limiter
	authFail *rate.Limiter

	stopOnce   sync.Once
	stop       chan struct{} // closed by Shutdown/Close: streams end
	closeOnce  sync.Once
	unsub      func()
	unsubStore func()
}

type cachedToken struct {
	tok     *Token
	fetched time.Time
}

// New returns the API handler over cfg.Manager. Call Close when done.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Server{
		cfg: cfg, m: cfg.Manager, log: cfg.Logger, clock: cfg.Clock,
		mux:      http.NewServeMux(),
		audit:    &auditLog{st: cfg.Manager.Store(), timeout: cfg.RequestTimeout},
		tokCache: map[[32]byte]cachedToken{},
		limiters: map[string]*rate.Limiter{},
		authFail: rate.NewLimiter(cfg.AuthFailureLimit, 2*int(min(cfg.AuthFailureLimit, 1e6))),
		stop:     make(chan struct{}),
	}
	s.hub = newHub(s)
	s.met = newMetrics(s)
	s.cons = newConsumers(s, cfg.Consumers)
	s.inst = newInstance(s, cfg.Instance)
	s.unsub = s.m.Engine().Subscribe(s.met.onEvent)
	s.unsubStore = s.followStore()
	for _, rt := range append(s.table(), s.notifyRoutes()...) {
		s.register(rt)
	}
	ui, err := s.newConsole()
	if err != nil {
		return nil, err
	}
	s.ui = ui
	s.mux.Handle(console.Prefix, s.consoleHandler())
	s.mux.HandleFunc("/", s.unmatched)
	return s, nil
}

// Shutdown ends the watch streams so that an http.Server's Shutdown can
// complete; ListenAndServe calls it. Other requests are unaffected.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() { close(s.stop) })
}

// Close ends the watch streams and stops the metrics subscription. It does
// not close the Manager.
func (s *Server) Close() error {
	s.Shutdown()
	s.closeOnce.Do(func() {
		s.unsub()
		s.unsubStore()
		s.met.close()
		s.ui.Close()
		s.cons.close()
		s.inst.close()
	})
	return nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info := &reqInfo{requestID: requestID(r.Header.Get("X-Request-ID"))}
	w.Header()["X-Request-Id"] = []string{info.requestID} // Set would canonicalise the key anew
	rec := &recorder{ResponseWriter: w, status: 0}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "request_id", info.requestID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec.status == 0 {
				s.writeError(rec, info.requestID, errorf(http.StatusInternalServerError, CodeInternal, "internal error (request %s)", info.requestID))
			}
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		route := info.route
		if route == "" {
			route = "unmatched"
		}
		s.met.observeHTTP(route, status, d)
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("request_id", info.requestID),
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Int64("bytes", rec.bytes),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.String("remote", r.RemoteAddr),
		}
		if r.URL.RawQuery != "" {
			attrs = append(attrs, slog.String("query", r.URL.RawQuery))
		}
		if info.token != "" {
			attrs = append(attrs, slog.String("token", info.token))
		}
		if info.errCode != "" {
			attrs = append(attrs, slog.String("error_code", info.errCode), slog.String("error", info.errMsg))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	}()
	s.mux.ServeHTTP(rec, r)
}

// reqInfo carries what the access log needs from the inner handler.
type reqInfo struct {
	requestID string
	route     string
	token     string
	errCode   string
	errMsg    string
}

type infoKey struct{}

func infoOf(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{requestID: requestID("")}
}

// recorder records the status and size of a response. It keeps Flush and
// the deadlines of the underlying writer reachable through Unwrap.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// requestID keeps a well-formed incoming ID or makes a new one.
func requestID(in string) string {
	if in != "" && len(in) <= 128 {
		ok := true
		for _, c := range in {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
				ok = false
				break
			}
		}
		if ok {
			return in
		}
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// timeoutKind selects a route's deadline.
type timeoutKind int

const (
	normalTimeout timeoutKind = iota
	longTimeout
	noTimeout
)

// route is one registered operation.
type route struct {
	method  string
	path    string
	op      string // audit action and log name
	public  bool   // no token
	audited bool   // the server appends an audit entry for the request
	timeout timeoutKind
	handle  func(*request) error
	pat     string // method and path, set by register
}

func (rt *route) pattern() string {
	if rt.pat != "" {
		return rt.pat
	}
	return rt.method + " " + rt.path
}

// request is one authenticated call of a route.
type request struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	ctx    context.Context
	rt     *route
	info   *reqInfo
	tok    *Token
	now    time.Time
	id     string // the credential the request is about, for audit
	detail string

	responded bool        // the response has started
	audited   bool        // the outcome entry was written (or failed)
	early     *auditBatch // auditEarly's entry's batch, if started
	params    url.Values  // the query, parsed once
}

func (s *Server) register(rt *route) {
	rt.pat = rt.method + " " + rt.path // made once, not per request
	s.routes = append(s.routes, rt)
	s.mux.HandleFunc(rt.pattern(), func(w http.ResponseWriter, r *http.Request) {
		s.serveRoute(rt, w, r)
	})
}

func (s *Server) serveRoute(rt *route, w http.ResponseWriter, r *http.Request) {
	info := infoOf(r)
	info.route = rt.pattern()
	rq := &request{s: s, w: w, r: r, rt: rt, info: info, now: s.clock()}
	ctx := r.Context()
	var cancel context.CancelFunc = func() {}
	rc := http.NewResponseController(w)
	// A request without a body has nothing left to read: it needs no read
	// deadline (nor the two timer updates of setting and clearing one).
	body := r.Body != nil && r.Body != http.NoBody
	switch rt.timeout {
	case normalTimeout, longTimeout:
		d := s.cfg.RequestTimeout
		if rt.timeout == longTimeout {
			d = s.cfg.LongRequestTimeout
		}
		ctx, cancel = context.WithTimeout(ctx, d)
		// A client that stops reading cannot hold the handler past its time.
		_ = rc.SetWriteDeadline(time.Now().Add(d + 5*time.Second))
		if body {
			_ = rc.SetReadDeadline(time.Now().Add(d))
		}
	case noTimeout:
		_ = rc.SetWriteDeadline(time.Time{})
		_ = rc.SetReadDeadline(time.Time{})
	}
	defer cancel()
	if rt.timeout != noTimeout {
		// The deadlines outlive the request on a kept-alive connection:
		// clear them for whatever comes next on it.
		defer func() {
			_ = rc.SetWriteDeadline(time.Time{})
			if body {
				_ = rc.SetReadDeadline(time.Time{})
			}
		}()
	}
	// Every request carries a principal, an empty one until authentication:
	// only code outside the API (the local operator) runs without one.
	rq.ctx = acl.WithPrincipal(ctx, acl.Principal{})

	if !rt.public || (rt.path == "/metrics" && !s.cfg.PublicMetrics) {
		tok, err := s.authenticate(ctx, r, info)
		if err != nil {
			s.finish(rq, err)
			return
		}
		rq.tok = tok
		info.token = tok.ID
		if !s.allow(tok.ID) {
			s.finish(rq, errorf(http.StatusTooManyRequests, CodeRateLimited, "token %s is over its rate limit of %v requests/s: slow down", tok.ID, s.cfg.RateLimit))
			return
		}
		rq.ctx = acl.WithPrincipal(audit.WithActor(ctx, tok.Actor(), info.requestID), acl.Principal{Actor: tok.Actor(), Grants: tok.Grants})
	}
	// A malformed query (a bad %-escape, a ';') is refused: dropping the
	// parameter would answer a wider question than the one asked.
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.finish(rq, invalidf("malformed query string: %s", queryError(err)))
		return
	}
	rq.params = params
	s.finish(rq, rt.handle(rq))
}

// queryError describes a url.ParseQuery error without quoting the query.
func queryError(err error) string {
	var ee url.EscapeError
	if errors.As(err, &ee) {
		return "invalid %-escape: encode '%' as %25"
	}
	return "use name=value pairs separated by '&', with reserved characters %-encoded"
}

// finish writes the error response of a failed request, auditing it first.
func (s *Server) finish(rq *request, err error) {
	if err == nil {
		return
	}
	ae := classify(err)
	rq.info.errCode, rq.info.errMsg = ae.code, ae.msg
	if ae.status >= 500 && ae.code != CodeRetryScheduled && ae.code != CodeRotationFailed {
		s.log.Error("request failed", "request_id", rq.info.requestID, "route", rq.rt.pattern(), "code", ae.code, "err", ae.msg)
	}
	if rq.responded {
		return
	}
	if rq.early != nil {
		// The early entry says access was allowed; record the failure too.
		aerr := s.audit.wait(rq.ctx, rq.early)
		rq.early = nil
		if aerr != nil {
			s.writeError(rq.w, rq.info.requestID, s.auditFailed(rq, aerr))
			return
		}
	}
	if rq.tok != nil && rq.rt.audited && !rq.audited {
		outcome := "error:" + ae.code
		if ae.code == CodeForbidden {
			outcome = "denied"
		}
		if aerr := s.auditOutcome(rq, outcome); aerr != nil {
			ae = s.auditFailed(rq, aerr)
		}
	}
	s.writeError(rq.w, rq.info.requestID, ae)
}

func (s *Server) auditFailed(rq *request, err error) *apiError {
	s.log.Error("audit write failed: refusing the request", "request_id", rq.info.requestID, "route", rq.rt.pattern(), "err", err)
	if errors.Is(err, store.ErrBusy) || errors.Is(err, context.DeadlineExceeded) {
		// Overload, not a broken store: the client may retry. Still no
		// result without its audit entry.
		rq.info.errCode, rq.info.errMsg = CodeUnavailable, err.Error()
		ae := errorf(http.StatusServiceUnavailable, CodeUnavailable, "the server is busy and could not write the audit entry in time, so no result is returned (request %s): retry after a second", rq.info.requestID)
		ae.retryAfter = time.Second
		return ae
	}
	if storeUnreachable(err) {
		// The store is unreachable (restarting, failing over): an outage
		// to retry, as for the request itself.
		rq.info.errCode, rq.info.errMsg = CodeUnavailable, err.Error()
		ae := errorf(http.StatusServiceUnavailable, CodeUnavailable, "the store could not be reached to write the audit entry, so no result is returned (request %s): retry shortly (GET /readyz says whether the store is reachable)", rq.info.requestID)
		ae.retryAfter = time.Second
		return ae
	}
	rq.info.errCode, rq.info.errMsg = CodeAuditFailed, err.Error()
	return errorf(http.StatusInternalServerError, CodeAuditFailed, "the audit log could not be written, so no result is returned (request %s): check the store; a write the Manager made is recorded by its own audit entry", rq.info.requestID)
}

// auditOutcome appends the request's own entry.
func (s *Server) auditOutcome(rq *request, outcome string) error {
	rq.audited = true
	actor := "anonymous"
	if rq.tok != nil {
		actor = rq.tok.Actor()
	}
	return s.audit.Append(rq.ctx, audit.Entry{
		At: rq.now, Actor: actor, Action: rq.rt.op, CredentialID: rq.id,
		Outcome: outcome, RequestID: rq.info.requestID, Detail: rq.detail,
	})
}

// respond audits the successful outcome, then writes v as JSON. Nothing is
// written when the audit entry cannot be committed (fail closed).
func (rq *request) respond(status int, v any) error {
	if err := rq.settle(); err != nil {
		return err
	}
	rq.responded = true
	writeJSON(rq.w, status, v)
	return nil
}

// respondCredential is respond with c.Wire(reveal), encoded by
// writeCredential.
func (rq *request) respondCredential(status int, c *credential.Credential, reveal bool) error {
	if err := rq.settle(); err != nil {
		return err
	}
	rq.responded = true
	writeCredential(rq.w, status, c, reveal)
	return nil
}

// settle waits for the request's audit entry to be committed (writing it
// first if auditEarly did not start it): nothing may be answered before.
func (rq *request) settle() error {
	if rq.early != nil {
		err := rq.s.audit.wait(rq.ctx, rq.early)
		rq.early = nil
		if err != nil {
			return rq.s.auditFailed(rq, err)
		}
	} else if rq.rt.audited && rq.tok != nil {
		if err := rq.s.auditOutcome(rq, "ok"); err != nil {
			return rq.s.auditFailed(rq, err)
		}
	}
	return nil
}

// auditEarly starts writing the entry of an authorised read, with outcome
// "allowed", while the read runs; respond waits for it before answering, so
// reads stay fail-closed but do not pay for the audit commit after the read.
// A read that then fails adds a second entry with its error.
func (rq *request) auditEarly() {
	if !rq.rt.audited || rq.tok == nil {
		return
	}
	rq.early = rq.s.audit.start(audit.Entry{
		At: rq.now, Actor: rq.tok.Actor(), Action: rq.rt.op, CredentialID: rq.id,
		Outcome: "allowed", RequestID: rq.info.requestID, Detail: rq.detail,
	})
}

// The values of writeJSON's headers, shared by every response: net/http only
// reads them.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func setJSONHeaders(h http.Header) {
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
}

func (s *Server) writeError(w http.ResponseWriter, reqID string, ae *apiError) {
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(ae.retryAfter.Seconds()+0.999)))
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nebula-credential"`)
	}
	if ae.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, ae.status, errorBody{Error: errorDetail{Code: ae.code, Message: ae.msg, RequestID: reqID, Rotation: ae.rotation, GraceEndsAt: ae.graceEndsAt}})
}

// authorize checks perm on credential id from the grants alone: the answer
// never depends on whether the credential exists.
func (rq *request) authorize(perm acl.Permission, id string) error {
	rq.id = id
	if acl.Allowed(rq.tok.Grants, perm, id) {
		return nil
	}
	what := id
	if id == "" {
		what = "the whole store"
	}
	return errorf(http.StatusForbidden, CodeForbidden, "token %s has no %s grant covering %s: ask an admin for one (e.g. `nebula-credential token create --grant %s:%s`)", rq.tok.ID, perm, what, perm, grantHint(id))
}

// see checks that some grant covers id (metadata access).
func (rq *request) see(id string) error {
	rq.id = id
	if acl.Visible(rq.tok.Grants, id) {
		return nil
	}
	return errorf(http.StatusForbidden, CodeForbidden, "token %s has no grant covering %s: ask an admin for one (e.g. `nebula-credential token create --grant read:%s`)", rq.tok.ID, id, grantHint(id))
}

func grantHint(id string) string {
	if id == "" {
		return "*"
	}
	return id
}

// authenticate resolves the bearer token.
func (s *Server) authenticate(ctx context.Context, r *http.Request, info *reqInfo) (*Token, error) {
	h := r.Header.Get("Authorization")
	scheme, value, ok := strings.Cut(h, " ")
	var err error
	var tok *Token
	switch {
	case h == "":
		err = errorf(http.StatusUnauthorized, CodeUnauthenticated, "no token: send `Authorization: Bearer nct_...` (create one with `nebula-credential token create`)")
	case !ok || !strings.EqualFold(scheme, "Bearer"):
		err = errorf(http.StatusUnauthorized, CodeUnauthenticated, "the Authorization header must be `Bearer nct_...`")
	default:
		tok, err = s.lookupToken(ctx, strings.TrimSpace(value))
		if errors.Is(err, ErrTokenInvalid) {
			err = errorf(http.StatusUnauthorized, CodeUnauthenticated, "the token is unknown, revoked or expired: ask an admin for a new one")
		}
	}
	if err == nil {
		return tok, nil
	}
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusUnauthorized {
		return nil, err
	}
	// Audit the failure, within a global budget so that a flood of bad
	// tokens cannot flood the log.
	if !s.authFail.Allow() {
		return nil, errorf(http.StatusTooManyRequests, CodeRateLimited, "too many failed authentications: slow down")
	}
	if aerr := s.audit.Append(ctx, audit.Entry{At: s.clock(), Actor: "anonymous", Action: "auth", Outcome: "denied", RequestID: info.requestID, Detail: fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, ae.msg)}); aerr != nil {
		s.log.Error("audit write failed", "request_id", info.requestID, "err", aerr)
		return nil, errorf(http.StatusInternalServerError, CodeAuditFailed, "the audit log could not be written, so the request was refused (request %s)", info.requestID)
	}
	return nil, ae
}

func (s *Server) lookupToken(ctx context.Context, value string) (*Token, error) {
	if !strings.HasPrefix(value, TokenPrefix) || len(value) > 128 {
		return nil, ErrTokenInvalid
	}
	var key [32]byte
	copy(key[:], HashToken(value))
	now := s.clock()
	if s.cfg.TokenCacheTTL > 0 {
		s.tokMu.Lock()
		c, ok := s.tokCache[key]
		s.tokMu.Unlock()
		if ok && now.Sub(c.fetched) < s.cfg.TokenCacheTTL && now.Sub(c.fetched) >= 0 {
			if c.tok.expired(now) {
				return nil, ErrTokenInvalid
			}
			return c.tok, nil
		}
	}
	s.tokMu.Lock()
	gen := s.tokGen
	s.tokMu.Unlock()
	tok, err := Authenticate(ctx, s.m.Store(), value, now)
	if err != nil {
		return nil, err
	}
	if s.cfg.TokenCacheTTL > 0 {
		s.tokMu.Lock()
		if len(s.tokCache) > 10000 {
			clear(s.tokCache)
		}
		if gen == s.tokGen {
			s.tokCache[key] = cachedToken{tok: tok, fetched: now}
		}
		s.tokMu.Unlock()
	}
	return tok, nil
}

// forgetToken drops a revoked token from the cache.
func (s *Server) forgetToken(id string) {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	for k, c := range s.tokCache {
		if c.tok.ID == id {
			delete(s.tokCache, k)
		}
	}
	delete(s.limiters, id)
}

// allow applies the token's rate limit.
func (s *Server) allow(tokenID string) bool {
	if s.cfg.RateLimit == rate.Inf {
		return true
	}
	s.tokMu.Lock()
	l, ok := s.limiters[tokenID]
	if !ok {
		if len(s.limiters) > 10000 {
			clear(s.limiters)
		}
		l = rate.NewLimiter(s.cfg.RateLimit, s.cfg.RateBurst)
		s.limiters[tokenID] = l
	}
	s.tokMu.Unlock()
	return l.Allow()
}

// unmatched answers paths and methods no route serves, in JSON.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	info := infoOf(r)
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" && p != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, info.requestID, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	s.writeError(w, info.requestID, errorf(http.StatusNotFound, CodeNotFound, "no such endpoint %s %s: see /v1/openapi.json", r.Method, r.URL.Path))
}
