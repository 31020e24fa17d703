package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// TestReadyzFalseWhileStoreUnreachable: two instances on one PostgreSQL
// store, the first reaching it through a proxy. With the proxy closed (the
// store unreachable from the first) its /readyz answers 503 and the client
// with both addresses reads through the second; when the store is back the
// first is ready again.
func TestReadyzFalseWhileStoreUnreachable(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PGStoreDB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	viaProxy := *u
	viaProxy.Host = net.JoinHostPort(proxy.Host, strconv.Itoa(proxy.Port))
	dir := t.TempDir()
	var addrs []string
	var token string
	for i, d := range []string{viaProxy.String(), dsn} {
		st, err := postgres.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		ectx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Engine().Run(ectx); close(done) }()
		for deadline := time.Now().Add(time.Minute); !m.Engine().Running(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the scheduler did not start")
			}
		}
		srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 50 * time.Millisecond, RateLimit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		t.Cleanup(func() {
			ts.CloseClientConnections()
			ts.Close()
			srv.Close()
			stop()
			<-done
			m.Close()
		})
		if i == 0 {
			_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
			if err != nil {
				t.Fatal(err)
			}
			token = tok.Reveal()
			if _, err := m.Put(ctx, "app/db", generic("one")); err != nil {
				t.Fatal(err)
			}
		}
		addrs = append(addrs, ts.URL)
	}
	first := newMulti(t, token, addrs[0])
	if err := first.Ready(ctx); err != nil {
		t.Fatalf("first instance before the outage: %v", err)
	}

	proxy.Close() // the first instance loses its store
	readyz := func() (int, map[string]string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, "GET", addrs[0]+"/readyz", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]string
		json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || body["store"] != "unreachable" {
		t.Fatalf("/readyz with the store unreachable: %d %v, want 503 and store unreachable", code, body)
	}
	if err := first.Ready(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Ready with the store unreachable: %v, want ErrUnavailable", err)
	}
	both := newMulti(t, token, addrs...)
	cred, err := both.Get(ctx, "app/db", client.GetOptions{Reveal: true})
	if err != nil {
		t.Fatalf("get through both addresses: %v", err)
	}
	if cred.Secret["key"].Reveal() != "one" {
		t.Fatal("wrong secret")
	}

	proxy.Reopen(t) // the store is back
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := readyz(); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz stayed 503 after the store came back")
		}
	}
}
