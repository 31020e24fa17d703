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
	// 504 (default 2; negative: none). RetryWait is the first backoff
	// (default 200ms), doubled each time, capped by any Retry-After.
	Retries   int
	RetryWait time.Duration
	// WatchBackoffMax caps the reconnect backoff of Watch (default 30s).
	WatchBackoffMax time.Duration
	// Logger receives Watch reconnect notices; default discards.
	Logger *slog.Logger
}

// Client talks to one server with one token. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	opts  Options
	log   *slog.Logger
}

// New returns a client for the server at addr ("127.0.0.1:8270",
// "http://host:8270" or "https://host:8270") using the bearer token.
func New(addr, token string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if addr == "" {
		return nil, fmt.Errorf("%w: the server address is empty", credential.ErrInvalid)
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: server address %q: want host:port or http(s)://host:port", credential.ErrInvalid, addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
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
	return &Client{base: u, token: token, hc: o.HTTPClient, opts: o, log: log}, nil
}

// Addr is the server's base URL.
func (c *Client) Addr() string { return c.base.String() }

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

// send performs r, retrying idempotent reads, and returns a 2xx response
// (the caller closes its body) or an error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	retries := c.opts.Retries
	if r.method != http.MethodGet || retries < 0 {
		retries = 0
	}
	var payload []byte
	var stream io.Reader
	switch b := r.body.(type) {
	case nil:
	case io.Reader:
		stream = b
		retries = 0
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("%w: encode request: %v", credential.ErrInvalid, err)
		}
	}
	u := *c.base
	u.Path += r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	wait := c.opts.RetryWait
	for attempt := 0; ; attempt++ {
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
		res, err := c.hc.Do(req)
		var retryAfter time.Duration
		if err == nil {
			if res.StatusCode < 300 {
				return res, nil
			}
			aerr := asError(res)
			res.Body.Close()
			var ae *Error
			if attempt >= retries || !errors.As(aerr, &ae) || !retryable(ae) {
				return nil, aerr
			}
			if s, perr := strconv.Atoi(res.Header.Get("Retry-After")); perr == nil {
				retryAfter = time.Duration(s) * time.Second
			}
			err = aerr
		} else {
			if ctx.Err() != nil || attempt >= retries {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			var ne net.Error
			var oe *net.OpError
			if !errors.As(err, &ne) && !errors.As(err, &oe) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
		}
		d := max(wait+time.Duration(rand.Int64N(int64(wait))), retryAfter)
		d = min(d, 10*time.Second)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(d):
		}
		wait *= 2
	}
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
