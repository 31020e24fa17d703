// Package console is nebula-credential's web console: server-rendered pages
// under /ui/ that show every credential's rotation state and offer the
// actions an operator needs (rotate, roll back, extend grace, retry,
// resolve, reveal), live through the watch stream.
//
// Reach for New with the API handler: package server mounts the console at
// /ui/ itself, so `nebula-credential serve` serves it with nothing else
// installed. Pages are html/template with embedded assets and one small
// script; there is no build step and no CDN.
//
// Security model:
//
//   - Sign-in exchanges an API token for a session cookie (HttpOnly,
//     SameSite=Strict, Secure under TLS, path /ui/). The token value stays in
//     this process's memory; the cookie holds only a random session ID.
//     Sessions end at sign-out, after IdleTimeout without a request, after
//     SessionTTL, when the token expires and when it is revoked.
//   - Every state-changing request (POST) carries the session's CSRF token;
//     the sign-in form carries a one-time token bound to a cookie.
//   - Everything a page shows about a credential and every action goes
//     through the API in-process, with the session's token: the API's own
//     authorisation, audit and error sanitising apply unchanged. The
//     overview and the filtered list read a cached snapshot of the store and
//     filter it with the same acl evaluator the API uses. Actions a token
//     lacks are not offered, and the API answers 403 if they are posted.
//   - Secret values appear only on the answer of an explicit reveal (a POST
//     the API audits as a read with detail "reveal").
//
// Sessions live in memory: behind a load balancer, several servers need
// sticky sessions for the console (the API needs none).
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Principal is the identity behind a session: the token's ID, audit actor,
// grants and expiry.
type Principal struct {
	ID        string
	Actor     string
	Grants    []acl.Grant
	ExpiresAt *time.Time
}

// Error is an error with the HTTP status the console answers with. The
// Authenticate hook returns it for refusals other than a bad token (rate
// limits, an audit log that cannot be written).
type Error struct {
	Status  int
	Message string // shown to the user; never a secret
}

func (e *Error) Error() string { return e.Message }

// ErrBadToken is what Authenticate returns (possibly wrapped) for an
// unknown, revoked or expired token.
var ErrBadToken = errors.New("the token is unknown, revoked or expired")

// ConsumerLag is a consumer still holding an older version than current.
type ConsumerLag struct {
	CredentialID string
	Consumer     string
	Version      int
	Current      int
	LastSeen     time.Time
}

// Config configures New. The zero value of every optional field means its default.
type Config struct {
	// Manager is read for the overview and the credential list. Required.
	Manager *credential.Manager
	// API is the /v1/ API handler; every credential page and action is a
	// request to it, made in-process with the session's token. Required.
	API http.Handler
	// Authenticate resolves a token value to its principal, or fails with
	// ErrBadToken or an *Error. It must audit failures and apply the API's
	// rate limit, as the API does for a bearer token. Required.
	Authenticate func(r *http.Request, token string) (*Principal, error)
	// Audit appends an entry to the audit log (sign-in, sign-out, page views
	// of the overview and list). Required.
	Audit func(ctx context.Context, e audit.Entry) error
	// Consumers lists consumers still on an older version, among the
	// credentials visible is true for. Nil until consumers report their
	// versions (issue 12): the overview then says so.
	Consumers func(ctx context.Context, visible func(id string) bool) ([]ConsumerLag, error)

	Logger *slog.Logger
	Clock  func() time.Time
	// SessionTTL bounds a session's life (default 8h); IdleTimeout ends it
	// after that long without a request (default 30m).
	SessionTTL  time.Duration
	IdleTimeout time.Duration
	// SnapshotTTL is how long the overview's read of the store is reused
	// (default 5s); this process's own rotation events refresh it sooner.
	SnapshotTTL time.Duration
	// MaxSessions bounds the sessions held in memory (default 10000).
	MaxSessions int
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Manager == nil:
		return errors.New("console: Config.Manager is required")
	case c.API == nil:
		return errors.New("console: Config.API is required")
	case c.Authenticate == nil:
		return errors.New("console: Config.Authenticate is required")
	case c.Audit == nil:
		return errors.New("console: Config.Audit is required")
	case c.SessionTTL < 0, c.IdleTimeout < 0, c.SnapshotTTL < 0, c.MaxSessions < 0:
		return errors.New("console: durations and limits must not be negative")
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
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Minute
	}
	if c.SnapshotTTL == 0 {
		c.SnapshotTTL = 5 * time.Second
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 10000
	}
}

// Prefix is where the console is served.
const Prefix = "/ui/"

const (
	sessionCookie = "nc_session"
	loginCookie   = "nc_login"
)

// Console is the web console, an http.Handler for paths under /ui/.
type Console struct {
	cfg  Config
	mux  *http.ServeMux
	tmpl *templates

	mu       sync.Mutex
	sessions map[[32]byte]*session

	snap *snapshotCache
}

type session struct {
	token    string // the API token value; memory only
	csrf     string
	tokenID  string
	created  time.Time
	lastSeen time.Time
	expires  time.Time // the earliest of SessionTTL and the token's expiry
}

// New returns the console. Close releases its event subscription.
func New(cfg Config) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	t, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux(), tmpl: t, sessions: map[[32]byte]*session{}}
	c.snap = newSnapshotCache(cfg.Manager, cfg.SnapshotTTL, cfg.Clock)
	static, _ := fs.Sub(assets, "static")
	c.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	c.mux.HandleFunc("GET /ui/login", c.loginPage)
	c.mux.HandleFunc("POST /ui/login", c.login)
	c.mux.HandleFunc("POST /ui/logout", c.with(c.logout))
	c.mux.HandleFunc("GET /ui/{$}", c.with(c.overview))
	c.mux.HandleFunc("GET /ui/credentials", c.with(c.list))
	c.mux.HandleFunc("GET /ui/credential/{id...}", c.with(c.credential))
	c.mux.HandleFunc("POST /ui/reveal/{id...}", c.with(c.reveal))
	c.mux.HandleFunc("GET /ui/confirm/{action}/{id...}", c.with(c.confirm))
	c.mux.HandleFunc("POST /ui/act/{action}/{id...}", c.with(c.act))
	c.mux.HandleFunc("GET /ui/audit", c.with(c.auditPage))
	c.mux.HandleFunc("GET /ui/live", c.with(c.live))
	c.mux.HandleFunc("GET /ui/notifications", c.with(c.notifications))
	c.mux.HandleFunc("POST /ui/notify/add", c.with(c.notifyAdd))
	c.mux.HandleFunc("GET /ui/notify/remove/{sid}", c.with(c.notifyConfirmRemove))
	c.mux.HandleFunc("POST /ui/notify/remove/{sid}", c.with(c.notifyRemove))
	c.mux.HandleFunc("POST /ui/notify/test/{sid}", c.with(c.notifyTest))
	c.mux.HandleFunc("POST /ui/notify/replay", c.with(c.notifyReplay))
	c.mux.HandleFunc("/ui/", c.notFound)
	return c, nil
}

// Close stops the snapshot's event subscription.
func (c *Console) Close() error {
	c.snap.close()
	return nil
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

func staticHandler(fsys fs.FS) http.Handler {
	fh := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		fh.ServeHTTP(w, r)
	})
}

// req is one authenticated console request.
type req struct {
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	sess *session
	p    *Principal
	now  time.Time
}

func (rq *req) can(perm acl.Permission, id string) bool { return acl.Allowed(rq.p.Grants, perm, id) }

// with resolves the session (redirecting to sign-in without one), checks
// the CSRF token of POSTs and the token behind the session on every request.
func (c *Console) with(h func(*req) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := c.cfg.Clock()
		key, sess := c.lookup(r, now)
		if sess == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/ui/live" {
				http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, &Error{Status: http.StatusUnauthorized, Message: "not signed in, or the session expired: sign in again"})
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !equal(r.PostFormValue("csrf"), sess.csrf) {
				c.fail(w, r, nil, &Error{Status: http.StatusForbidden, Message: "the form's CSRF token is missing or wrong: reload the page and try again"})
				return
			}
		}
		p, err := c.cfg.Authenticate(r, sess.token)
		if err != nil {
			if errors.Is(err, ErrBadToken) {
				c.drop(key)
				clearCookie(w, r, sessionCookie)
				if r.Method == http.MethodGet && r.URL.Path != "/ui/live" {
					http.Redirect(w, r, "/ui/login?ended=1", http.StatusSeeOther)
					return
				}
			}
			c.fail(w, r, nil, err)
			return
		}
		rq := &req{w: w, r: r, ctx: r.Context(), sess: sess, p: p, now: now}
		if err := h(rq); err != nil {
			c.fail(w, r, rq, err)
		}
	}
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func sessionKey(v string) [32]byte { return sha256.Sum256([]byte(v)) }

// lookup returns the live session of the request's cookie, touching it.
func (c *Console) lookup(r *http.Request, now time.Time) ([32]byte, *session) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 100 {
		return [32]byte{}, nil
	}
	key := sessionKey(ck.Value)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[key]
	if s == nil {
		return key, nil
	}
	if !now.Before(s.expires) || now.Sub(s.lastSeen) >= c.cfg.IdleTimeout {
		delete(c.sessions, key)
		return key, nil
	}
	s.lastSeen = now
	return key, s
}

func (c *Console) drop(key [32]byte) {
	c.mu.Lock()
	delete(c.sessions, key)
	c.mu.Unlock()
}

// newSession stores a session and returns its cookie value.
func (c *Console) newSession(token string, p *Principal, now time.Time) (string, *session, error) {
	id, csrf := randomString(), randomString()
	exp := now.Add(c.cfg.SessionTTL)
	if p.ExpiresAt != nil && p.ExpiresAt.Before(exp) {
		exp = *p.ExpiresAt
	}
	s := &session{token: token, csrf: csrf, tokenID: p.ID, created: now, lastSeen: now, expires: exp}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sessions) >= c.cfg.MaxSessions {
		for k, o := range c.sessions {
			if !now.Before(o.expires) || now.Sub(o.lastSeen) >= c.cfg.IdleTimeout {
				delete(c.sessions, k)
			}
		}
		if len(c.sessions) >= c.cfg.MaxSessions {
			return "", nil, &Error{Status: http.StatusServiceUnavailable, Message: "too many console sessions: try again later"}
		}
	}
	c.sessions[sessionKey(id)] = s
	return id, s, nil
}

func randomString() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) { setCookie(w, r, name, "", -1) }

// loginPage shows the sign-in form with a fresh one-time CSRF token bound
// to a cookie.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	tok := randomString()
	setCookie(w, r, loginCookie, tok, 600)
	msg := ""
	if r.URL.Query().Get("ended") != "" {
		msg = "Your session ended (signed out, expired, or the token was revoked). Sign in again."
	}
	c.render(w, http.StatusOK, "login", page{Title: "Sign in", CSRF: tok, Flash: msg})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || !equal(r.PostFormValue("csrf"), ck.Value) {
		c.fail(w, r, nil, &Error{Status: http.StatusForbidden, Message: "the sign-in form's CSRF token is missing or wrong: reload the sign-in page and try again"})
		return
	}
	clearCookie(w, r, loginCookie)
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		c.renderLoginError(w, r, http.StatusBadRequest, "Paste an API token (nct_...). `nebula-credential token create --name me --grant read:prod` makes one.")
		return
	}
	p, err := c.cfg.Authenticate(r, token)
	if err != nil {
		if errors.Is(err, ErrBadToken) {
			c.renderLoginError(w, r, http.StatusUnauthorized, "That token is unknown, revoked or expired: ask an admin for a new one.")
			return
		}
		c.fail(w, r, nil, err)
		return
	}
	now := c.cfg.Clock()
	id, _, err := c.newSession(token, p, now)
	if err != nil {
		c.fail(w, r, nil, err)
		return
	}
	if err := c.cfg.Audit(r.Context(), audit.Entry{At: now, Actor: p.Actor, Action: "console.signin", Outcome: "ok", RequestID: w.Header().Get("X-Request-ID")}); err != nil {
		c.drop(sessionKey(id))
		c.fail(w, r, nil, &Error{Status: http.StatusInternalServerError, Message: "the audit log could not be written, so the sign-in was refused: check the store"})
		return
	}
	setCookie(w, r, sessionCookie, id, int(c.cfg.SessionTTL.Seconds()))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) renderLoginError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomString()
	setCookie(w, r, loginCookie, tok, 600)
	c.render(w, status, "login", page{Title: "Sign in", CSRF: tok, Error: msg})
}

func (c *Console) logout(rq *req) error {
	if ck, err := rq.r.Cookie(sessionCookie); err == nil {
		c.drop(sessionKey(ck.Value))
	}
	clearCookie(rq.w, rq.r, sessionCookie)
	_ = c.cfg.Audit(rq.ctx, audit.Entry{At: rq.now, Actor: rq.p.Actor, Action: "console.signout", Outcome: "ok", RequestID: rq.w.Header().Get("X-Request-ID")})
	http.Redirect(rq.w, rq.r, "/ui/login", http.StatusSeeOther)
	return nil
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request) {
	c.fail(w, r, nil, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no console page %s %s", r.Method, r.URL.Path)})
}
