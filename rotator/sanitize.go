package rotator

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strings"

	"github.com/nebula-credential/nebula-credential/secret"
)

// Sanitize wraps r so that no secret value seen in a request or returned by
// Stage can appear in the text of an error it returns. The error keeps its Class,
// Op, Privilege and RetryAfter so Retryable and ClassOf still work; the original
// chain is dropped, since a wrapped driver error may print the secret itself.
func Sanitize(r Rotator) Rotator {
	if _, ok := r.(*sanitized); ok {
		return r
	}
	s := &sanitized{r: r}
	if c, ok := r.(Cleaner); ok {
		return &sanitizedCleaner{sanitized: s, c: c}
	}
	return s
}

type sanitized struct{ r Rotator }

var _ Rotator = (*sanitized)(nil)

func (s *sanitized) Capabilities() Capabilities { return s.r.Capabilities() }

func (s *sanitized) Stage(ctx context.Context, req StageRequest) (StageResponse, error) {
	resp, err := s.r.Stage(ctx, req)
	return resp, scrub(err, req.Current.Secret, resp.Secret)
}

func (s *sanitized) Apply(ctx context.Context, req ApplyRequest) (ApplyResponse, error) {
	resp, err := s.r.Apply(ctx, req)
	return resp, scrub(err, req.Current.Secret, req.Pending.Secret)
}

func (s *sanitized) Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error) {
	resp, err := s.r.Verify(ctx, req)
	return resp, scrub(err, req.Credential.Secret)
}

func (s *sanitized) Retire(ctx context.Context, req RetireRequest) (RetireResponse, error) {
	resp, err := s.r.Retire(ctx, req)
	return resp, scrub(err, req.Old.Secret, req.Current.Secret)
}

func (s *sanitized) Revert(ctx context.Context, req RevertRequest) (RevertResponse, error) {
	resp, err := s.r.Revert(ctx, req)
	return resp, scrub(err, req.Current.Secret, req.Pending.Secret)
}

// Unwrap returns the wrapped rotator (for optional interfaces such as Checker).
func (s *sanitized) Unwrap() Rotator { return s.r }

type sanitizedCleaner struct {
	*sanitized
	c Cleaner
}

func (s *sanitizedCleaner) Cleanup(ctx context.Context, req CleanupRequest) (CleanupResponse, error) {
	resp, err := s.c.Cleanup(ctx, req)
	maps := make([]secret.Map, 0, len(req.Keep))
	for _, k := range req.Keep {
		maps = append(maps, k.Secret)
	}
	return resp, scrub(err, maps...)
}

// Unwrap returns the rotator inside any Sanitize wrapper.
func Unwrap(r Rotator) Rotator {
	for {
		u, ok := r.(interface{ Unwrap() Rotator })
		if !ok {
			return r
		}
		r = u.Unwrap()
	}
}

// Scrub returns err with every secret value in maps replaced by [REDACTED].
// Use it where an error built from target output leaves a rotator by another path.
func Scrub(err error, maps ...secret.Map) error { return scrub(err, maps...) }

func scrub(err error, maps ...secret.Map) error {
	if err == nil {
		return nil
	}
	var vals []string
	for _, m := range maps {
		for _, v := range m {
			if p := v.Reveal(); len(p) >= 4 {
				vals = append(vals, p)
				// Drivers sometimes quote or escape what they echo back.
				vals = append(vals, strings.ReplaceAll(p, "'", "''"), strings.ReplaceAll(p, `"`, `\"`),
					strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p), url.QueryEscape(p))
			}
		}
	}
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	msg := err.Error()
	for _, v := range vals {
		msg = strings.ReplaceAll(msg, v, secret.Redacted)
	}
	inner := errors.New(msg)
	// Keep the context sentinels reachable: callers branch on cancellation.
	for _, sentinel := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, sentinel) {
			inner = &keepSentinel{msg: msg, sentinel: sentinel}
		}
	}
	out := &Error{Class: ClassOf(err), Op: "", Err: inner}
	var e *Error
	if errors.As(err, &e) {
		out.Privilege = e.Privilege
		out.RetryAfter = e.RetryAfter
		out.Urgent = IsUrgent(err)
		out.BeforeChange = BeforeChange(err)
	}
	return out
}

// keepSentinel is a scrubbed message that still unwraps to a context error.
type keepSentinel struct {
	msg      string
	sentinel error
}

func (k *keepSentinel) Error() string { return k.msg }
func (k *keepSentinel) Unwrap() error { return k.sentinel }
