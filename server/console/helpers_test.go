package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// env is a real Manager on a temporary SQLite store behind the real server,
// which serves the console at /ui/.
type env struct {
	t      testing.TB
	m      *credential.Manager
	srv    *server.Server
	ts     *httptest.Server
	admin  string
	target *rotatortest.Target
	// secrets are every secret value the test stored.
	secrets []string
}

func newEnv(t testing.TB) *env { return newEnvNotify(t, false) }

// newEnvNotify is newEnv; with dispatch it also runs a webhook dispatcher
// (two attempts before the dead-letter queue, millisecond backoffs) that
// the server kicks, as `serve` does.
func newEnvNotify(t testing.TB, dispatch bool) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	target := rotatortest.NewTarget("")
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), target.Rotator())
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: true, Rotators: reg})
	if err != nil {
		t.Fatal(err)
	}
	var d *notify.Dispatcher
	if dispatch {
		d, err = notify.NewDispatcher(notify.DispatcherConfig{Service: &notify.Service{Store: m.Store(), Keys: m.SubscriptionKeys()},
			PollInterval: 20 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
			MaxAttempts: 2, BreakerFailures: 1000, CheckInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
	}
	srv, err := server.New(server.Config{Manager: m, RateLimit: rate.Inf, WatchPollInterval: 50 * time.Millisecond, Notify: d})
	if err != nil {
		t.Fatal(err)
	}

	ts := httptest.NewServer(srv)
	e := &env{t: t, m: m, srv: srv, ts: ts, target: target}
	e.admin = e.token("admin:*")
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		srv.Close()
		m.Close()
	})
	if d != nil {
		// Registered last, so it stops first, before the store closes.
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		unsub := m.Engine().Subscribe(func(rotation.Event) { d.Kick() })
		go func() { defer close(done); _ = d.Run(dctx) }()
		t.Cleanup(func() { unsub(); cancel(); <-done })
	}
	return e
}

func (e *env) token(grants ...string) string {
	e.t.Helper()
	var gs []acl.Grant
	for _, g := range grants {
		gr, err := acl.ParseGrant(g)
		if err != nil {
			e.t.Fatal(err)
		}
		gs = append(gs, gr)
	}
	_, v, err := server.CreateToken(context.Background(), e.m.Store(), server.TokenRequest{Name: "t", Grants: gs})
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Reveal()
}

// putPG stores a postgres credential the fake target accepts.
func (e *env) putPG(id, password string) {
	e.t.Helper()
	e.target.AddUser("app_"+strings.ReplaceAll(id, "/", "_"), secret.Map{"password": secret.New(password)})
	_, err := e.m.Put(context.Background(), id, credential.PutRequest{
		Type: credential.Postgres, Fields: map[string]any{"host": "127.0.0.1", "username": "app_" + strings.ReplaceAll(id, "/", "_")},
		Secret: secret.Map{"password": secret.New(password)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets = append(e.secrets, password)
}

// failRotation leaves id in needs_attention: verify is refused and so is
// the automatic revert.
func (e *env) failRotation(id string) {
	e.t.Helper()
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassPermission, Message: "permission denied for table orders"})
	e.target.FailNext("revert", rotatortest.Failure{Class: rotator.ClassPermission, Message: "permission denied to alter role"})
	if _, err := e.m.Rotate(context.Background(), id, credential.RotateOptions{}); err == nil {
		e.t.Fatal("rotation did not fail")
	}
	c, err := e.m.Get(context.Background(), id, credential.GetOptions{})
	if err != nil || c.State != credential.StateNeedsAttention {
		e.t.Fatalf("state after failed rotation: %v %v", c, err)
	}
}

// allSecrets returns every secret value stored, including rotated ones.
func (e *env) allSecrets() []string {
	e.t.Helper()
	out := append([]string(nil), e.secrets...)
	ctx := context.Background()
	sums, _, err := e.m.List(ctx, credential.ListOptions{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sums {
		vs, err := e.m.Versions(ctx, s.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, v := range vs {
			c, err := e.m.Get(ctx, s.ID, credential.GetOptions{Version: v.Version})
			if err != nil {
				e.t.Fatal(err)
			}
			for _, sv := range c.Secret {
				out = append(out, sv.Reveal())
			}
		}
	}
	return out
}

// browser is a cookie-keeping HTTP client of the console (no JavaScript).
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status int
	header http.Header
	body   string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) get(path string) page {
	b.e.t.Helper()
	res, err := b.c.Get(b.e.ts.URL + path)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.read(res)
}

func (b *browser) post(path string, form url.Values) page {
	b.e.t.Helper()
	res, err := b.c.PostForm(b.e.ts.URL+path, form)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.read(res)
}

func (b *browser) read(res *http.Response) page {
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	p := page{status: res.StatusCode, header: res.Header, body: string(body)}
	if m := csrfRE.FindStringSubmatch(p.body); m != nil {
		b.csrf = m[1]
	}
	return p
}

// signIn signs in with token and returns the sign-in answer.
func (b *browser) signIn(token string) page {
	b.e.t.Helper()
	lp := b.get("/ui/login")
	if lp.status != 200 {
		b.e.t.Fatalf("login page: %d", lp.status)
	}
	p := b.post("/ui/login", url.Values{"csrf": {b.csrf}, "token": {token}})
	if p.status != http.StatusSeeOther {
		b.e.t.Fatalf("sign in: status %d: %s", p.status, p.body)
	}
	// Load a page to pick up the session's CSRF token.
	if ov := b.get("/ui/"); ov.status != 200 {
		b.e.t.Fatalf("overview after sign-in: %d %s", ov.status, ov.body)
	}
	return p
}

func httptestTLS(t testing.TB, e *env) *httptest.Server {
	ts := httptest.NewTLSServer(e.srv)
	t.Cleanup(ts.Close)
	return ts
}

func newJar() http.CookieJar {
	jar, _ := cookiejar.New(nil)
	return jar
}
