package consumer_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// The client-backed source serves the cached version until the server's
// watch stream says current moved, then the new one.
func TestClientSource(t *testing.T) {
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
	srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close() // first: it ends the watch stream ts.Close waits for
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "app", Grants: []acl.Grant{{Permission: acl.Read, Prefix: "app/"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.URL, tok.Reveal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(v string) {
		if _, err := m.Put(ctx, "app/db", credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"password": secret.New(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	put("first-secret")
	src := consumer.FromClient(c)
	cur, err := src.Current(ctx, "app/db")
	if err != nil || cur.Version != 1 || cur.Secret["password"].Reveal() != "first-secret" {
		t.Fatalf("current: %v %+v", err, cur)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := src.Watch(wctx, "app/db")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the stream is connected
	put("second-secret")
	select {
	case ch := <-changes:
		if ch.Version != 2 {
			t.Fatalf("change %+v", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change delivered")
	}
	cur, err = src.Current(ctx, "app/db")
	if err != nil || cur.Version != 2 || cur.Secret["password"].Reveal() != "second-secret" {
		t.Fatalf("after change: %v %+v", err, cur)
	}
	if _, err := src.Current(ctx, "other/db"); err == nil {
		t.Fatal("a credential outside the token's grants was served")
	}

	// Without a watch the cache stays on version 2; Refresh reads past it.
	cancel()
	for range changes {
	}
	put("third-secret")
	if cur, _ = src.Current(ctx, "app/db"); cur.Version != 2 {
		t.Fatalf("unwatched current: version %d, want the cached 2", cur.Version)
	}
	if cur, err = src.Refresh(ctx, "app/db"); err != nil || cur.Version != 3 || cur.Secret["password"].Reveal() != "third-secret" {
		t.Fatalf("refresh: %v %+v", err, cur)
	}
	if cur, _ = src.Current(ctx, "app/db"); cur.Version != 3 {
		t.Fatalf("current after refresh: version %d, want 3", cur.Version)
	}
}
