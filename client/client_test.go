package client_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

type env struct {
	m      *credential.Manager
	srv    *server.Server
	ts     *httptest.Server
	admin  string
	target *rotatortest.Target
	// fail503, when positive, makes that many next GETs answer 503.
	fail503 atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	target := rotatortest.NewTarget("")
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), target.Rotator())
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true, Rotators: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 50 * time.Millisecond, RateLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{m: m, srv: srv, target: target}
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && e.fail503.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, `{"error":{"code":"timeout","message":"busy"}}`, 503)
			return
		}
		srv.ServeHTTP(w, r)
	}))
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	e.admin = tok.Reveal()
	t.Cleanup(func() {
		e.ts.CloseClientConnections()
		e.ts.Close()
		srv.Close()
		m.Close()
	})
	return e
}

func (e *env) client(t *testing.T, token string) *client.Client {
	t.Helper()
	c, err := client.New(e.ts.URL, token, &client.Options{RetryWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pg(pw string) credential.PutRequest {
	return credential.PutRequest{Type: credential.Postgres, Fields: map[string]any{"host": "127.0.0.1", "username": "app"}, Secret: secret.FromStrings(map[string]string{"password": pw})}
}

func generic(v string) credential.PutRequest {
	return credential.PutRequest{Type: credential.Generic, Secret: secret.FromStrings(map[string]string{"key": v})}
}

func TestClient(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	c := e.client(t, e.admin)

	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Ready without scheduler = %v", err)
	}

	put, err := c.Put(ctx, "prod/db", pg("pw-one"))
	if err != nil {
		t.Fatal(err)
	}
	if put.Version != 1 || put.Secret["password"].Reveal() != "" {
		t.Errorf("put = %+v", put)
	}
	got, err := c.Get(ctx, "prod/db", client.GetOptions{Reveal: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret["password"].Reveal() != "pw-one" || got.Fields["host"] != "127.0.0.1" || got.State != credential.StateActive {
		t.Errorf("get = %+v", got)
	}
	red, err := c.Get(ctx, "prod/db", client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := red.Secret["password"]; !ok || red.Secret["password"].Reveal() != "" {
		t.Errorf("redacted get = %v", red.Secret)
	}
	if _, err := c.Get(ctx, "prod/none", client.GetOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	var ae *client.Error
	if _, err := c.Get(ctx, "prod/none", client.GetOptions{}); !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Code != "not_found" || ae.RequestID == "" {
		t.Errorf("error details: %#v", err)
	}
	if _, err := c.Get(ctx, "Bad", client.GetOptions{}); !errors.Is(err, credential.ErrInvalid) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := c.Put(ctx, "prod/db", generic("x")); !errors.Is(err, credential.ErrConflict) {
		t.Errorf("type change: %v", err)
	}
	if _, err := c.Put(ctx, "prod/x", credential.PutRequest{Type: credential.Postgres}); !errors.Is(err, credential.ErrInvalid) {
		t.Errorf("invalid put: %v", err)
	}

	for _, id := range []string{"prod/a", "prod/b", "prod/c"} {
		if _, err := c.Put(ctx, id, generic("v")); err != nil {
			t.Fatal(err)
		}
	}
	page, next, err := c.List(ctx, credential.ListOptions{Prefix: "prod/", Limit: 2})
	if err != nil || len(page) != 2 || next != "prod/b" {
		t.Errorf("list = %v %q %v", page, next, err)
	}
	var all []string
	for s, err := range c.All(ctx, credential.ListOptions{Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, s.ID)
	}
	if len(all) != 4 {
		t.Errorf("all = %v", all)
	}

	// Rotation life cycle.
	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": "pw-one"}))
	grace := time.Hour
	r, err := c.Rotate(ctx, "prod/db", credential.RotateOptions{Grace: &grace, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != rotation.StepGrace || r.ToVersion != 2 || r.Reason != "test" {
		t.Errorf("rotate = %+v", r)
	}
	if _, err := c.Rotate(ctx, "prod/db", credential.RotateOptions{}); !errors.Is(err, credential.ErrRotationInProgress) {
		t.Errorf("second rotate: %v", err)
	}
	r, err = c.ExtendGrace(ctx, "prod/db", 30*time.Minute)
	if err != nil || r.GraceEndsAt == nil {
		t.Errorf("extend: %+v %v", r, err)
	}
	rs, err := c.Rotations(ctx, "prod/db", true, 0)
	if err != nil || len(rs) != 1 {
		t.Errorf("rotations: %v %v", rs, err)
	}
	rep, err := c.Doctor(ctx, "prod/db")
	if err != nil || rep.CredentialID != "prod/db" {
		t.Errorf("doctor: %+v %v", rep, err)
	}
	r, err = c.Rollback(ctx, "prod/db", credential.RollbackOptions{Reason: "undo"})
	if err != nil || r.Step != rotation.StepRolledBack {
		t.Errorf("rollback: %+v %v", r, err)
	}
	if _, err := c.Rollback(ctx, "prod/db", credential.RollbackOptions{}); !errors.Is(err, rotation.ErrGraceEnded) {
		t.Errorf("rollback after grace: %v", err)
	}
	// A failed rotation is a *rotation.RotationError carrying the row.
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassAuth, Message: "login failed"})
	r, err = c.Rotate(ctx, "prod/db", credential.RotateOptions{})
	var re *rotation.RotationError
	if !errors.As(err, &re) || !re.RolledBack || re.ID != "prod/db" || r == nil || r.Step != rotation.StepRolledBack {
		t.Errorf("failed rotate: %v %+v", err, r)
	}
	if !errors.As(err, &ae) || ae.Code != "rotation_failed" {
		t.Errorf("failed rotate *Error: %v", err)
	}
	e.target.FailNext("apply", rotatortest.Failure{Class: rotator.ClassTransient, Message: "reset"})
	r, err = c.Rotate(ctx, "prod/db", credential.RotateOptions{})
	if !errors.Is(err, rotation.ErrRetryScheduled) || r == nil || !r.Open {
		t.Errorf("retry scheduled: %v %+v", err, r)
	}
	if r, err = c.Retry(ctx, "prod/db", false); err != nil || r.Step != rotation.StepGrace {
		t.Errorf("retry: %+v %v", r, err)
	}
	if _, err := c.Resolve(ctx, "prod/db", 0, false); !errors.Is(err, credential.ErrConflict) {
		t.Errorf("resolve in grace: %v", err)
	}

	// Policy.
	g := rotation.Duration(10 * time.Minute)
	p, err := c.SetPolicy(ctx, "prod/a", credential.Settings{Grace: &g, Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(24 * time.Hour)}}})
	if err != nil || p.Grace != "10m0s" || p.NextRotationAt == nil {
		t.Errorf("set policy: %+v %v", p, err)
	}
	if p, err = c.GetPolicy(ctx, "prod/a"); err != nil || len(p.Settings.Policies) != 1 {
		t.Errorf("get policy: %+v %v", p, err)
	}

	// History, delete, purge.
	h, err := c.History(ctx, "prod/db", 0)
	if err != nil || len(h.Versions) < 2 || len(h.Events) < 3 {
		t.Errorf("history: %+v %v", h, err)
	}
	if err := c.Delete(ctx, "prod/c"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "prod/c"); err != nil {
		t.Errorf("delete is not idempotent: %v", err)
	}
	if err := c.Purge(ctx, "prod/c"); err != nil {
		t.Fatal(err)
	}
	if err := c.Purge(ctx, "prod/c"); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("purge twice: %v", err)
	}

	// Tokens and permissions.
	tok, val, err := c.CreateToken(ctx, client.TokenRequest{Name: "ro", Grants: []string{"read:prod/a"}, TTL: time.Hour})
	if err != nil || tok.ExpiresAt == nil || val.IsZero() {
		t.Fatalf("create token: %+v %v", tok, err)
	}
	ro := e.client(t, val.Reveal())
	if _, err := ro.Get(ctx, "prod/a", client.GetOptions{Reveal: true}); err != nil {
		t.Errorf("read-only get: %v", err)
	}
	if _, err := ro.Get(ctx, "prod/b", client.GetOptions{}); !errors.Is(err, credential.ErrPermission) {
		t.Errorf("outside grant: %v", err)
	}
	if _, err := ro.Put(ctx, "prod/a", generic("x")); !errors.Is(err, credential.ErrPermission) {
		t.Errorf("put without write: %v", err)
	}
	toks, err := c.Tokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Errorf("tokens: %v %v", toks, err)
	}
	if err := c.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Get(ctx, "prod/a", client.GetOptions{}); !errors.Is(err, credential.ErrPermission) {
		t.Errorf("revoked: %v", err)
	}

	// Backup, restore, keys, audit.
	var buf bytes.Buffer
	info, err := c.Backup(ctx, &buf)
	if err != nil || info.Credentials != 3 || buf.Len() == 0 {
		t.Fatalf("backup: %+v %v", info, err)
	}
	if _, err := c.Put(ctx, "prod/a", generic("changed")); err != nil {
		t.Fatal(err)
	}
	info, err = c.Restore(ctx, bytes.NewReader(buf.Bytes()), "prod/a")
	if err != nil || info.Credentials != 1 {
		t.Errorf("restore: %+v %v", info, err)
	}
	if _, err := c.Restore(ctx, bytes.NewReader(buf.Bytes()[:100]), ""); !errors.Is(err, credential.ErrBadBackup) {
		t.Errorf("truncated restore: %v", err)
	}
	if ks, err := c.Keys(ctx); err != nil || len(ks) != 1 {
		t.Errorf("keys: %v %v", ks, err)
	}
	if res, err := c.RotateKEK(ctx); err != nil || res.NewKEK == "" {
		t.Errorf("rotate kek: %v %v", res, err)
	}
	recs, nextSeq, err := c.Audit(ctx, 0, 10)
	if err != nil || len(recs) != 10 || nextSeq != recs[9].Seq {
		t.Errorf("audit: %d %d %v", len(recs), nextSeq, err)
	}
	if v, err := c.VerifyAudit(ctx, nil); err != nil || !v.OK {
		t.Errorf("verify: %+v %v", v, err)
	}
}

func TestClientRetriesReads(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, e.admin)
	e.fail503.Store(2)
	if _, _, err := c.List(t.Context(), credential.ListOptions{}); err != nil {
		t.Errorf("list after two 503s: %v", err)
	}
	e.fail503.Store(5)
	if _, _, err := c.List(t.Context(), credential.ListOptions{}); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("list after five 503s: %v", err)
	}
	e.fail503.Store(0)
}

func TestNew(t *testing.T) {
	for _, addr := range []string{"nebula-a.example:8270", "http://h:1", "https://h/base/"} {
		if _, err := client.New(addr, "nct_x", nil); err != nil {
			t.Errorf("New(%q): %v", addr, err)
		}
	}
	for _, addr := range []string{"", "ftp://h", "http://"} {
		if _, err := client.New(addr, "", nil); !errors.Is(err, credential.ErrInvalid) {
			t.Errorf("New(%q) = %v", addr, err)
		}
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := e.client(t, e.admin)
	// Writes go through connections the test does not cut.
	w, err := client.New(e.ts.URL, e.admin, &client.Options{HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, "a/before", generic("v")); err != nil {
		t.Fatal(err)
	}
	events, err := c.Watch(ctx, "a/", 0)
	if err != nil {
		t.Fatal(err)
	}
	next := func() client.Event {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch closed")
			}
			return ev
		case <-time.After(time.Minute): // generous: a loaded machine is slow, a broken watch never delivers
			t.Fatal("no event")
		}
		return client.Event{}
	}
	if _, err := w.Put(ctx, "b/other", generic("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, "a/1", generic("v")); err != nil {
		t.Fatal(err)
	}
	ev := next()
	if ev.CredentialID != "a/1" || ev.Kind != "current_changed" || ev.Version != 1 {
		t.Fatalf("event %+v", ev)
	}
	// Cut every connection; events made meanwhile arrive after the
	// reconnect, once each, in order.
	e.ts.CloseClientConnections()
	for _, id := range []string{"a/2", "a/3"} {
		if _, err := w.Put(ctx, id, generic("v")); err != nil {
			t.Fatal(err)
		}
	}
	e.ts.CloseClientConnections()
	if ev := next(); ev.CredentialID != "a/2" {
		t.Fatalf("after reconnect: %+v", ev)
	}
	if ev := next(); ev.CredentialID != "a/3" {
		t.Fatalf("after reconnect: %+v", ev)
	}
	last := ev.Seq
	cancel()
	for range events {
	}

	// Resume from a remembered position.
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	events, err = c.Watch(ctx2, "a/", last)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.CredentialID != "a/2" {
		t.Fatalf("resumed: %+v", ev)
	}

	// A refused stream is an error at once.
	if _, err := e.client(t, "nct_bogus").Watch(ctx2, "", 0); !errors.Is(err, credential.ErrPermission) {
		t.Errorf("bad token watch: %v", err)
	}
}

// TestWatchStopsWhenRevoked: a token revoked while watching ends the stream.
func TestWatchStopsWhenRevoked(t *testing.T) {
	e := newEnv(t)
	admin := e.client(t, e.admin)
	tok, val, err := admin.CreateToken(t.Context(), client.TokenRequest{Name: "w", Grants: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(e.ts.URL, val.Reveal(), &client.Options{WatchBackoffMax: 50 * time.Millisecond})
	events, err := c.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(t.Context(), tok.ID); err != nil {
		t.Fatal(err)
	}
	e.ts.CloseClientConnections()
	select {
	case _, ok := <-events:
		if ok {
			t.Fatal("event after revocation")
		}
	case <-time.After(time.Minute):
		t.Fatal("watch of a revoked token still open")
	}
}

func ExampleClient_Get() {
	ctx := context.Background()
	c, err := client.New("nebula.internal:8270", "nct_...", nil)
	if err != nil {
		panic(err)
	}
	cred, err := c.Get(ctx, "prod/db/orders", client.GetOptions{Reveal: true})
	switch {
	case errors.Is(err, credential.ErrNotFound):
		// no such credential
	case errors.Is(err, credential.ErrPermission):
		// the token has no read grant covering prod/db/orders
	case err == nil:
		_ = cred.Secret["password"].Reveal()
	}
}

func ExampleClient_Watch() {
	ctx := context.Background()
	c, _ := client.New("nebula.internal:8270", "nct_...", nil)
	events, err := c.Watch(ctx, "prod/db/", 0)
	if err != nil {
		panic(err)
	}
	for ev := range events {
		if ev.Kind == "current_changed" {
			// re-read ev.CredentialID and swap the connection pool
		}
	}
}
