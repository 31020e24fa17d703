package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// cluster is several API servers on one Manager and one SQLite store, each on
// its own 127.0.0.1:0 listener, as instances behind client-side failover.
type cluster struct {
	m     *credential.Manager
	token string
	addrs []string
	stops []func()
	hits  []*atomic.Int32 // requests each instance received
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
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
	t.Cleanup(func() { m.Close() })
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{m: m, token: tok.Reveal()}
	for range n {
		srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 50 * time.Millisecond, RateLimit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hits := new(atomic.Int32)
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			srv.ServeHTTP(w, r)
		})}
		go hs.Serve(ln)
		var stopped atomic.Bool
		stop := func() {
			if stopped.Swap(true) {
				return
			}
			srv.Close() // ends the watch streams
			hs.Close()  // closes the listener and every connection
		}
		t.Cleanup(stop)
		cl.addrs = append(cl.addrs, ln.Addr().String())
		cl.stops = append(cl.stops, stop)
		cl.hits = append(cl.hits, hits)
	}
	return cl
}

// deadAddr is an address nothing listens on: a listener opened and closed.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// dropper accepts each request, reads it whole, and drops the connection
// without answering: an instance that dies after receiving.
func dropper(t *testing.T) (addr string, got *atomic.Int32) {
	t.Helper()
	got = new(atomic.Int32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), got
}

func newMulti(t *testing.T, token string, addrs ...string) *client.Client {
	t.Helper()
	c, err := client.New(strings.Join(addrs, ","), token, &client.Options{RetryWait: time.Millisecond, WatchBackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewSeveralAddresses(t *testing.T) {
	c, err := client.New(" 127.0.0.1:1 , https://b:8270/ ", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Addrs(), " "); got != "http://127.0.0.1:1 https://b:8270" {
		t.Fatalf("Addrs = %s", got)
	}
	if c.Addr() != "http://127.0.0.1:1" {
		t.Fatalf("Addr = %s", c.Addr())
	}
	for _, bad := range []string{"", ",", "a:1,,b:2", "a:1,ftp://b"} {
		if _, err := client.New(bad, "", nil); !errors.Is(err, credential.ErrInvalid) {
			t.Errorf("New(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestFailoverStopFirst: with the first instance stopped, reads and writes
// go on on the second, which stays in use.
func TestFailoverStopFirst(t *testing.T) {
	cl := newCluster(t, 2)
	ctx := t.Context()
	c := newMulti(t, cl.token, cl.addrs...)
	if _, err := c.Put(ctx, "app/db", generic("one")); err != nil {
		t.Fatal(err)
	}
	if cl.hits[0].Load() == 0 || cl.hits[1].Load() != 0 {
		t.Fatalf("before the stop: hits %d/%d, want the first address in use", cl.hits[0].Load(), cl.hits[1].Load())
	}
	cl.stops[0]()
	for i := range 5 {
		cred, err := c.Get(ctx, "app/db", client.GetOptions{Reveal: true})
		if err != nil {
			t.Fatalf("get %d after the first instance stopped: %v", i, err)
		}
		if cred.Secret["key"].Reveal() != "one" {
			t.Fatal("wrong secret")
		}
	}
	if c.Addr() != "http://"+cl.addrs[1] {
		t.Fatalf("in use: %s, want the second", c.Addr())
	}
	// A write whose connection could not even be made is safe anywhere: it
	// goes to the second too (here it already is in use; a fresh client
	// starts on the dead first address).
	c2 := newMulti(t, cl.token, cl.addrs...)
	if _, err := c2.Put(ctx, "app/db", generic("two")); err != nil {
		t.Fatalf("put on a fresh client after the first instance stopped: %v", err)
	}
	if _, err := c2.Rotate(ctx, "app/db", credential.RotateOptions{}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
}

// TestFailoverNoDuplicateWrite: an instance that received a write and died
// before answering is not followed by a second try elsewhere; a read moves on.
func TestFailoverNoDuplicateWrite(t *testing.T) {
	cl := newCluster(t, 1)
	ctx := t.Context()
	drop, dropped := dropper(t)
	c := newMulti(t, cl.token, drop, cl.addrs[0])

	before := cl.hits[0].Load()
	_, err := c.Put(ctx, "app/db", generic("one"))
	if err == nil {
		t.Fatal("the put succeeded: it was sent again to the second address after the first may have applied it")
	}
	if dropped.Load() != 1 || cl.hits[0].Load() != before {
		t.Fatalf("put: first received %d, second %d; want 1 and 0", dropped.Load(), cl.hits[0].Load()-before)
	}
	if !strings.Contains(err.Error(), "may have received it") {
		t.Errorf("error does not say why it was not retried: %v", err)
	}
	if _, err := cl.m.Get(ctx, "app/db", credential.GetOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("the credential exists: %v", err)
	}
	if _, err := c.Rotate(ctx, "app/db", credential.RotateOptions{}); err == nil || cl.hits[0].Load() != before {
		t.Fatalf("rotate: err %v, second received %d", err, cl.hits[0].Load()-before)
	}

	// A read is safe to repeat: it is answered by the second address.
	if _, err := cl.m.Put(ctx, "app/db", generic("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "app/db", client.GetOptions{}); err != nil {
		t.Fatalf("get: %v", err)
	}
	if c.Addr() != "http://"+cl.addrs[0] {
		t.Fatalf("in use after the read: %s", c.Addr())
	}
}

// TestFailoverUnavailable: an instance answering 503 (its store unreachable,
// /readyz false) is passed over by reads; a write gets the 503 back.
func TestFailoverUnavailable(t *testing.T) {
	cl := newCluster(t, 1)
	ctx := t.Context()
	var got503 atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got503.Add(1)
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"code":"unavailable","message":"store unreachable"}}`)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	if _, err := cl.m.Put(ctx, "app/db", generic("one")); err != nil {
		t.Fatal(err)
	}
	c := newMulti(t, cl.token, ln.Addr().String(), cl.addrs[0])
	if _, err := c.Get(ctx, "app/db", client.GetOptions{}); err != nil {
		t.Fatalf("get: %v", err)
	}
	c = newMulti(t, cl.token, ln.Addr().String(), cl.addrs[0])
	before := cl.hits[0].Load()
	if _, err := c.Put(ctx, "app/db", generic("two")); !errors.Is(err, client.ErrUnavailable) || cl.hits[0].Load() != before {
		t.Fatalf("put: %v; second received %d", err, cl.hits[0].Load()-before)
	}
}

// TestFailoverAllDown: the error names every address tried.
func TestFailoverAllDown(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	c := newMulti(t, "tok", a, b)
	for _, call := range []func() error{
		func() error { _, err := c.Get(t.Context(), "app/db", client.GetOptions{}); return err },
		func() error { _, err := c.Put(t.Context(), "app/db", generic("x")); return err },
	} {
		err := call()
		var ue *client.UnreachableError
		if !errors.As(err, &ue) || len(ue.Errs) != 2 {
			t.Fatalf("err = %v, want *UnreachableError for both", err)
		}
		for _, addr := range []string{a, b} {
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("%v does not name %s", err, addr)
			}
		}
	}
}

// TestWatchFailover: a watch stream follows the instance that is left when
// the one it is on stops, resuming after the last event: every change once,
// in order.
func TestWatchFailover(t *testing.T) {
	cl := newCluster(t, 2)
	ctx := t.Context()
	c := newMulti(t, cl.token, cl.addrs...)
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
	put := func(v string) {
		t.Helper()
		if _, err := cl.m.Put(ctx, "app/db", generic(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("1")
	if ev := next(); ev.Version != 1 {
		t.Fatalf("first event %+v", ev)
	}
	cl.stops[0]()
	put("2") // while the stream moves
	put("3")
	for want := 2; want <= 3; want++ {
		if ev := next(); ev.Version != want || ev.Kind != "current_changed" {
			t.Fatalf("after the stop: %+v, want version %d", ev, want)
		}
	}
	put("4")
	if ev := next(); ev.Version != 4 {
		t.Fatalf("on the second instance: %+v, want version 4 (a repeat or a gap)", ev)
	}
	if c.Addr() != "http://"+cl.addrs[1] {
		t.Fatalf("in use: %s", c.Addr())
	}
}
