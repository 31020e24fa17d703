package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// TestPolicyWarningsFixLiterally: policy set, policy show and doctor print a
// consumer's drain timeout longer than the grace with a fix line that, run
// exactly as printed, leaves no warning. put with settings warns and refuses
// exactly like policy set.
func TestPolicyWarningsFixLiterally(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "s.db")
	t.Setenv("NEBULA_CREDENTIAL_PASSPHRASE", "")
	t.Setenv("NEBULA_CREDENTIAL_ADDR", "")
	t.Setenv("NEBULA_CREDENTIAL_TOKEN", "")
	cli := func(want int, stdin string, args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := runWith(append(args, "--store", st), strings.NewReader(stdin), &out, &errb); code != want {
			t.Fatalf("%v: exit %d, want %d: %s%s", args, code, want, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	cli(0, "", "init")
	cli(0, `{"secret": {"v": "s1"}}`, "put", "app/key", "--type", "generic")

	ctx := context.Background()
	g := &globals{store: st, stderr: io.Discard}
	m, err := g.open(ctx, openOpts{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	err = m.Store().Update(ctx, func(tx store.Tx) error {
		return tx.PutConsumer(ctx, &store.Consumer{ID: "orders-pool", CredentialID: "app/key", Name: "orders", Host: "h1", Kind: "pool",
			Version: 1, ActionOK: true, FirstSeen: now, LastSeen: now, Refresh: 5 * time.Second, DrainTimeout: 5 * time.Minute})
	})
	m.Close()
	if err != nil {
		t.Fatal(err)
	}

	fixOf := func(stderr string) []string {
		t.Helper()
		for _, l := range strings.Split(stderr, "\n") {
			if f, ok := strings.CutPrefix(strings.TrimSpace(l), "fix: "); ok {
				args := strings.Fields(f)
				if args[0] != "nebula-credential" {
					t.Fatalf("fix is not a command: %q", f)
				}
				return args[1:]
			}
		}
		t.Fatalf("no fix line in %q", stderr)
		return nil
	}

	// A periodic policy the longer grace would no longer fit: the fix moves both.
	_, stderr := cli(0, "", "policy", "set", "app/key", "--grace", "30s", "--periodic", "2m")
	if !strings.Contains(stderr, "warning: grace 30s is shorter than the drain timeout 5m0s of consumer orders-pool (pool on h1)") {
		t.Fatalf("policy set stderr: %s", stderr)
	}
	fix := fixOf(stderr)
	if got := strings.Join(fix, " "); got != "policy set app/key --grace 5m5s --periodic 5m6s" {
		t.Fatalf("fix: %q", got)
	}
	if _, stderr := cli(0, "", "policy", "show", "app/key"); fixOf(stderr) == nil {
		t.Fatal("policy show printed no warning")
	}
	out, _ := cli(0, "", "doctor", "app/key")
	if !strings.Contains(out, "fix: nebula-credential "+strings.Join(fix, " ")) {
		t.Fatalf("doctor: %s", out)
	}
	if _, stderr := cli(0, "", fix...); strings.Contains(stderr, "warning") {
		t.Fatalf("after the fix: %s", stderr)
	}
	if out, _ := cli(0, "", "doctor", "app/key"); strings.Contains(out, "warning") {
		t.Fatalf("doctor after the fix: %s", out)
	}

	// put with settings: the same refusal and the same warnings as policy set.
	_, stderr = cli(1, `{"secret": {"v": "s2"}, "settings": {"grace": "30s", "policies": [{"kind": "periodic", "interval": "2s"}]}}`, "put", "app/key", "--type", "generic")
	if !strings.Contains(stderr, "periodic interval 2s is not longer than grace 30s") {
		t.Fatalf("put refusal: %s", stderr)
	}
	out, _ = cli(0, "", "get", "app/key", "--json")
	if !strings.Contains(out, `"version": 1`) {
		t.Fatalf("a refused put wrote a version: %s", out)
	}
	out, stderr = cli(0, `{"secret": {"v": "s2"}, "settings": {"grace": "500ms"}}`, "put", "app/key", "--type", "generic")
	if !strings.Contains(stderr, "grace 500ms is under 1s") || !strings.Contains(out, "stored app/key version 2") {
		t.Fatalf("put warnings: %s %s", out, stderr)
	}
	out, _ = cli(0, `{"secret": {"v": "s3"}, "settings": {"grace": "500ms"}}`, "put", "app/key", "--type", "generic", "--json")
	if !strings.Contains(out, `"warnings"`) {
		t.Fatalf("put --json: %s", out)
	}
}
