package oauth2_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
	xoauth2 "golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

// clockOffset is how far mockoidc's clock runs ahead of ours. mockoidc signs
// tokens deterministically (RS256) with second-resolution claims, so two
// tokens minted in one second would be identical; every token request moves
// its clock one second on, so each refresh mints a distinct token, as real
// providers do.
var clockOffset atomic.Int64

func TestMain(m *testing.M) {
	mockoidc.NowFunc = func() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }
	os.Exit(m.Run())
}

// provider is a real OAuth2/OIDC server (mockoidc) on 127.0.0.1 that counts
// the requests reaching its token endpoint.
type provider struct {
	*mockoidc.MockOIDC
	tokenRequests atomic.Int64
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.AccessTTL, m.RefreshTTL = time.Hour, 24*time.Hour
	if _, err := m.Keypair.KeyID(); err != nil { // computed lazily and unlocked: do it before serving
		t.Fatal(err)
	}
	p := &provider{MockOIDC: m}
	m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == mockoidc.TokenEndpoint {
				p.tokenRequests.Add(1)
				clockOffset.Add(int64(time.Second))
			}
			next.ServeHTTP(w, r)
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return p
}

func (p *provider) client() *xoauth2.Config {
	return &xoauth2.Config{
		ClientID: p.ClientID, ClientSecret: p.ClientSecret, RedirectURL: "http://127.0.0.1/callback",
		Endpoint: xoauth2.Endpoint{AuthURL: p.AuthorizationEndpoint(), TokenURL: p.TokenEndpoint(), AuthStyle: xoauth2.AuthStyleInParams},
		Scopes:   []string{"openid", "email"},
	}
}

// login runs the authorization-code flow, as a person authorising the
// credential would.
func (p *provider) login(t *testing.T) *xoauth2.Token {
	t.Helper()
	cfg := p.client()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(cfg.AuthCodeURL("state-1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := cfg.Exchange(t.Context(), loc.Query().Get("code"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

func (p *provider) credential(tok *xoauth2.Token) rotator.Credential {
	return rotator.Credential{
		ID: "test/oauth2/app", Type: "oauth2", Version: 1,
		Fields: map[string]any{
			"token_url": p.TokenEndpoint(), "client_id": p.ClientID, "scopes": "openid email",
			"auth_style": "params", "userinfo_url": p.UserinfoEndpoint(),
		},
		Secret: secret.Map{
			"access_token": secret.New(tok.AccessToken), "refresh_token": secret.New(tok.RefreshToken),
			"client_secret": secret.New(p.ClientSecret),
		},
	}
}

// accepted asks the provider's userinfo endpoint whether it takes the access token.
func (p *provider) accepted(t *testing.T, access string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", p.UserinfoEndpoint(), nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestConformance(t *testing.T) {
	p := newProvider(t)
	rotatortest.Run(t, rotatortest.Harness{
		Rotator:       rotator.Sanitize(oauth2.New(oauth2.Config{})),
		NewCredential: func(t *testing.T) rotator.Credential { return p.credential(p.login(t)) },
		Authenticates: func(t *testing.T, c rotator.Credential) bool { return p.accepted(t, c.Secret["access_token"].Reveal()) },
		// An issued access token cannot be withdrawn: Retire and Revert are
		// no-ops and both tokens stay valid until they expire (mockoidc, like
		// most providers, has no revocation endpoint).
		OldValidAfterRetire:    true,
		NoRevertRejectsPending: true,
	})
}

func TestStageReturnsExpiryAndReplaysRotation(t *testing.T) {
	p := newProvider(t)
	r := oauth2.New(oauth2.Config{})
	cur := p.credential(p.login(t))
	before := p.tokenRequests.Load()
	a, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, Strategy: rotator.Reissue, RotationID: 7})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, Strategy: rotator.Reissue, RotationID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if n := p.tokenRequests.Load() - before; n != 1 {
		t.Fatalf("two Stages of one rotation sent %d token requests, want 1", n)
	}
	if !a.Secret.Equal(b.Secret) {
		t.Fatal("a replayed Stage returned different tokens")
	}
	// mockoidc reports expires_in in nanoseconds; the JWT's exp bounds it.
	if a.ExpiresAt == nil || a.ExpiresAt.After(time.Now().Add(2*time.Hour)) || a.ExpiresAt.Before(time.Now().Add(30*time.Minute)) {
		t.Fatalf("ExpiresAt = %v, want about an hour from now", a.ExpiresAt)
	}
	if a.Fields["access_expires_at"] != a.ExpiresAt.Format(time.RFC3339) {
		t.Fatalf("access_expires_at = %v", a.Fields["access_expires_at"])
	}
	if a.Secret["refresh_token"].IsZero() || a.Secret["client_secret"].Reveal() != p.ClientSecret {
		t.Fatal("Stage must return the refresh token and keep the client secret")
	}
}

func TestInvalidGrant(t *testing.T) {
	p := newProvider(t)
	r := oauth2.New(oauth2.Config{})
	cur := p.credential(p.login(t))

	// A refresh token for a grant the provider no longer has (the user revoked
	// access): validly signed, but mockoidc finds no session for it.
	now := p.Now()
	revoked, err := p.Keypair.SignJWT(&jwt.RegisteredClaims{
		ID: "revoked-grant", Subject: "1234567890", Audience: jwt.ClaimStrings{p.ClientID}, Issuer: p.Issuer(),
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	gone := cur
	gone.Secret = secret.Map{"refresh_token": secret.New(revoked), "client_secret": cur.Secret["client_secret"], "access_token": cur.Secret["access_token"]}

	cases := map[string]func() error{
		"rotator, revoked grant": func() error {
			_, err := r.Stage(t.Context(), rotator.StageRequest{Current: gone, RotationID: 1})
			return err
		},
		"rotator, provider says invalid_grant": func() error {
			p.QueueError(&mockoidc.ServerError{Code: 400, Error: mockoidc.InvalidGrant, Description: "refresh token revoked"})
			_, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, RotationID: 2})
			return err
		},
		"refresher, token expired": func() error {
			cfg, tok, err := oauth2.ClientConfig(gone)
			if err != nil {
				t.Fatal(err)
			}
			tok.Expiry = time.Now().Add(-time.Second)
			_, err = newRefresher(t, oauth2.RefresherConfig{OAuth2: cfg}, tok).TokenContext(t.Context())
			return err
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			err := f()
			if rotator.ClassOf(err) != rotator.ClassInvalidGrant || rotator.Retryable(err) {
				t.Fatalf("want non-retryable invalid_grant, got %v", err)
			}
			if !strings.Contains(err.Error(), "re-authorise") {
				t.Fatalf("the error should say what to do: %v", err)
			}
			for _, s := range []string{revoked, cur.Secret["refresh_token"].Reveal(), p.ClientSecret} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error leaks a secret: %v", err)
				}
			}
		})
	}
}

// mockoidc echoes a wrong client secret in its error description.
func TestErrorsNeverContainSecrets(t *testing.T) {
	p := newProvider(t)
	r := oauth2.New(oauth2.Config{})
	cur := p.credential(p.login(t))
	wrong := "wrong-secret-" + secret.Token(16).Reveal()
	bad := cur
	bad.Secret = secret.Map{"refresh_token": cur.Secret["refresh_token"], "access_token": cur.Secret["access_token"], "client_secret": secret.New(wrong)}
	_, err := r.Stage(t.Context(), rotator.StageRequest{Current: bad, RotationID: 3})
	if rotator.ClassOf(err) != rotator.ClassAuth {
		t.Fatalf("wrong client secret: want ClassAuth, got %v", err)
	}
	msgs := []string{err.Error()}

	cfg, tok, _ := oauth2.ClientConfig(bad)
	tok.Expiry = time.Now().Add(-time.Second)
	_, err = newRefresher(t, oauth2.RefresherConfig{OAuth2: cfg}, tok).TokenContext(t.Context())
	if rotator.ClassOf(err) != rotator.ClassAuth {
		t.Fatalf("refresher, wrong client secret: want ClassAuth, got %v", err)
	}
	msgs = append(msgs, err.Error())

	wrongTok := cur
	wrongTok.Secret = secret.Map{"access_token": secret.New("not-a-token-" + secret.Token(16).Reveal())}
	_, err = r.Verify(t.Context(), rotator.VerifyRequest{Credential: wrongTok})
	if rotator.ClassOf(err) != rotator.ClassRejected {
		t.Fatalf("verify of a wrong token: want ClassRejected, got %v", err)
	}
	msgs = append(msgs, err.Error())

	for _, m := range msgs {
		for _, s := range []string{wrong, cur.Secret["refresh_token"].Reveal(), cur.Secret["access_token"].Reveal(), wrongTok.Secret["access_token"].Reveal(), p.ClientSecret} {
			if strings.Contains(m, s) {
				t.Fatalf("error leaks a secret: %s", m)
			}
		}
	}
	if !strings.Contains(msgs[0], secret.Redacted) {
		t.Fatalf("the echoed client secret should show redacted: %s", msgs[0])
	}
}

func TestVerify(t *testing.T) {
	p := newProvider(t)
	now := time.Now()
	r := oauth2.New(oauth2.Config{Now: func() time.Time { return now }})
	cur := p.credential(p.login(t))
	offline := cur
	offline.Fields = map[string]any{"token_url": p.TokenEndpoint(), "client_id": p.ClientID}

	soon, past, later := now.Add(5*time.Second), now.Add(-time.Minute), now.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		c       func() rotator.Credential
		wantErr bool
	}{
		{"no endpoint, valid", func() rotator.Credential { c := offline; c.ExpiresAt = &later; return c }, false},
		{"no endpoint, no expiry known", func() rotator.Credential { return offline }, false},
		{"no endpoint, expired", func() rotator.Credential { c := offline; c.ExpiresAt = &past; return c }, true},
		{"no endpoint, expires within MinValidity", func() rotator.Credential { c := offline; c.ExpiresAt = &soon; return c }, true},
		{"no endpoint, expiry from field", func() rotator.Credential {
			c := offline
			c.Fields = map[string]any{"token_url": p.TokenEndpoint(), "client_id": p.ClientID, "access_expires_at": past.Format(time.RFC3339)}
			return c
		}, true},
		{"no access token", func() rotator.Credential { c := offline; c.Secret = secret.Map{}; return c }, true},
		{"userinfo accepts", func() rotator.Credential { return cur }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: tc.c()})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && rotator.ClassOf(err) != rotator.ClassRejected {
				t.Fatalf("want ClassRejected, got %v", err)
			}
		})
	}

	t.Run("introspection", func(t *testing.T) {
		// An RFC 7662 endpoint in front of the provider: it authenticates the
		// client and asks the provider about the token.
		var calls atomic.Int64
		srv := httptestServer(t, func(w http.ResponseWriter, req *http.Request) {
			calls.Add(1)
			id, sec, ok := req.BasicAuth()
			if !ok || id != p.ClientID || sec != p.ClientSecret {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if p.accepted(t, req.PostFormValue("token")) {
				w.Write([]byte(`{"active":true,"client_id":"x"}`))
			} else {
				w.Write([]byte(`{"active":false}`))
			}
		})
		c := cur
		c.Fields = map[string]any{"token_url": p.TokenEndpoint(), "client_id": p.ClientID, "introspection_url": srv}
		if _, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: c}); err != nil {
			t.Fatal(err)
		}
		c.Secret = secret.Map{"access_token": secret.New("forged"), "client_secret": cur.Secret["client_secret"]}
		if _, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: c}); rotator.ClassOf(err) != rotator.ClassRejected {
			t.Fatalf("inactive token: want ClassRejected, got %v", err)
		}
		if calls.Load() != 2 {
			t.Fatalf("introspection calls = %d", calls.Load())
		}
	})
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// 50 callers hold a token that expires while they use it; exactly one
// refresh request reaches the provider, and everyone gets its result.
func TestRefresherOneRequestAcrossExpiry(t *testing.T) {
	p := newProvider(t)
	clk := newFakeClock()
	cfg, _, err := oauth2.ClientConfig(p.credential(p.login(t)))
	if err != nil {
		t.Fatal(err)
	}
	tok := p.login(t)
	expiry := clk.Now().Add(30 * time.Second)
	tok.Expiry = expiry
	var persisted atomic.Int64
	r := newRefresher(t, oauth2.RefresherConfig{
		OAuth2: cfg, Now: clk.Now, EarlyRefresh: 10 * time.Second,
		Persist: func(ctx context.Context, t *xoauth2.Token) error {
			persisted.Add(1)
			time.Sleep(20 * time.Millisecond) // a durable write takes a moment
			return nil
		},
	}, tok)
	before := p.tokenRequests.Load()

	const callers = 50
	var ready, done sync.WaitGroup
	ready.Add(callers)
	got := make([]string, callers)
	errs := make(chan error, callers)
	for i := range callers {
		done.Add(1)
		go func() {
			defer done.Done()
			first := true
			for {
				tk, err := r.TokenContext(context.Background())
				if err != nil {
					errs <- err
					return
				}
				if first {
					ready.Done()
					first = false
				}
				if tk.AccessToken != tok.AccessToken {
					got[i] = tk.AccessToken
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	ready.Wait() // every caller is using the old token
	if n := p.tokenRequests.Load() - before; n != 0 {
		t.Fatalf("%d refreshes before the token was due", n)
	}
	clk.Set(expiry.Add(time.Second)) // the token expires under them
	done.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.tokenRequests.Load() - before; n != 1 {
		t.Fatalf("%d callers across an expiry sent %d refresh requests, want 1", callers, n)
	}
	if persisted.Load() != 1 {
		t.Fatalf("Persist called %d times, want 1", persisted.Load())
	}
	for i, g := range got {
		if g != got[0] || g == "" {
			t.Fatalf("caller %d got a different token", i)
		}
	}
	if !p.accepted(t, got[0]) {
		t.Fatal("the refreshed token is not accepted")
	}
}

// When the provider fails, the current access token is served while it is
// valid, without hammering the provider; after it expires the error shows.
func TestRefresherFallback(t *testing.T) {
	p := newProvider(t)
	clk := newFakeClock()
	tok := p.login(t)
	expiry := clk.Now().Add(30 * time.Second)
	tok.Expiry = expiry // within EarlyRefresh: due, still valid
	r := newRefresher(t, oauth2.RefresherConfig{OAuth2: p.client(), Now: clk.Now, EarlyRefresh: time.Minute, RetryInterval: 5 * time.Second}, tok)
	before := p.tokenRequests.Load()
	requests := func() int64 { return p.tokenRequests.Load() - before }

	p.QueueError(&mockoidc.ServerError{Code: 503, Error: "temporarily_unavailable", Description: "maintenance"})
	got, err := r.TokenContext(t.Context())
	if err != nil || got.AccessToken != tok.AccessToken {
		t.Fatalf("fallback: got %v, %v; want the current token", got, err)
	}
	if !rotator.Retryable(r.LastError()) {
		t.Fatalf("LastError = %v, want a transient error", r.LastError())
	}
	// Within RetryInterval: served from memory, no request.
	clk.Advance(2 * time.Second)
	if got, err := r.TokenContext(t.Context()); err != nil || got.AccessToken != tok.AccessToken || requests() != 1 {
		t.Fatalf("within retry interval: %v, %v, %d requests", got, err, requests())
	}
	// After it: tried again, failed again, still served.
	clk.Advance(4 * time.Second)
	p.QueueError(&mockoidc.ServerError{Code: 500, Error: mockoidc.InternalServerError})
	if got, err := r.TokenContext(t.Context()); err != nil || got.AccessToken != tok.AccessToken || requests() != 2 {
		t.Fatalf("second failure: %v, %v, %d requests", got, err, requests())
	}
	// Expired: the failure can no longer be hidden.
	clk.Set(expiry.Add(time.Second))
	p.QueueError(&mockoidc.ServerError{Code: 503, Error: "temporarily_unavailable"})
	if _, err := r.TokenContext(t.Context()); err == nil || !rotator.Retryable(err) {
		t.Fatalf("expired and provider down: want a transient error, got %v", err)
	}
	// The provider is back.
	got, err = r.TokenContext(t.Context())
	if err != nil || got.AccessToken == tok.AccessToken || r.LastError() != nil {
		t.Fatalf("recovery: %v, %v (last error %v)", got, err, r.LastError())
	}
	if !p.accepted(t, got.AccessToken) {
		t.Fatal("the refreshed token is not accepted")
	}
}

// A token whose Persist failed is kept and persisted on the next call,
// without asking the provider again: a rotated refresh token is never lost.
func TestRefresherPersistFailure(t *testing.T) {
	p := newProvider(t)
	clk := newFakeClock()
	tok := p.login(t)
	tok.Expiry = clk.Now().Add(30 * time.Second)
	var fail atomic.Bool
	fail.Store(true)
	var stored atomic.Pointer[xoauth2.Token]
	r := newRefresher(t, oauth2.RefresherConfig{
		OAuth2: p.client(), Now: clk.Now, EarlyRefresh: time.Minute,
		Persist: func(ctx context.Context, t *xoauth2.Token) error {
			if fail.Load() {
				return os.ErrPermission
			}
			stored.Store(t)
			return nil
		},
	}, tok)
	before := p.tokenRequests.Load()
	if got, err := r.TokenContext(t.Context()); err != nil || got.AccessToken != tok.AccessToken {
		t.Fatalf("persist failed: want the current token served, got %v, %v", got, err)
	}
	if r.LastError() == nil {
		t.Fatal("LastError should report the persist failure")
	}
	fail.Store(false)
	clk.Advance(6 * time.Second)
	got, err := r.TokenContext(t.Context())
	if err != nil || got.AccessToken == tok.AccessToken {
		t.Fatalf("after persist recovers: %v, %v", got, err)
	}
	if stored.Load() != got {
		t.Fatal("the served token is not the persisted one")
	}
	if n := p.tokenRequests.Load() - before; n != 1 {
		t.Fatalf("%d refresh requests, want 1", n)
	}
}
