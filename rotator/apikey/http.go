package apikey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// maxBody bounds what is read from a response.
const maxBody = 1 << 20

// call is one rendered request plus everything needed to describe its failure
// without revealing a secret.
type call struct {
	op      string // short step name for errors ("create key")
	req     *Request
	vars    vars
	secrets []string // every secret value the request or response may carry
	headers map[string]string
}

// response is a successful call's result.
type response struct {
	status int
	body   []byte
}

// do renders and sends c. A status outside the expected set is returned as a
// classified *rotator.Error together with the response, so callers can accept
// statuses such as 404 on revoke.
func (r *Rotator) do(ctx context.Context, c call) (*response, error) {
	u, err := renderURL(c.req.URL, c.vars)
	if err != nil {
		return nil, r.fail(c, rotator.ClassConfig, "url: %v", err)
	}
	var body io.Reader
	if c.req.Body != "" {
		esc := rawEscape
		switch ct := c.req.contentType(); {
		case strings.Contains(ct, "json"):
			esc = jsonEscape
		case strings.Contains(ct, "x-www-form-urlencoded"):
			esc = url.QueryEscape
		}
		b, err := render(c.req.Body, c.vars, esc)
		if err != nil {
			return nil, r.fail(c, rotator.ClassConfig, "body: %v", err)
		}
		body = strings.NewReader(b)
	}
	hreq, err := http.NewRequestWithContext(ctx, c.req.method(), u.String(), body)
	if err != nil {
		return nil, r.fail(c, rotator.ClassConfig, "build request for %s", redactURL(u))
	}
	if body != nil {
		hreq.Header.Set("Content-Type", c.req.contentType())
	}
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", r.cfg.UserAgent)
	for k, v := range c.req.Headers {
		val, err := render(v, c.vars, rawEscape)
		if err != nil {
			return nil, r.fail(c, rotator.ClassConfig, "header %s: %v", k, err)
		}
		hreq.Header.Set(k, val)
	}
	for k, v := range c.headers {
		hreq.Header.Set(k, v)
	}
	if ba := c.req.BasicAuth; ba != nil {
		user, err := render(ba.Username, c.vars, rawEscape)
		if err != nil {
			return nil, r.fail(c, rotator.ClassConfig, "basic_auth.username: %v", err)
		}
		pass, err := render(ba.Password, c.vars, rawEscape)
		if err != nil {
			return nil, r.fail(c, rotator.ClassConfig, "basic_auth.password: %v", err)
		}
		hreq.SetBasicAuth(user, pass)
		// A server echoing the header would show base64("user:pass").
		c.secrets = append(c.secrets, user+":"+pass)
	}

	resp, err := r.cfg.HTTPClient.Do(hreq)
	if err != nil {
		// The transport error embeds the URL, which may carry a secret in its
		// query; it is redacted below with every other secret.
		class := rotator.ClassTransient
		if errors.Is(err, context.Canceled) {
			class = rotator.ClassUnknown
		}
		return nil, r.fail(c, class, "%s %s: %v", hreq.Method, redactURL(u), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, r.fail(c, rotator.ClassTransient, "%s %s: reading response: %v", hreq.Method, redactURL(u), err)
	}
	out := &response{status: resp.StatusCode, body: b}
	if c.req.ExpectedStatus.ok(resp.StatusCode) {
		return out, nil
	}
	e := r.statusError(c, hreq.Method, u, resp, b)
	return out, e
}

// statusError classifies an unexpected HTTP status.
func (r *Rotator) statusError(c call, method string, u *url.URL, resp *http.Response, body []byte) *rotator.Error {
	code := resp.StatusCode
	var class rotator.Class
	var retryAfter time.Duration
	switch {
	case code == http.StatusTooManyRequests || code >= 500:
		class = rotator.ClassTransient
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), r.cfg.Now())
	case code == http.StatusConflict:
		// A concurrent request with the same idempotency key is in flight.
		class = rotator.ClassTransient
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), r.cfg.Now())
	case code == http.StatusUnauthorized:
		class = rotator.ClassAuth
	case code == http.StatusForbidden:
		class = rotator.ClassPermission
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		class = rotator.ClassConfig
	case code >= 400:
		class = rotator.ClassConfig
	default:
		class = rotator.ClassUnknown
	}
	msg := fmt.Sprintf("%s %s: unexpected status %s", method, redactURL(u), resp.Status)
	// Only error responses are quoted, shortened and redacted: a success body
	// would hold the minted key.
	// Redact before shortening, so a cut cannot leave half a secret behind.
	if code >= 400 && len(body) > 0 {
		msg += ": " + snippet([]byte(redact(string(body), c.secrets)))
	}
	e := &rotator.Error{Class: class, Op: c.op, RetryAfter: retryAfter, Err: errors.New(redact(msg, c.secrets))}
	if class == rotator.ClassPermission {
		e.Privilege = c.op
	}
	return e
}

// fail builds a redacted error for call c.
func (r *Rotator) fail(c call, class rotator.Class, format string, args ...any) *rotator.Error {
	return &rotator.Error{Class: class, Op: c.op, Err: errors.New(redact(fmt.Sprintf(format, args...), c.secrets))}
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(h); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// redactURL prints u without its query and userinfo, where secrets may sit.
func redactURL(u *url.URL) string {
	v := *u
	v.User = nil
	if v.RawQuery != "" {
		v.RawQuery = "…"
	}
	v.Fragment = ""
	return v.String()
}

// snippet shortens an error body to one printable line.
func snippet(b []byte) string {
	const limit = 200
	b = bytes.TrimSpace(b)
	if len(b) > limit {
		b = b[:limit]
		for !utf8.Valid(b) && len(b) > 0 {
			b = b[:len(b)-1]
		}
		b = append(b, "…"...)
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
}

// secretsOf lists the secret values of maps for redaction.
func secretsOf(maps ...secret.Map) []string {
	var out []string
	for _, m := range maps {
		for _, v := range m {
			if p := v.Reveal(); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// redact replaces every secret, and the encodings in which a request or a
// server could echo it, with [REDACTED].
func redact(msg string, secrets []string) string {
	var vals []string
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		htmlSafe, _ := json.Marshal(s) // how most JSON encoders echo it
		vals = append(vals, s, url.PathEscape(s), url.QueryEscape(s), jsonEscape(s), string(htmlSafe[1:len(htmlSafe)-1]),
			base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s)))
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	for _, v := range vals {
		msg = strings.ReplaceAll(msg, v, secret.Redacted)
	}
	return msg
}
