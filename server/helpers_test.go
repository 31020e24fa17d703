package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// env is a real Manager on a temporary SQLite store behind the real server.
type env struct {
	t      *testing.T
	dir    string
	dbPath string
	m      *credential.Manager
	srv    *Server
	ts     *httptest.Server
	admin  string // token value with admin:*
	target *rotatortest.Target
	logs   *testenv.Buffer
}

type envOpt func(*Config)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "creds.db")
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	target := rotatortest.NewTarget("")
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), target.Rotator())
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: true, Rotators: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Manager: m, Logger: logger, RateLimit: rate.Inf, WatchPollInterval: 50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	_, admin, err := CreateToken(ctx, st, TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, dbPath: dbPath, m: m, srv: srv, ts: ts, admin: admin.Reveal(), target: target, logs: logs}
	if tt, ok := t.(*testing.T); ok {
		e.t = tt
	}
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		srv.Close()
		m.Close()
	})
	return e
}

// token makes a token with the given grants ("read:prod", ...).
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
	_, v, err := CreateToken(context.Background(), e.m.Store(), TokenRequest{Name: "t", Grants: gs})
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Reveal()
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (r resp) code() string {
	var b errorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Code
}

// do sends a request; body may be a string, []byte, nil or a value to encode.
func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range res.Trailer {
		res.Header[k] = v
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must requires status.
func (e *env) must(status int, method, path, token string, body any) resp {
	e.t.Helper()
	r := e.do(method, path, token, body)
	if r.status != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	return r
}

func pgBody(password string) map[string]any {
	return map[string]any{"type": "postgres", "fields": map[string]any{"host": "127.0.0.1", "username": "app"}, "secret": map[string]string{"password": password}}
}

func genericBody(key string) map[string]any {
	return map[string]any{"type": "generic", "secret": map[string]string{"key": key}}
}
