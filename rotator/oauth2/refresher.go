package oauth2

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// RefresherConfig configures a Refresher. Only OAuth2 is required.
type RefresherConfig struct {
	// OAuth2 is the client configuration (see ClientConfig).
	OAuth2 *xoauth2.Config
	// HTTPClient talks to the token endpoint. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// EarlyRefresh is how long before the access token expires a refresh is
	// attempted. Until expiry, a failed refresh falls back to the current token.
	// Default: 1 min.
	EarlyRefresh time.Duration
	// RetryInterval is how long a failed refresh is not retried while the
	// current token is still valid, so a provider outage does not turn every
	// call into a request. Default: 5 s.
	RetryInterval time.Duration
	// RefreshTimeout bounds one refresh, which is shared by all waiting callers
	// and not cancelled when one of them gives up. Default: 30 s.
	RefreshTimeout time.Duration
	// Persist, if set, stores every new token durably before it is served (a
	// rotated refresh token that is lost cannot be recovered). When it fails the
	// token is kept in memory, the current one is served while valid, and the
	// next call retries Persist before asking the provider again.
	Persist func(ctx context.Context, tok *xoauth2.Token) error
}

// Validate reports an unusable configuration.
func (c RefresherConfig) Validate() error {
	switch {
	case c.OAuth2 == nil:
		return errors.New("oauth2: RefresherConfig.OAuth2 is required")
	case c.EarlyRefresh < 0 || c.RetryInterval < 0 || c.RefreshTimeout < 0:
		return errors.New("oauth2: negative duration in RefresherConfig")
	}
	return nil
}

func (c RefresherConfig) withDefaults() RefresherConfig {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.EarlyRefresh == 0 {
		c.EarlyRefresh = time.Minute
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 5 * time.Second
	}
	if c.RefreshTimeout == 0 {
		c.RefreshTimeout = 30 * time.Second
	}
	return c
}

// Refresher is an oauth2.TokenSource for one credential. Concurrent callers
// that find the token due share one refresh request; a failed refresh serves
// the current access token for as long as it is valid (the guide's
// oauth2_refresh_with_fallback), and reports the failure through LastError.
// Errors are *rotator.Error values: rotator.ClassOf(err) ==
// rotator.ClassInvalidGrant means a person must re-authorise.
type Refresher struct {
	cfg RefresherConfig
	sf  singleflight.Group

	mu       sync.Mutex
	tok      *xoauth2.Token // served
	unsaved  *xoauth2.Token // refreshed, Persist failed
	failedAt time.Time
	lastErr  error
}

var _ xoauth2.TokenSource = (*Refresher)(nil)

// NewRefresher returns a Refresher starting from tok.
func NewRefresher(cfg RefresherConfig, tok *xoauth2.Token) (*Refresher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, errors.New("oauth2: NewRefresher needs a token (at least a refresh token)")
	}
	t := *tok
	boundExpiry(&t)
	return &Refresher{cfg: cfg.withDefaults(), tok: &t}, nil
}

// Token implements oauth2.TokenSource.
func (r *Refresher) Token() (*xoauth2.Token, error) { return r.TokenContext(context.Background()) }

// TokenContext returns a valid access token, refreshing it when it is due.
func (r *Refresher) TokenContext(ctx context.Context) (*xoauth2.Token, error) {
	now := r.cfg.Now()
	r.mu.Lock()
	tok, failedAt := r.tok, r.failedAt
	r.mu.Unlock()
	if r.fresh(tok, now) {
		return tok, nil
	}
	if valid(tok, now) && !failedAt.IsZero() && now.Sub(failedAt) < r.cfg.RetryInterval {
		return tok, nil // the last refresh failed moments ago: fall back quietly
	}
	ch := r.sf.DoChan("refresh", func() (any, error) { return r.refresh(context.WithoutCancel(ctx)) })
	select {
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(*xoauth2.Token), nil
		}
		if valid(tok, r.cfg.Now()) {
			return tok, nil
		}
		return nil, res.Err
	case <-ctx.Done():
		if valid(tok, r.cfg.Now()) {
			return tok, nil
		}
		return nil, ctx.Err()
	}
}

// LastError is the error of the last refresh, nil once one succeeds.
func (r *Refresher) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

func (r *Refresher) fresh(t *xoauth2.Token, now time.Time) bool {
	return t != nil && t.AccessToken != "" && (t.Expiry.IsZero() || now.Add(r.cfg.EarlyRefresh).Before(t.Expiry))
}

func valid(t *xoauth2.Token, now time.Time) bool {
	return t != nil && t.AccessToken != "" && (t.Expiry.IsZero() || now.Before(t.Expiry))
}

// refresh runs inside the single flight.
func (r *Refresher) refresh(ctx context.Context) (*xoauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RefreshTimeout)
	defer cancel()
	r.mu.Lock()
	cur, next := r.tok, r.unsaved
	r.mu.Unlock()
	if r.fresh(cur, r.cfg.Now()) {
		return cur, nil // a flight that just ended refreshed it
	}
	if next == nil {
		var err error
		next, err = refresh(ctx, r.cfg.HTTPClient, r.cfg.Now, r.cfg.OAuth2, cur.RefreshToken)
		if err != nil {
			// Whatever the provider echoed, no token of ours leaves here.
			err = scrubTokens(err, r.cfg.OAuth2.ClientSecret, cur)
			r.failed(err)
			return nil, err
		}
	}
	if r.cfg.Persist != nil {
		if err := r.cfg.Persist(ctx, next); err != nil {
			err = scrubTokens(&rotator.Error{Class: rotator.ClassTransient, Op: "persist token", Err: err}, r.cfg.OAuth2.ClientSecret, cur, next)
			r.mu.Lock()
			r.unsaved = next
			r.mu.Unlock()
			r.failed(err)
			return nil, err
		}
	}
	r.mu.Lock()
	r.tok, r.unsaved, r.failedAt, r.lastErr = next, nil, time.Time{}, nil
	r.mu.Unlock()
	return next, nil
}

func (r *Refresher) failed(err error) {
	r.mu.Lock()
	r.failedAt, r.lastErr = r.cfg.Now(), err
	r.mu.Unlock()
}
