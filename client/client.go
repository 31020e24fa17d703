// Package client is the typed Go client of the nebula-credential HTTP API
// (`nebula-credential serve`).
//
// Reach for New, then the methods that mirror the Manager: Get, Put, List,
// History, Delete, Purge, Rotate, Rollback, ExtendGrace, GetPolicy,
// SetPolicy, Doctor, Rotations, Resolve, Retry, Backup, Restore, and Watch
// for a resumable stream of change events.
//
//	c, _ := client.New("127.0.0.1:8270", os.Getenv("NEBULA_CREDENTIAL_TOKEN"), nil)
//	cred, err := c.Get(ctx, "prod/db/orders", client.GetOptions{Reveal: true})
//	if errors.Is(err, credential.ErrNotFound) { ... }
//	pw := cred.Secret["password"].Reveal()
//
// Several instances of one deployment (sharing one store) are given as a
// comma-separated list, "https://a:8270,https://b:8270": the client sticks to
// one and fails over to the next when it cannot be reached. Reads and Watch
// move on after any connection failure or 502/503/504; writes move on only
// when the connection was never made, so nothing is applied twice. New
// describes the rules; docs/ha.md compares this with a load balancer.
//
// Errors map back to the root package's sentinels (credential.ErrNotFound,
// ErrPermission, ErrRotationInProgress, ErrInvalid, ErrConflict, ...) so
// callers use errors.Is; *Error carries the HTTP status, the API's error code
// and the request ID, and a failed rotation is a *rotation.RotationError.
// Secret values travel as secret.Value and are never in an error.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// Options tune a Client. The zero value (or nil) means the defaults.
type Options struct {
	// HTTPClient sends the requests; default a client with TLSConfig and no
	// overall timeout (use contexts; the watch stream is long-lived).
	HTTPClient *http.Client
	// TLSConfig for https:// addresses (e.g. a private CA); ignored with HTTPClient.
	TLSConfig *tls.Config
	// UserAgent; default "nebula-credential-client".
	UserAgent string
	// Retries of idempotent reads after a network error, 429, 502, 503 or
	// 504 (default 2; negative: none): with several addresses, further
	// rounds through all of them. RetryWait is the first backoff between
	// rounds (default 200ms), doubled each time, at least any Retry-After
	// (at most 10s).
	Retries   int
	RetryWait time.Duration
	// WatchBackoffMax caps the reconnect backoff of Watch (default 30s).
	WatchBackoffMax time.Duration
	// Logger receives Watch reconnect notices; default discards.
	Logger *slog.Logger
}

// Client talks to one server, or to several instances of it with
// client-side failover, with one token. It is safe for concurrent use.
type Client struct {
	bases []*url.URL
	cur   *atomic.Int32 // index into bases of the address in use (sticky); shared by copies
	token string
	hc    *http.Client
	opts  Options
	log   *slog.Logger
}

// New returns a client for the server at addr ("127.0.0.1:8270",
// "http://host:8270" or "https://host:8270") using the bearer token.
//
// addr may list several instances of one deployment (sharing one store),
// separated by commas: "https://a:8270,https://b:8270". All of them use the
// same token and TLS settings. Requests go to the address in use (the first,
// at the start) until it fails; then the client moves to the next one and
// stays there:
//
//   - Any request moves on, and is sent again to the next address, when it
//     certainly never reached a server: the connection could not be made
//     (refused, no route, DNS failure, dial timeout).
//   - Idempotent reads (GET, HEAD; this includes Watch, Backup and the
//     readiness of the store behind a 503) also move on after a broken
//     connection or an answer of 502, 503 or 504, such as the 503 of an
//     instance whose store is unreachable.
//   - Everything else (Put, Rotate, Rollback, Delete, ...) is never sent twice:
//     once the request may have been received, a broken connection or a 5xx
//     is returned as the error, because the first instance may have applied
//     it. Look before repeating it (Get, Rotations, History).
//
// Reads go through each address once per round and wait between rounds
// (Options.Retries rounds after the first, backoff from Options.RetryWait,
// at least any Retry-After). When every address failed the error is an
// *UnreachableError naming each address and why.
//
// A load balancer in front of the instances does the same job for every
// client at once; see docs/ha.md.
func New(addr, token string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if strings.TrimSpace(strings.ReplaceAll(addr, ",", "")) == "" {
		return nil, fmt.Errorf("%w: the server address is empty", credential.ErrInvalid)
	}
	var bases []*url.URL
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%w: server addresses %q: an empty entry; separate addresses with single commas, e.g. \"a:8270,b:8270\"", credential.ErrInvalid, addr)
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: server address %q: want host:port or http(s)://host:port (several: comma-separated)", credential.ErrInvalid, a)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		bases = append(bases, u)
	}
	if strings.ContainsAny(token, " \r\n") {
		return nil, fmt.Errorf("%w: the token contains whitespace", credential.ErrInvalid)
	}
	if o.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		if o.TLSConfig != nil {
			tr.TLSClientConfig = o.TLSConfig
		}
		o.HTTPClient = &http.Client{Transport: tr}
	}
	if o.UserAgent == "" {
		o.UserAgent = "nebula-credential-client"
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.RetryWait <= 0 {
		o.RetryWait = 200 * time.Millisecond
	}
	if o.WatchBackoffMax <= 0 {
		o.WatchBackoffMax = 30 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{bases: bases, cur: new(atomic.Int32), token: token, hc: o.HTTPClient, opts: o, log: log}, nil
}

// Addr is the base URL of the address in use.
func (c *Client) Addr() string { return c.bases[c.cur.Load()].String() }

// Addrs are the base URLs of every address, in the order given to New.
func (c *Client) Addrs() []string {
	out := make([]string, len(c.bases))
	for i, u := range c.bases {
		out[i] = u.String()
	}
	return out
}

// UnreachableError is returned when no address of a client with several
// addresses answered: Errs[i] is why Addrs[i] failed (last round).
type UnreachableError struct {
	Addrs []string
	Errs  []error
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	b.WriteString("no server answered (tried ")
	b.WriteString(strings.Join(e.Addrs, ", "))
	b.WriteString(")")
	for i, err := range e.Errs {
		fmt.Fprintf(&b, "; %s: %v", e.Addrs[i], err)
	}
	return b.String()
}

// Unwrap returns every address's error, so errors.Is and errors.As see them.
func (e *UnreachableError) Unwrap() []error { return e.Errs }

// Sentinels for API errors that have no counterpart in the root package.
var (
	// ErrRateLimited: the token is over its request rate (HTTP 429).
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: the server timed out or is not ready (HTTP 503).
	ErrUnavailable = errors.New("server unavailable")
	// ErrAuditFailed: the server could not write the audit entry, so it
	// refused to answer.
	ErrAuditFailed = errors.New("audit log write failed")
)

// Error is an error answer of the API.
type Error struct {
	StatusCode int
	Code       string // the API's stable error code ("not_found", ...)
	Message    string // what happened and what to do; never a secret
	RequestID  string
	// Rotation is the journal row of a failed rotate-like request.
	Rotation *Rotation
	// GraceEndsAt is set on a rotation refused during a grace period
	// (code rotation_in_progress): when a new rotation can run.
	GraceEndsAt *time.Time
}

func (e *Error) Error() string {
	s := e.Message
	if s == "" {
		s = http.StatusText(e.StatusCode)
	}
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Unwrap maps the error code to the root package's sentinels.
func (e *Error) Unwrap() error {
	switch e.Code {
	case "not_found":
		return credential.ErrNotFound
	case "forbidden", "unauthenticated":
		return credential.ErrPermission
	case "rotation_in_progress":
		return credential.ErrRotationInProgress
	case "invalid", "too_large", "unsupported_media_type", "method_not_allowed":
		return credential.ErrInvalid
	case "conflict":
		return credential.ErrConflict
	case "grace_ended":
		return rotation.ErrGraceEnded
	case "bad_backup":
		return credential.ErrBadBackup
	case "retry_scheduled":
		return rotation.ErrRetryScheduled
	case "rate_limited":
		return ErrRateLimited
	case "timeout", "unavailable":
		return ErrUnavailable
	case "audit_failed":
		return ErrAuditFailed
	}
	return nil
}

// asError turns an error answer into an error; a failed rotation becomes a
// *rotation.RotationError wrapping the *Error.
func asError(res *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	var b struct {
		Error struct {
			Code      string     `json:"code"`
			Message   string     `json:"message"`
			RequestID string     `json:"request_id"`
			Rotation  *Rotation  `json:"rotation"`
			GraceEnds *time.Time `json:"grace_ends_at"`
		} `json:"error"`
	}
	e := &Error{StatusCode: res.StatusCode, RequestID: res.Header.Get("X-Request-ID")}
	if json.Unmarshal(body, &b) == nil && b.Error.Code != "" {
		e.Code, e.Message, e.Rotation, e.GraceEndsAt = b.Error.Code, b.Error.Message, b.Error.Rotation, b.Error.GraceEnds
		if b.Error.RequestID != "" {
			e.RequestID = b.Error.RequestID
		}
	} else {
		e.Code = codeForStatus(res.StatusCode)
		e.Message = fmt.Sprintf("HTTP %d %s", res.StatusCode, http.StatusText(res.StatusCode))
	}
	if e.Code == "rotation_failed" && e.Rotation != nil {
		r := e.Rotation
		return &rotation.RotationError{ID: r.ID, RotationID: r.RotationID, Step: r.FailedStep, RolledBack: r.Step == rotation.StepRolledBack, Err: e}
	}
	return e
}

func codeForStatus(status int) string {
	switch status {
	case 400:
		return "invalid"
	case 401:
		return "unauthenticated"
	case 403:
		return "forbidden"
	case 404:
		return "not_found"
	case 409:
		return "conflict"
	case 413:
		return "too_large"
	case 429:
		return "rate_limited"
	case 502, 503, 504:
		return "unavailable"
	}
	return "internal"
}

// request is one call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any // JSON-encoded unless an io.Reader
	header http.Header
}

// send performs r, moving to the next address and retrying as New
// describes, and returns a 2xx response (the caller closes its body) or an
// error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	res, _, err := c.sendIdx(ctx, r)
	return res, err
}

// sendIdx is send that also reports the index of the address that answered.
func (c *Client) sendIdx(ctx context.Context, r request) (*http.Response, int, error) {
	idempotent := r.method == http.MethodGet || r.method == http.MethodHead
	rounds := 1
	if idempotent && c.opts.Retries > 0 {
		rounds += c.opts.Retries
	}
	var payload []byte
	var stream io.Reader
	switch b := r.body.(type) {
	case nil:
	case io.Reader:
		stream = b // read once: only a dial error (nothing read yet) moves on
		rounds = 1
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return nil, 0, fmt.Errorf("%w: encode request: %v", credential.ErrInvalid, err)
		}
	}
	n := len(c.bases)
	errs := make([]error, n)
	wait := c.opts.RetryWait
	for round := 0; ; round++ {
		var retryAfter time.Duration
		start := int(c.cur.Load())
		for i := range n {
			k := (start + i) % n
			res, err := c.do(ctx, r, c.bases[k], payload, stream)
			if err == nil {
				if res.StatusCode < 300 {
					c.use(start, k)
					return res, k, nil
				}
				aerr := asError(res)
				res.Body.Close()
				var ae *Error
				if !idempotent || !errors.As(aerr, &ae) || !retryable(ae) {
					c.use(start, k) // it answered
					return nil, k, aerr
				}
				if s, perr := strconv.Atoi(res.Header.Get("Retry-After")); perr == nil {
					retryAfter = max(retryAfter, time.Duration(s)*time.Second)
				}
				errs[k] = aerr
				continue
			}
			if ctx.Err() != nil {
				return nil, k, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			if !neverSent(err) && !(idempotent && networkError(err)) {
				// The request may have been received: not sent again.
				if n > 1 && !idempotent {
					err = fmt.Errorf("%w (not sent to another address: %s may have received it; check before repeating)", err, c.bases[k])
				}
				return nil, k, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			errs[k] = err
		}
		if round+1 >= rounds {
			return nil, start, c.allFailed(r, errs)
		}
		d := max(wait+time.Duration(rand.Int64N(int64(wait))), retryAfter)
		d = min(d, 10*time.Second)
		select {
		case <-ctx.Done():
			return nil, start, c.allFailed(r, errs)
		case <-time.After(d):
		}
		wait *= 2
	}
}

// do sends r once to base.
func (c *Client) do(ctx context.Context, r request, base *url.URL, payload []byte, stream io.Reader) (*http.Response, error) {
	u := *base
	u.Path += r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	var body io.Reader
	switch {
	case stream != nil:
		body = stream
	case payload != nil:
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	req.Header.Set("Accept", "application/json")
	switch {
	case payload != nil:
		req.Header.Set("Content-Type", "application/json")
	case stream != nil:
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	return c.hc.Do(req)
}

// use makes address k the one in use, if it was from when the request began.
func (c *Client) use(from, k int) {
	if k != from && c.cur.CompareAndSwap(int32(from), int32(k)) {
		c.log.Warn("switched server", "from", c.bases[from].String(), "to", c.bases[k].String())
	}
}

// next moves off address k (a watch stream on it broke), if it is in use.
func (c *Client) next(k int) {
	if len(c.bases) > 1 && c.cur.CompareAndSwap(int32(k), int32((k+1)%len(c.bases))) {
		c.log.Warn("switched server", "from", c.bases[k].String(), "to", c.bases[(k+1)%len(c.bases)].String())
	}
}

// allFailed is the error after every address failed: with one address its
// error as it is, with several an *UnreachableError naming each.
func (c *Client) allFailed(r request, errs []error) error {
	if len(errs) == 1 {
		var ae *Error
		if errors.As(errs[0], &ae) {
			return errs[0]
		}
		return fmt.Errorf("%s %s: %w", r.method, r.path, errs[0])
	}
	ue := &UnreachableError{Addrs: c.Addrs(), Errs: errs}
	for i, err := range ue.Errs {
		var uerr *url.Error
		switch {
		case err == nil:
			ue.Errs[i] = errors.New("not tried")
		case errors.As(err, &uerr):
			ue.Errs[i] = uerr.Err // the address is named already
		}
	}
	return fmt.Errorf("%s %s: %w", r.method, r.path, ue)
}

// neverSent reports a transport error that left the request unsent: the
// connection was never made (refused, unreachable, DNS, dial timeout).
func neverSent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de)
}

// networkError reports a transport error after which an idempotent read
// may be sent again (connection reset, EOF before the answer, timeouts).
func networkError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func retryable(e *Error) bool {
	switch e.StatusCode {
	case 429, 502, 504:
		return true
	case 503:
		return e.Code != "retry_scheduled"
	}
	return false
}

// call sends r and decodes a JSON answer into out (if not nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	res, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", r.method, r.path, err)
	}
	return nil
}

// idPath checks a credential ID and builds a path from it.
func idPath(prefix, id string) (string, error) {
	if err := credential.ValidateID(id); err != nil {
		return "", err
	}
	return prefix + id, nil
}
