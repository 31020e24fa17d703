package consumer_test

import (
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/pgxswap"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// A finished drain reported through the HTTP source reaches the server as
// consumer evidence: the pool is on the current version.
func TestClientSourceReportsDrain(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := server.New(server.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "app", Grants: []acl.Grant{{Permission: acl.Read, Prefix: "app/"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.URL, tok.Reveal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"first-secret", "second-secret"} {
		if _, err := m.Put(ctx, "app/db", credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"password": secret.New(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	src := consumer.FromClient(c)
	src.SetConsumer("orders-pool", "orders")
	// Current again: nothing to report.
	if err := src.ReportUnused(ctx, "app/db", 2); err != nil {
		t.Fatal(err)
	}
	if cs, err := c.Consumers(ctx, "app/db"); err != nil || len(cs) != 0 {
		t.Fatalf("a drain of the current version was reported: %v %+v", err, cs)
	}
	if err := src.ReportUnused(ctx, "app/db", 1); err != nil {
		t.Fatal(err)
	}
	cs, err := c.Consumers(ctx, "app/db")
	if err != nil || len(cs) != 1 {
		t.Fatalf("consumers: %v %+v", err, cs)
	}
	if got := cs[0]; got.ConsumerID != "orders-pool" || got.Kind != "pool" || got.Version != 2 || !got.UpToDate || !got.Live || !got.ActionOK {
		t.Fatalf("consumer: %+v", got)
	}
}

// A pool opened on an HTTP source registers its drain timeout and the
// source's refresh bound (SetMaxAge) with the server before any rotation, and
// the server's policy check warns about a grace shorter than both together.
// SetMaxAge bounds the cache even without a watch.
func TestPoolReportsTiming(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := server.New(server.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "app", Grants: []acl.Grant{{Permission: acl.Read, Prefix: "app/"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.URL, tok.Reveal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(pw string) {
		t.Helper()
		if _, err := m.Put(ctx, "app/db", credential.PutRequest{Type: credential.Generic, Fields: map[string]any{"username": "app", "host": "127.0.0.1"}, Secret: secret.Map{"password": secret.New(pw)}}); err != nil {
			t.Fatal(err)
		}
	}
	put("first-secret")

	// The cache: kept without a watch, re-read past the max age.
	src := consumer.FromClient(c)
	if v, _ := src.Current(ctx, "app/db"); v.Version != 1 {
		t.Fatalf("version %d", v.Version)
	}
	put("second-secret")
	if v, _ := src.Current(ctx, "app/db"); v.Version != 1 {
		t.Fatalf("no max age: version %d, want the cached 1", v.Version)
	}
	src.SetMaxAge(time.Nanosecond)
	if v, _ := src.Current(ctx, "app/db"); v.Version != 2 {
		t.Fatalf("max age passed: version %d, want 2", v.Version)
	}

	src.SetMaxAge(5 * time.Second)
	src.SetConsumer("orders-pool", "orders")
	p, err := pgxswap.New(ctx, pgxswap.Config{Source: src, ID: "app/db", DrainTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	deadline := time.Now().Add(30 * time.Second)
	var cs []credential.ConsumerInfo
	for time.Now().Before(deadline) {
		if cs, err = c.Consumers(ctx, "app/db"); err == nil && len(cs) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(cs) != 1 || cs[0].ConsumerID != "orders-pool" || cs[0].RefreshSeconds != 5 || cs[0].DrainTimeoutSeconds != 120 || cs[0].Version != 2 {
		t.Fatalf("consumers: %v %+v", err, cs)
	}
	g := rotation.Duration(30 * time.Second)
	if err := m.SetSettings(ctx, "app/db", credential.Settings{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	fs, err := m.PolicyFindings(ctx, "app/db")
	if err != nil || len(fs) != 1 || fs[0].Fix != "nebula-credential policy set app/db --grace 2m5s" {
		t.Fatalf("findings: %v %+v", err, fs)
	}
}
