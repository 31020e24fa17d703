// Package oauth2 rotates OAuth2 access and refresh tokens with the refresh-token
// grant (RFC 6749 §6), and gives consumers a Refresher that serves a token
// without stampeding the provider.
//
// Reach for New to get the rotator for credential type "oauth2": Stage runs the
// refresh grant, and the engine persists the new access token and any rotated
// refresh token before anything uses them. Apply and Retire are no-ops (the
// provider already serves the new token, and the old access token simply
// expires); Verify calls the userinfo or introspection endpoint when one is
// configured. A refresh token the provider rejects (invalid_grant) is
// rotator.ClassInvalidGrant: a person must re-authorise.
//
// Reach for NewRefresher on the consumer side: an oauth2.TokenSource that
// collapses concurrent refreshes into one request, persists every new token
// before serving it, and keeps serving the current access token while it is
// still valid when a refresh fails.
//
// Fields: token_url, client_id, scopes, auth_style ("header", "params", or empty
// to auto-detect), userinfo_url, introspection_url, access_expires_at (RFC 3339).
// Secrets: refresh_token, access_token, client_secret (optional).
package oauth2

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	xoauth2 "golang.org/x/oauth2"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Field and secret names.
const (
	SecretRefreshToken   = "refresh_token"
	SecretAccessToken    = "access_token"
	SecretClientSecret   = "client_secret"
	FieldAccessExpiresAt = "access_expires_at"
)

// Fields are the non-secret fields of an oauth2 credential.
type Fields struct {
	TokenURL string `json:"token_url"`
	ClientID string `json:"client_id"`
	Scopes   Scopes `json:"scopes,omitempty"`
	// AuthStyle is how the client authenticates to the token endpoint:
	// "header" (HTTP basic), "params" (in the form), or "" to try both and
	// remember what works, which costs a failed request on the first refresh.
	AuthStyle string `json:"auth_style,omitempty"`
	// UserinfoURL, when set, is called with the access token by Verify.
	UserinfoURL string `json:"userinfo_url,omitempty"`
	// IntrospectionURL, when set, is an RFC 7662 endpoint Verify asks whether
	// the access token is active.
	IntrospectionURL string `json:"introspection_url,omitempty"`
	AccessExpiresAt  string `json:"access_expires_at,omitempty"`
}

// Scopes decodes from a list or a space-separated string.
type Scopes []string

// UnmarshalJSON accepts ["a","b"] and "a b".
func (s *Scopes) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = strings.Fields(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("scopes must be a string or a list of strings")
	}
	*s = many
	return nil
}

func (f *Fields) validate() error {
	switch {
	case f.TokenURL == "":
		return errors.New("token_url is required")
	case f.ClientID == "":
		return errors.New("client_id is required")
	case f.AuthStyle != "" && f.AuthStyle != "header" && f.AuthStyle != "params":
		return fmt.Errorf("auth_style %q: want header, params or empty", f.AuthStyle)
	}
	return nil
}

func fieldsOf(c rotator.Credential) (*Fields, error) {
	var f Fields
	if err := c.Decode(&f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, rotator.Wrap(rotator.ClassConfig, "fields", err)
	}
	return &f, nil
}

// ClientConfig returns the OAuth2 client configuration and the token held by c,
// for consumers that build their own TokenSource or a Refresher.
func ClientConfig(c rotator.Credential) (*xoauth2.Config, *xoauth2.Token, error) {
	f, err := fieldsOf(c)
	if err != nil {
		return nil, nil, err
	}
	return f.client(c.Secret), tokenOf(c, f), nil
}

func (f *Fields) client(s secret.Map) *xoauth2.Config {
	style := xoauth2.AuthStyleAutoDetect
	switch f.AuthStyle {
	case "header":
		style = xoauth2.AuthStyleInHeader
	case "params":
		style = xoauth2.AuthStyleInParams
	}
	return &xoauth2.Config{
		ClientID:     f.ClientID,
		ClientSecret: s[SecretClientSecret].Reveal(),
		Endpoint:     xoauth2.Endpoint{TokenURL: f.TokenURL, AuthStyle: style},
		Scopes:       f.Scopes,
	}
}

func tokenOf(c rotator.Credential, f *Fields) *xoauth2.Token {
	t := &xoauth2.Token{
		AccessToken:  c.Secret[SecretAccessToken].Reveal(),
		RefreshToken: c.Secret[SecretRefreshToken].Reveal(),
		TokenType:    "Bearer",
	}
	if c.ExpiresAt != nil {
		t.Expiry = *c.ExpiresAt
	} else if e, err := time.Parse(time.RFC3339, f.AccessExpiresAt); err == nil {
		t.Expiry = e
	}
	return t
}

// boundExpiry lowers t.Expiry to the exp claim of a JWT access token (RFC 9068)
// when that is earlier or when the response gave no expires_in. The claim is read
// without verifying the signature: it only schedules refreshes, it grants nothing.
func boundExpiry(t *xoauth2.Token) {
	parts := strings.Split(t.AccessToken, ".")
	if len(parts) != 3 {
		return
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return
	}
	sec, err := claims.Exp.Int64()
	if err != nil || sec <= 0 {
		return
	}
	if exp := time.Unix(sec, 0); t.Expiry.IsZero() || exp.Before(t.Expiry) {
		t.Expiry = exp
	}
}

// refresh runs the refresh-token grant.
func refresh(ctx context.Context, client *http.Client, now func() time.Time, cfg *xoauth2.Config, refreshToken string) (*xoauth2.Token, error) {
	if refreshToken == "" {
		return nil, rotator.Errorf(rotator.ClassInvalidGrant, "refresh grant", "the credential holds no refresh token: a person must re-authorise it")
	}
	if client != nil {
		ctx = context.WithValue(ctx, xoauth2.HTTPClient, client)
	}
	tok, err := cfg.TokenSource(ctx, &xoauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify(err, now())
	}
	boundExpiry(tok)
	return tok, nil
}

// classify turns a token-endpoint failure into a *rotator.Error. It never
// quotes the response body: providers echo submitted secrets there (mockoidc
// does for a wrong client secret). The error description is quoted shortened;
// callers still pass the result through rotator.Scrub.
func classify(err error, now time.Time) error {
	var re *xoauth2.RetrieveError
	if !errors.As(err, &re) {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
			return &rotator.Error{Class: rotator.ClassTransient, Op: "refresh grant", Err: err}
		}
		return &rotator.Error{Class: rotator.ClassUnknown, Op: "refresh grant", Err: err}
	}
	status, code := 0, re.ErrorCode
	var hdr http.Header
	if re.Response != nil {
		status, hdr = re.Response.StatusCode, re.Response.Header
	}
	msg := fmt.Sprintf("token endpoint answered %d", status)
	if code != "" {
		msg += " " + code
	}
	if d := re.ErrorDescription; d != "" {
		if len(d) > 160 {
			d = d[:160] + "…"
		}
		msg += fmt.Sprintf(" (%q)", d)
	}
	e := &rotator.Error{Op: "refresh grant"}
	switch {
	case code == "invalid_grant":
		e.Class = rotator.ClassInvalidGrant
		msg += ": the provider rejected the refresh token; a person must re-authorise this credential"
	case code == "invalid_client" || code == "unauthorized_client":
		e.Class = rotator.ClassAuth
		msg += ": check client_id and client_secret"
	case status == http.StatusTooManyRequests || status >= 500 || code == "temporarily_unavailable" || code == "server_error":
		e.Class = rotator.ClassTransient
		e.RetryAfter = retryAfter(hdr, now)
	case code == "invalid_scope" || code == "invalid_request" || code == "unsupported_grant_type":
		e.Class = rotator.ClassConfig
	case status == http.StatusUnauthorized:
		e.Class = rotator.ClassAuth
	case status == http.StatusForbidden:
		e.Class, e.Privilege = rotator.ClassPermission, "refresh_token grant"
	default:
		e.Class = rotator.ClassUnknown
	}
	e.Err = errors.New(msg)
	return e
}

func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// scrubTokens removes the client secret and the tokens of ts from err's text.
func scrubTokens(err error, clientSecret string, ts ...*xoauth2.Token) error {
	m := secret.Map{"c": secret.New(clientSecret)}
	for i, t := range ts {
		if t == nil {
			continue
		}
		m[fmt.Sprint("a", i)] = secret.New(t.AccessToken)
		m[fmt.Sprint("r", i)] = secret.New(t.RefreshToken)
	}
	return rotator.Scrub(err, m)
}
