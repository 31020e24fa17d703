package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

func TestSignInSetsASafeCookie(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	if p := b.get("/ui/"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/login" {
		t.Fatalf("overview without a session: %d %s", p.status, p.header.Get("Location"))
	}
	b.get("/ui/login")
	res := b.post("/ui/login", url.Values{"csrf": {b.csrf}, "token": {e.admin}})
	if res.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d %s", res.status, res.body)
	}
	var found bool
	for _, line := range res.header.Values("Set-Cookie") {
		if !strings.HasPrefix(line, "nc_session=") || strings.HasPrefix(line, "nc_session=;") {
			continue
		}
		found = true
		for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
			if !strings.Contains(line, want) {
				t.Errorf("session cookie %q lacks %s", line, want)
			}
		}
		if strings.Contains(line, "Secure") {
			t.Errorf("session cookie is Secure on plain HTTP (the browser would drop it): %q", line)
		}
		if strings.Contains(line, e.admin) {
			t.Fatal("the token is in the cookie")
		}
	}
	if !found {
		t.Fatalf("no session cookie in %v", res.header.Values("Set-Cookie"))
	}
	ov := b.get("/ui/")
	if ov.status != 200 || !strings.Contains(ov.body, "Overview") {
		t.Fatalf("overview: %d", ov.status)
	}
	csp := ov.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP: %q", csp)
	}
	// Sign-out ends the session on the server, not only in the browser.
	old := b.c.Jar.Cookies(mustURL(t, e.ts.URL+"/ui/"))
	if p := b.post("/ui/logout", url.Values{"csrf": {b.csrf}}); p.status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", p.status)
	}
	b2 := e.browser()
	b2.c.Jar.SetCookies(mustURL(t, e.ts.URL+"/ui/"), old)
	if p := b2.get("/ui/"); p.status != http.StatusSeeOther {
		t.Fatalf("old session cookie still works after sign-out: %d", p.status)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	e := newEnv(t)
	ts := httptestTLS(t, e)
	jar := newJar()
	c := ts.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b := &browser{e: &env{t: t, ts: ts}, c: c}
	b.get("/ui/login")
	res := b.post("/ui/login", url.Values{"csrf": {b.csrf}, "token": {e.admin}})
	if res.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d", res.status)
	}
	for _, line := range res.header.Values("Set-Cookie") {
		if strings.HasPrefix(line, "nc_session=") && !strings.Contains(line, "Secure") {
			t.Fatalf("session cookie under TLS without Secure: %q", line)
		}
	}
}

func TestSignInNeedsCSRFAndAGoodToken(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/ui/login")
	if p := b.post("/ui/login", url.Values{"token": {e.admin}}); p.status != http.StatusForbidden {
		t.Fatalf("sign-in without CSRF: %d", p.status)
	}
	b.get("/ui/login")
	if p := b.post("/ui/login", url.Values{"csrf": {b.csrf}, "token": {"nct_wrong"}}); p.status != http.StatusUnauthorized || strings.Contains(p.body, "nct_wrong") {
		t.Fatalf("bad token: %d", p.status)
	}
}

func TestPostWithoutCSRFIsRefused(t *testing.T) {
	e := newEnv(t)
	e.putPG("prod/db", "pw-csrf-1")
	b := e.browser()
	b.signIn(e.admin)
	for _, path := range []string{"/ui/act/rotate/prod/db", "/ui/reveal/prod/db", "/ui/logout"} {
		for _, form := range []url.Values{{}, {"csrf": {"forged"}}} {
			p := b.post(path, form)
			if p.status != http.StatusForbidden {
				t.Fatalf("POST %s with %v: %d", path, form, p.status)
			}
		}
	}
	// Nothing happened.
	c, err := e.m.Get(context.Background(), "prod/db", credential.GetOptions{})
	if err != nil || c.Version != 1 {
		t.Fatalf("a refused post changed something: %v %v", c, err)
	}
	// With the token it works.
	if p := b.post("/ui/act/rotate/prod/db", url.Values{"csrf": {b.csrf}}); p.status != http.StatusSeeOther {
		t.Fatalf("rotate with CSRF: %d %s", p.status, p.body)
	}
	if c, _ := e.m.Get(context.Background(), "prod/db", credential.GetOptions{}); c.Version != 2 {
		t.Fatalf("rotate did not happen: v%d", c.Version)
	}
}

func TestActionsFollowGrants(t *testing.T) {
	e := newEnv(t)
	e.putPG("prod/db", "pw-grants-1")
	e.putPG("dev/db", "pw-grants-2")
	e.failRotation("prod/db")
	// rotate but not rollback (nor read) on prod; nothing on dev.
	tok := e.token("rotate:prod")
	b := e.browser()
	b.signIn(tok)
	p := b.get("/ui/credential/prod/db")
	if p.status != 200 {
		t.Fatalf("credential page: %d %s", p.status, p.body)
	}
	if strings.Contains(p.body, `id="action-abort"`) || strings.Contains(p.body, "/ui/confirm/rollback/") || strings.Contains(p.body, "/ui/confirm/abort/") {
		t.Fatal("a token without rollback is offered a rollback")
	}
	if !strings.Contains(p.body, `id="action-retry"`) {
		t.Fatal("a token with rotate is not offered retry")
	}
	if strings.Contains(p.body, `id="reveal"`) {
		t.Fatal("a token without read is offered reveal")
	}
	// Posting anyway: the API refuses, and nothing moves.
	for _, a := range []string{"abort", "rollback"} {
		if r := b.post("/ui/act/"+a+"/prod/db", url.Values{"csrf": {b.csrf}}); r.status != http.StatusForbidden {
			t.Fatalf("POST %s without rollback grant: %d %s", a, r.status, r.body)
		}
	}
	if r := b.post("/ui/reveal/prod/db", url.Values{"csrf": {b.csrf}}); r.status != http.StatusForbidden {
		t.Fatalf("reveal without read: %d", r.status)
	}
	c, _ := e.m.Get(context.Background(), "prod/db", credential.GetOptions{})
	if c.State != credential.StateNeedsAttention {
		t.Fatalf("state moved to %s", c.State)
	}
	// Another prefix: 403 whether or not it exists, and the overview and
	// list do not show it.
	for _, path := range []string{"/ui/credential/dev/db", "/ui/credential/dev/nothing", "/ui/confirm/rotate/dev/db"} {
		if r := b.get(path); r.status != http.StatusForbidden {
			t.Fatalf("GET %s: %d", path, r.status)
		}
	}
	for _, path := range []string{"/ui/", "/ui/credentials", "/ui/credentials?sort=due", "/ui/credentials?state=active"} {
		if r := b.get(path); r.status != 200 || strings.Contains(r.body, "dev/db") {
			t.Fatalf("GET %s shows dev/db (status %d)", path, r.status)
		}
	}
	// The refusals are in the audit log.
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, r := range recs {
		if r.Outcome == "denied" && r.CredentialID == "prod/db" {
			denied++
		}
	}
	if denied < 3 {
		t.Fatalf("%d denied entries for prod/db, want 3", denied)
	}
}

func TestSecretsOnlyWhenRevealed(t *testing.T) {
	e := newEnv(t)
	e.putPG("prod/db", "pw-visible-never-1")
	e.putPG("prod/cache", "pw-visible-never-2")
	if _, err := e.m.Rotate(context.Background(), "prod/cache", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.failRotation("prod/db")
	secrets := e.allSecrets()
	if len(secrets) < 5 {
		t.Fatalf("only %d secrets", len(secrets))
	}
	b := e.browser()
	b.signIn(e.admin)
	pages := []string{"/ui/", "/ui/credentials", "/ui/credentials?sort=due", "/ui/credentials?sort=age", "/ui/credentials?state=needs_attention",
		"/ui/credential/prod/db", "/ui/credential/prod/cache", "/ui/credential/prod/cache?doctor=1", "/ui/audit", "/ui/audit?verify=1",
		"/ui/confirm/rotate/prod/cache", "/ui/confirm/rollback/prod/cache", "/ui/confirm/abort/prod/db", "/ui/confirm/resolve/prod/db", "/ui/confirm/retry/prod/db", "/ui/confirm/extend/prod/cache"}
	for _, path := range pages {
		p := b.get(path)
		if p.status != 200 {
			t.Fatalf("GET %s: %d %s", path, p.status, p.body)
		}
		for _, s := range secrets {
			if strings.Contains(p.body, s) {
				t.Fatalf("GET %s shows a secret value", path)
			}
		}
	}
	// Reveal shows exactly the current secret, and is audited.
	cur, _ := e.m.Get(context.Background(), "prod/cache", credential.GetOptions{})
	p := b.post("/ui/reveal/prod/cache", url.Values{"csrf": {b.csrf}})
	if p.status != 200 || !strings.Contains(p.body, cur.Secret["password"].Reveal()) {
		t.Fatalf("reveal: %d", p.status)
	}
	recs, _ := audit.List(context.Background(), e.m.Store(), 0, 10000)
	var revealed bool
	for _, r := range recs {
		if r.CredentialID == "prod/cache" && r.Detail == "reveal" && r.Action == "credential.get" {
			revealed = true
		}
		for _, s := range secrets {
			if strings.Contains(r.Detail, s) {
				t.Fatal("a secret is in the audit log")
			}
		}
	}
	if !revealed {
		t.Fatal("the reveal is not in the audit log")
	}
	// The audit page itself never shows secrets, even after a reveal.
	if a := b.get("/ui/audit"); strings.Contains(a.body, cur.Secret["password"].Reveal()) {
		t.Fatal("the audit page shows the revealed secret")
	}
}

func TestSessionsExpire(t *testing.T) {
	// A token that expires ends the session with it.
	e := newEnv(t)
	b := e.browser()
	b.signIn(e.admin)
	if p := b.get("/ui/credentials"); p.status != 200 {
		t.Fatalf("list: %d", p.status)
	}
	// Revoking the token ends the session at the next request (after the
	// server's token cache, which a revocation through the API clears).
	var tokID string
	for _, r := range mustAudit(t, e) {
		if r.Action == "console.signin" {
			tokID = strings.TrimPrefix(r.Actor, "token:")
		}
	}
	req, _ := http.NewRequest("DELETE", e.ts.URL+"/v1/tokens/"+tokID, nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", res, err)
	}
	res.Body.Close()
	p := b.get("/ui/credentials")
	if p.status != http.StatusSeeOther || !strings.Contains(p.header.Get("Location"), "/ui/login") {
		t.Fatalf("a revoked token's session still works: %d", p.status)
	}
}

func mustAudit(t *testing.T, e *env) []audit.Record {
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestOverviewShowsConsumersOnAnOldVersion(t *testing.T) {
	e := newEnv(t)
	e.putPG("prod/db", "pw-consumer-1")
	if _, err := e.m.Rotate(context.Background(), "prod/db", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err := e.m.Store().Update(context.Background(), func(tx store.Tx) error {
		return tx.PutConsumer(context.Background(), &store.Consumer{ID: "c1", CredentialID: "prod/db", Name: "billing-agent", Host: "web-3", Kind: "agent", Version: 1, ActionOK: true, FirstSeen: now, LastSeen: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn(e.admin)
	p := b.get("/ui/")
	if !strings.Contains(p.body, "billing-agent on web-3") || !strings.Contains(p.body, "v1") {
		t.Fatalf("the overview does not show the consumer on v1:\n%s", p.body)
	}
}
