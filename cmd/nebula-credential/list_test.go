package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

// TestListLimitPages: --limit above the store's page size of 1000 returns
// as many credentials as asked, not a silent 1000.
func TestListLimitPages(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "s.db")
	t.Setenv("NEBULA_CREDENTIAL_PASSPHRASE", "")
	t.Setenv("NEBULA_CREDENTIAL_ADDR", "")
	if code := runWith([]string{"init", "--store", st}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	ctx := context.Background()
	g := &globals{store: st, stderr: io.Discard}
	m, err := g.open(ctx, openOpts{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1203
	for i := range n {
		if _, err := m.Put(ctx, fmt.Sprintf("bulk/c%05d", i), credential.PutRequest{Type: credential.Generic, Secret: secret.FromStrings(map[string]string{"v": "x"})}); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()

	count := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		if code := runWith(append([]string{"list", "--store", st, "--json"}, args...), strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("list %v: exit %d: %s", args, code, errb.String())
		}
		var res struct {
			Credentials []credential.Summary `json:"credentials"`
			Next        string               `json:"next"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		return len(res.Credentials), res.Next
	}
	if got, next := count("--limit", "5000"); got != n || next != "" {
		t.Fatalf("--limit 5000: %d credentials, next %q; want %d and no next page", got, next, n)
	}
	if got, next := count("--limit", "1100"); got != 1100 || next != "bulk/c01099" {
		t.Fatalf("--limit 1100: %d credentials, next %q; want 1100, next bulk/c01099", got, next)
	}
	if got, _ := count("--limit", "1000", "--after", "bulk/c01099"); got != n-1100 {
		t.Fatalf("second page: %d, want %d", got, n-1100)
	}
}
