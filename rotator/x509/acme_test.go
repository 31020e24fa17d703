package x509_test

import (
	"bytes"
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	legolog "github.com/go-acme/lego/v5/log"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	x509rot "github.com/nebula-credential/nebula-credential/rotator/x509"
	"github.com/nebula-credential/nebula-credential/secret"
)

// pebble is Let's Encrypt's test ACME server, run from the module's tool
// dependency on 127.0.0.1 with validation switched off.
type pebble struct {
	dirURL  string
	tlsRoot []byte // trusted for pebble's own HTTPS
	root    []byte // root of the certificates pebble issues
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startPebble(t *testing.T) *pebble {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...) // only outside CI: under CI=true it is a failure (above)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out, err := exec.Command(goBin, "tool", "-n", "pebble").Output()
	if err != nil {
		unavailable("cannot build pebble (go tool -n pebble): %v", err)
	}
	bin := strings.TrimSpace(string(out))

	// pebble's HTTPS certificate, from a CA of our own.
	dir := t.TempDir()
	ca, err := x509rot.NewSelfSignedCA("pebble tls root", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(x509rot.IssueRequest{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cert.pem"), srv.ChainPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), srv.KeyPEM, 0o600)
	port, mport := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", port), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mport),
		"certificate": filepath.Join(dir, "cert.pem"), "privateKey": filepath.Join(dir, "key.pem"),
		"httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"domainBlocklist": []string{"blocked.nebula.test"}, "retryAfter": map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm": "ecdsa",
		"profiles":     map[string]any{"default": map[string]any{"description": "default", "validityPeriod": 7776000}},
	}}
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "pebble.json"), b, 0o600)

	var logs bytes.Buffer
	cmd := exec.Command(bin, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", "127.0.0.1:1")
	cmd.Env = append(os.Environ(), "PEBBLE_VA_ALWAYS_VALID=1", "PEBBLE_VA_NOSLEEP=1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		unavailable("start pebble: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("pebble output:\n%s", logs.String())
		}
	})
	pool := stdx509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p := &pebble{dirURL: fmt.Sprintf("https://127.0.0.1:%d/dir", port), tlsRoot: ca.CertPEM()}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mport))
		if err == nil && resp.StatusCode == 200 {
			p.root, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v\n%s", err, logs.String())
		}
	}
	return p
}

func (p *pebble) fields(srv *server, names ...string) map[string]any {
	return map[string]any{
		"issuer": "acme", "dns_names": names,
		"acme": map[string]any{
			"directory_url": p.dirURL, "ca_bundle": string(p.tlsRoot), "email": "ops@nebula.test",
			"http01_address": "127.0.0.1:0", "account_credential": "acme/account",
		},
		"deploy": []map[string]any{{"type": "provider", "name": "web"}},
		"verify": map[string]any{"address": srv.addr, "server_name": names[0], "trust_bundle": string(p.root)},
	}
}

func TestACME(t *testing.T) {
	legolog.SetDefault(slog.New(slog.DiscardHandler)) // lego logs every order step to stdout
	p := startPebble(t)
	srv := newServer(t)
	accountKey, err := x509rot.NewSelfSignedCA("account", time.Hour, time.Now()) // any ECDSA key will do
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := accountKey.KeyPEM()
	res := resolver{"acme/account": {ID: "acme/account", Secret: secret.Map{"account_key": secret.New(string(keyPEM))}}}
	r := x509rot.New(x509rot.Config{Providers: map[string]*x509rot.Provider{"web": srv.p}})

	// Version 1 is issued by the rotator itself from a credential that has
	// only its settings, then deployed.
	newCred := func(t *testing.T) rotator.Credential {
		c := rotator.Credential{ID: "test/acme", Type: "certificate", Fields: p.fields(srv, host)}
		v1 := rotatortest.Stage(t, rotatortest.Harness{Rotator: r, Resolver: res}, c, rotator.Reissue)
		v1.Version = 1
		if _, err := r.Apply(t.Context(), rotator.ApplyRequest{Current: c, Pending: v1, Resolver: res}); err != nil {
			t.Fatal(err)
		}
		return v1
	}
	t.Run("Conformance", func(t *testing.T) {
		rotatortest.Run(t, rotatortest.Harness{
			Rotator:       rotator.Sanitize(r),
			Resolver:      res,
			NewCredential: newCred,
			Authenticates: func(t *testing.T, c rotator.Credential) bool { return valid(t, c, p.root) },
			// As with the built-in CA: certificates stay valid until they
			// expire (revoking at the CA is not part of Retire or Revert).
			OldValidAfterRetire:    true,
			NoRevertRejectsPending: true,
		})
	})
	t.Run("ServedAfterRotation", func(t *testing.T) {
		cur := newCred(t)
		next := rotate(t, r, res, cur)
		if got := srv.servedSerial(t, p.root); got != next.String("serial") {
			t.Fatalf("server serves %s, want %s", got, next.String("serial"))
		}
		if next.ExpiresAt == nil || next.ExpiresAt.Before(time.Now().Add(80*24*time.Hour)) {
			t.Fatalf("ExpiresAt = %v, want pebble's 90 days", next.ExpiresAt)
		}
	})
	t.Run("RejectedName", func(t *testing.T) {
		c := rotator.Credential{ID: "test/acme/blocked", Type: "certificate", Fields: p.fields(srv, "blocked.nebula.test")}
		delete(c.Fields["acme"].(map[string]any), "account_credential") // a throwaway account
		_, err := r.Stage(t.Context(), rotator.StageRequest{Current: c, RotationID: 1})
		if rotator.ClassOf(err) != rotator.ClassConfig || rotator.Retryable(err) || !strings.Contains(err.Error(), "rejectedIdentifier") {
			t.Fatalf("blocked name: want a config error naming the ACME problem, got %v", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		c := rotator.Credential{ID: "test/acme/down", Type: "certificate", Fields: p.fields(srv, host)}
		c.Fields["acme"].(map[string]any)["directory_url"] = "https://127.0.0.1:1/dir"
		_, err := r.Stage(t.Context(), rotator.StageRequest{Current: c, RotationID: 1, Resolver: res})
		if !rotator.Retryable(err) {
			t.Fatalf("unreachable ACME server: want a transient error, got %v", err)
		}
	})
}
