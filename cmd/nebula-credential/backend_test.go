package main

import (
	"bytes"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// closedAddr is an address nothing listens on: a listener opened and closed.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAddrFailover: `--addr dead,live` (and NEBULA_CREDENTIAL_ADDR with the
// same list) reaches the live server; with every address down the error
// names each one and says what to do.
func TestAddrFailover(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "s.key"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Put(ctx, "app/x", credential.PutRequest{Type: credential.Generic, Secret: secret.FromStrings(map[string]string{"k": "remote-secret-value"})}); err != nil {
		t.Fatal(err)
	}
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Manager: m, WatchPollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	live, dead := ln.Addr().String(), closedAddr(t)
	t.Setenv("NEBULA_CREDENTIAL_TOKEN", tok.Reveal())
	t.Setenv("NEBULA_CREDENTIAL_ADDR", "")

	cli := func(want int, args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := runWith(args, strings.NewReader(""), &out, &errb); code != want {
			t.Fatalf("%v: exit %d, want %d; stderr: %s", args, code, want, errb.String())
		}
		return out.String(), errb.String()
	}
	out, _ := cli(0, "get", "app/x", "--field", "k", "--reveal", "--addr", dead+","+live)
	if strings.TrimSpace(out) != "remote-secret-value" {
		t.Fatalf("get --addr dead,live: %q", out)
	}
	t.Setenv("NEBULA_CREDENTIAL_ADDR", dead+", "+live)
	stdin := `{"secret":{"k":"v2"}}`
	var o, e bytes.Buffer
	if code := runWith([]string{"put", "app/x", "--type", "generic"}, strings.NewReader(stdin), &o, &e); code != 0 {
		t.Fatalf("put with NEBULA_CREDENTIAL_ADDR=dead,live: exit %d: %s", code, e.String())
	}
	out, _ = cli(0, "list", "--json")
	if !strings.Contains(out, `"app/x"`) {
		t.Fatalf("list: %s", out)
	}

	other := closedAddr(t)
	_, stderr := cli(exitFailed, "get", "app/x", "--addr", dead+","+other)
	for _, want := range []string{dead, other, "no server answered", "nebula-credential serve", "--addr a:8270,b:8270"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("all down: stderr lacks %q: %s", want, stderr)
		}
	}
	if strings.Contains(stderr, "remote-secret-value") {
		t.Fatal("a secret in the error")
	}
}
