package client_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// TestWatchSurvivesServerRestart stops the whole server (HTTP, Manager and
// store), changes current while it is down, starts a new server process-alike
// on the same address and store: the watcher reconnects and receives every
// change, including the one made while the server was down, once, in order.
func TestWatchSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	open := func() *credential.Manager {
		st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	start := func(m *credential.Manager, addr string) (stop func(), bound string) {
		srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) { // the old socket may linger
			if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: srv}
		go hs.Serve(ln)
		return func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Close() // ends watch streams
			hs.Shutdown(sctx)
			hs.Close()
			m.Close()
		}, ln.Addr().String()
	}

	m := open()
	_, tok, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	stop, addr := start(m, "127.0.0.1:0")
	c, err := client.New(addr, tok.Reveal(), &client.Options{WatchBackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Watch(wctx, "app/", 0)
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
		case <-time.After(time.Minute):
			t.Fatal("no event")
		}
		return client.Event{}
	}
	if _, err := c.Put(ctx, "app/db", generic("one")); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Version != 1 {
		t.Fatalf("first event %+v", ev)
	}

	stop() // the server goes away
	m = open()
	if _, err := m.Put(ctx, "app/db", generic("two")); err != nil { // current moves while it is down
		t.Fatal(err)
	}
	stop, _ = start(m, addr) // and comes back on the same address
	defer stop()
	if ev := next(); ev.CredentialID != "app/db" || ev.Version != 2 || ev.Kind != "current_changed" {
		t.Fatalf("change made while the server was down: %+v", ev)
	}
	if _, err := c.Put(ctx, "app/db", generic("three")); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Version != 3 {
		t.Fatalf("after restart: %+v", ev)
	}
}
