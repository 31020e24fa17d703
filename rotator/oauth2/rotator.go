package oauth2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Config configures the rotator. The zero value means the defaults.
type Config struct {
	// HTTPClient talks to the token, userinfo and introspection endpoints.
	// Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// MinValidity is how long an access token must still be valid for Verify to
	// accept it. Default: 10 s.
	MinValidity time.Duration
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	if c.MinValidity < 0 {
		return errors.New("oauth2: negative MinValidity")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MinValidity == 0 {
		c.MinValidity = 10 * time.Second
	}
	return c
}

// Rotator refreshes OAuth2 tokens. It is safe for concurrent use.
type Rotator struct {
	cfg Config

	mu     sync.Mutex
	staged map[stageKey]rotator.StageResponse // recent Stage results by rotation
	order  []stageKey
}

type stageKey struct {
	credential string
	rotation   int64
}

// stagedMax bounds the Stage results kept for replay.
const stagedMax = 64

var _ rotator.Rotator = (*Rotator)(nil)

// New returns a rotator; the zero Config means the defaults.
func New(cfg Config) *Rotator {
	return &Rotator{cfg: cfg.withDefaults(), staged: map[stageKey]rotator.StageResponse{}}
}

// Capabilities: the provider reissues tokens; Stage mints.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Reissue}, Mints: true}
}

// Stage runs the refresh-token grant and returns the new access token, the
// refresh token (rotated or not) and the client secret, so the engine persists
// them before any use. Token endpoints take no idempotency key, and a provider
// that rotates refresh tokens invalidates the old one on use, so the result is
// kept in memory by (credential, RotationID): a Stage retried in this process
// returns the same tokens instead of burning the new refresh token. A crash
// before the engine persisted the response loses a rotated refresh token;
// the next Stage then fails with ClassInvalidGrant unless the provider allows
// reuse of the old one for a while (most do).
func (r *Rotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	key := stageKey{req.Current.ID, req.RotationID}
	r.mu.Lock()
	resp, ok := r.staged[key]
	r.mu.Unlock()
	if ok {
		return resp, nil
	}
	f, err := fieldsOf(req.Current)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	tok, err := refresh(ctx, r.cfg.HTTPClient, r.cfg.Now, f.client(req.Current.Secret), req.Current.Secret[SecretRefreshToken].Reveal())
	if err != nil {
		return rotator.StageResponse{}, rotator.Scrub(err, req.Current.Secret)
	}
	resp = rotator.StageResponse{
		Secret: secret.Map{
			SecretAccessToken:  secret.New(tok.AccessToken),
			SecretRefreshToken: secret.New(tok.RefreshToken),
		},
		Fields: map[string]any{},
	}
	if cs, ok := req.Current.Secret[SecretClientSecret]; ok {
		resp.Secret[SecretClientSecret] = cs
	}
	if !tok.Expiry.IsZero() {
		exp := tok.Expiry.UTC().Truncate(time.Second)
		resp.ExpiresAt = &exp
		resp.Fields[FieldAccessExpiresAt] = exp.Format(time.RFC3339)
	}
	r.mu.Lock()
	if _, dup := r.staged[key]; !dup {
		r.staged[key] = resp
		r.order = append(r.order, key)
		if len(r.order) > stagedMax {
			delete(r.staged, r.order[0])
			r.order = r.order[1:]
		}
	}
	r.mu.Unlock()
	return resp, nil
}

// Apply is a no-op: the provider serves the new token from the moment it
// issued it.
func (r *Rotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	return rotator.ApplyResponse{Skipped: true}, nil
}

// Verify checks the access token: with userinfo_url it must be accepted there,
// with introspection_url the provider must call it active; otherwise it must be
// present and valid for at least Config.MinValidity. It changes nothing.
func (r *Rotator) Verify(ctx context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	c := req.Credential
	f, err := fieldsOf(c)
	if err != nil {
		return rotator.VerifyResponse{}, err
	}
	tok := tokenOf(c, f)
	if tok.AccessToken == "" {
		return rotator.VerifyResponse{}, rotator.Errorf(rotator.ClassRejected, "verify token", "the credential holds no access token")
	}
	now := r.cfg.Now()
	if !tok.Expiry.IsZero() && !now.Add(r.cfg.MinValidity).Before(tok.Expiry) {
		return rotator.VerifyResponse{}, rotator.Errorf(rotator.ClassRejected, "verify token", "the access token expires at %s, less than %s from now", tok.Expiry.UTC().Format(time.RFC3339), r.cfg.MinValidity)
	}
	var detail string
	switch {
	case f.UserinfoURL != "":
		detail, err = r.userinfo(ctx, f, tok.AccessToken)
	case f.IntrospectionURL != "":
		detail, err = r.introspect(ctx, f, c.Secret, tok.AccessToken)
	default:
		detail = "access token present"
	}
	if err != nil {
		return rotator.VerifyResponse{}, rotator.Scrub(err, c.Secret)
	}
	if !tok.Expiry.IsZero() {
		detail += ", valid until " + tok.Expiry.UTC().Format(time.RFC3339)
	}
	return rotator.VerifyResponse{Detail: detail}, nil
}

func (r *Rotator) userinfo(ctx context.Context, f *Fields, access string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.UserinfoURL, nil)
	if err != nil {
		return "", rotator.Wrap(rotator.ClassConfig, "verify userinfo", errors.New("userinfo_url does not parse"))
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Accept", "application/json")
	resp, err := r.send(req, "verify userinfo")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("userinfo answered %d", resp.status), nil
}

// introspect asks an RFC 7662 endpoint whether access is active,
// authenticating as the client.
func (r *Rotator) introspect(ctx context.Context, f *Fields, s secret.Map, access string) (string, error) {
	form := url.Values{"token": {access}, "token_type_hint": {"access_token"}}
	cs := s[SecretClientSecret].Reveal()
	if f.AuthStyle == "params" {
		form.Set("client_id", f.ClientID)
		form.Set("client_secret", cs)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.IntrospectionURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", rotator.Wrap(rotator.ClassConfig, "verify introspection", errors.New("introspection_url does not parse"))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if f.AuthStyle != "params" {
		req.SetBasicAuth(url.QueryEscape(f.ClientID), url.QueryEscape(cs))
	}
	resp, err := r.send(req, "verify introspection")
	if err != nil {
		return "", err
	}
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return "", rotator.Errorf(rotator.ClassUnknown, "verify introspection", "the response is not JSON")
	}
	if !out.Active {
		return "", rotator.Errorf(rotator.ClassRejected, "verify introspection", "the provider reports the access token inactive")
	}
	return "introspection: active", nil
}

type response struct {
	status int
	body   []byte
}

// send performs a verify call and classifies its status: 401/403 mean the
// token was refused (ClassRejected). Response bodies are never quoted.
func (r *Rotator) send(req *http.Request, op string) (*response, error) {
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, rotator.Wrap(rotator.ClassTransient, op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, rotator.Wrap(rotator.ClassTransient, op, err)
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return &response{status: c, body: b}, nil
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return nil, rotator.Errorf(rotator.ClassRejected, op, "%s refused the access token: %s", req.URL.Host, resp.Status)
	case c == http.StatusTooManyRequests || c >= 500:
		return nil, &rotator.Error{Class: rotator.ClassTransient, Op: op, RetryAfter: retryAfter(resp.Header, r.cfg.Now()), Err: fmt.Errorf("%s answered %s", req.URL.Host, resp.Status)}
	default:
		return nil, rotator.Errorf(rotator.ClassConfig, op, "%s answered %s", req.URL.Host, resp.Status)
	}
}

// Retire is a no-op: an OAuth2 access token cannot be withdrawn without a
// revocation endpoint, and it expires on its own.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	return rotator.RetireResponse{}, nil
}

// Revert is a no-op: the current access token stays valid until it expires;
// the pending one is simply never served.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	return rotator.RevertResponse{}, nil
}
