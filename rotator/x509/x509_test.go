package x509_test

import (
	"context"
	"crypto/tls"
	stdx509 "crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	x509rot "github.com/nebula-credential/nebula-credential/rotator/x509"
	"github.com/nebula-credential/nebula-credential/secret"
)

const host = "app.nebula.test"

func newCA(t *testing.T, name string) *x509rot.CA {
	t.Helper()
	ca, err := x509rot.NewSelfSignedCA(name, 365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// server is an HTTPS server whose certificate comes from a Provider.
type server struct {
	addr string
	p    *x509rot.Provider
}

func newServer(t *testing.T) *server {
	t.Helper()
	p := x509rot.NewProvider()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: p.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		ErrorLog: nil,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &server{addr: ln.Addr().String(), p: p}
}

// client returns an HTTPS client trusting roots that opens a new connection,
// and so runs a new handshake, for every request.
func (s *server) client(roots []byte) *http.Client {
	pool := stdx509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{ // generous: a loaded machine is slow
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
	}}
}

// servedSerial returns the serial of the certificate the server presents.
func (s *server) servedSerial(t *testing.T, roots []byte) string {
	t.Helper()
	resp, err := s.client(roots).Get("https://" + s.addr + "/")
	if err != nil {
		t.Fatalf("handshake with the server: %v", err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.Text(16)
}

// fields returns the fields of a credential issued by CA caName, deployed to
// provider "web", verified against srv.
func fields(caName string, srv *server, trust []byte) map[string]any {
	return map[string]any{
		"issuer": "ca", "ca": caName, "common_name": host, "dns_names": []string{host},
		"deploy": []map[string]any{{"type": "provider", "name": "web"}},
		"verify": map[string]any{"address": srv.addr, "server_name": host, "trust_bundle": string(trust)},
	}
}

var seq atomic.Int64

// issue returns version 1 of a credential: a certificate from ca valid for
// validity, deployed on srv's provider if srv is not nil.
func issue(t *testing.T, ca *x509rot.CA, f map[string]any, keyType string, validity time.Duration, p *x509rot.Provider) rotator.Credential {
	t.Helper()
	out, err := ca.Issue(x509rot.IssueRequest{CommonName: host, DNSNames: []string{host}, KeyType: keyType, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		if err := p.Set(out.ChainPEM, out.KeyPEM); err != nil {
			t.Fatal(err)
		}
	}
	f["certificate"] = string(out.ChainPEM)
	f["serial"] = out.Leaf.SerialNumber.Text(16)
	f["not_after"] = out.Leaf.NotAfter.UTC().Format(time.RFC3339)
	exp := out.Leaf.NotAfter
	return rotator.Credential{
		ID: fmt.Sprintf("test/tls/%d", seq.Add(1)), Type: "certificate", Version: 1, Fields: f,
		Secret: secret.Map{"private_key": secret.New(string(out.KeyPEM))}, ExpiresAt: &exp,
	}
}

// valid reports whether clients trusting roots would accept c for host: the
// chain verifies now and the key matches. It uses only crypto/tls and x509.
func valid(t *testing.T, c rotator.Credential, roots []byte) bool {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(c.String("certificate")), []byte(c.Secret["private_key"].Reveal()))
	if err != nil {
		return false
	}
	pool := stdx509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	inter := stdx509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		ic, _ := stdx509.ParseCertificate(der)
		inter.AddCert(ic)
	}
	_, err = pair.Leaf.Verify(stdx509.VerifyOptions{DNSName: host, Roots: pool, Intermediates: inter})
	return err == nil
}

// The built-in CA, ECDSA P-256, deployed to an in-process server and
// verified by a handshake with it.
func TestConformanceProvider(t *testing.T) {
	ca := newCA(t, "nebula test root")
	srv := newServer(t)
	r := x509rot.New(x509rot.Config{CAs: map[string]*x509rot.CA{"main": ca}, Providers: map[string]*x509rot.Provider{"web": srv.p}})
	rotatortest.Run(t, rotatortest.Harness{
		Rotator: rotator.Sanitize(r),
		NewCredential: func(t *testing.T) rotator.Credential {
			return issue(t, ca, fields("main", srv, ca.CertPEM()), "ecdsa-p256", 0, srv.p)
		},
		Authenticates: func(t *testing.T, c rotator.Credential) bool { return valid(t, c, ca.CertPEM()) },
		// A certificate stays valid until it expires: Retire cannot withdraw
		// the old one, Revert cannot withdraw the pending one (it only stops
		// serving it). There is no CRL or OCSP in the built-in CA.
		OldValidAfterRetire:    true,
		NoRevertRejectsPending: true,
	})
}

// The built-in CA given by an admin credential, RSA 2048, deployed to files
// and verified in memory.
func TestConformanceFilesRSA(t *testing.T) {
	ca := newCA(t, "nebula admin root")
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	res := resolver{"pki/ca": {ID: "pki/ca", Fields: map[string]any{"certificate": string(ca.CertPEM())}, Secret: secret.Map{"private_key": secret.New(string(caKey))}}}
	dir := t.TempDir()
	r := x509rot.New(x509rot.Config{})
	rotatortest.Run(t, rotatortest.Harness{
		Rotator:  rotator.Sanitize(r),
		Resolver: res,
		NewCredential: func(t *testing.T) rotator.Credential {
			f := map[string]any{
				"admin_credential": "pki/ca", "common_name": host, "key_type": "rsa2048", "validity": "720h",
				"deploy": []map[string]any{{"type": "file", "cert_file": dir + "/tls.crt", "key_file": dir + "/tls.key"}},
				"verify": map[string]any{"trust_bundle": string(ca.CertPEM())},
			}
			return issue(t, ca, f, "rsa2048", 0, nil)
		},
		Authenticates:          func(t *testing.T, c rotator.Credential) bool { return valid(t, c, ca.CertPEM()) },
		OldValidAfterRetire:    true, // as above
		NoRevertRejectsPending: true,
	})
}

type resolver map[string]rotator.Credential

func (m resolver) Resolve(_ context.Context, id string) (rotator.Credential, error) {
	c, ok := m[id]
	if !ok {
		return rotator.Credential{}, rotator.Errorf(rotator.ClassConfig, "resolve", "no credential %q", id)
	}
	return c, nil
}

// rotate runs one rotation the way the engine does and returns the new version.
func rotate(t *testing.T, r rotator.Rotator, res rotator.Resolver, cur rotator.Credential) rotator.Credential {
	t.Helper()
	pend := rotatortest.Stage(t, rotatortest.Harness{Rotator: r, Resolver: res}, cur, rotator.Reissue)
	if _, err := r.Apply(t.Context(), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Reissue, Resolver: res}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: pend}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if _, err := r.Retire(t.Context(), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Reissue}); err != nil {
		t.Fatalf("retire: %v", err)
	}
	return pend
}

// An HTTPS server keeps serving through 20 rotations: clients opening a new
// connection in a loop never see a failed handshake.
func TestZeroDowntimeRotations(t *testing.T) {
	ca := newCA(t, "nebula test root")
	srv := newServer(t)
	r := rotator.Sanitize(x509rot.New(x509rot.Config{CAs: map[string]*x509rot.CA{"main": ca}, Providers: map[string]*x509rot.Provider{"web": srv.p}}))
	cur := issue(t, ca, fields("main", srv, ca.CertPEM()), "", 0, srv.p)

	var ok, failed atomic.Int64
	var mu sync.Mutex
	serials := map[string]bool{}
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := srv.client(ca.CertPEM())
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://" + srv.addr + "/")
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				resp.Body.Close()
				ok.Add(1)
				mu.Lock()
				serials[resp.TLS.PeerCertificates[0].SerialNumber.Text(16)] = true
				mu.Unlock()
			}
		}()
	}
	for range 20 {
		cur = rotate(t, r, nil, cur)
		time.Sleep(5 * time.Millisecond) // let the clients see this certificate
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d handshakes failed during 20 rotations; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 40 || len(serials) < 10 {
		t.Fatalf("only %d handshakes seeing %d certificates: the clients did not run through the rotations", ok.Load(), len(serials))
	}
	if got := srv.servedSerial(t, ca.CertPEM()); got != cur.String("serial") {
		t.Fatalf("server serves %s, want the last rotation's %s", got, cur.String("serial"))
	}
	t.Logf("%d handshakes, %d certificates seen, 0 failures", ok.Load(), len(serials))
}

// A rotation whose new certificate comes from an issuer clients do not trust
// is refused by Apply before it is deployed and fails Verify; Revert keeps the
// old certificate served. With the old
// certificate close to expiry, the error says so.
func TestUntrustedIssuerRevertsAndWarns(t *testing.T) {
	ca, rogue := newCA(t, "nebula test root"), newCA(t, "someone else's root")
	srv := newServer(t)
	r := x509rot.New(x509rot.Config{CAs: map[string]*x509rot.CA{"main": ca, "rogue": rogue}, Providers: map[string]*x509rot.Provider{"web": srv.p}})

	for _, tc := range []struct {
		name     string
		validity time.Duration
		urgent   bool
	}{
		{"old expires in 10 days", 10 * 24 * time.Hour, true},
		{"old expires in 60 days", 60 * 24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := issue(t, ca, fields("main", srv, ca.CertPEM()), "", tc.validity, srv.p)
			cur.Fields["ca"] = "rogue" // the issuer was misconfigured
			pend := rotatortest.Stage(t, rotatortest.Harness{Rotator: r}, cur, rotator.Reissue)
			// Apply checks the chain in memory first: the untrusted certificate
			// never reaches the live server.
			_, aerr := r.Apply(t.Context(), rotator.ApplyRequest{Current: cur, Pending: pend})
			if rotator.ClassOf(aerr) != rotator.ClassRejected || !strings.Contains(aerr.Error(), "not trusted") || x509rot.Urgent(aerr) != tc.urgent {
				t.Fatalf("apply of an untrusted certificate: %v", aerr)
			}
			if got := srv.servedSerial(t, ca.CertPEM()); got != cur.String("serial") {
				t.Fatalf("a refused certificate was deployed: server serves %s", got)
			}
			// Verified in memory (it was never deployed), it is rejected as untrusted.
			pend = inMemory(pend)
			_, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: pend})
			if rotator.ClassOf(err) != rotator.ClassRejected || rotator.Retryable(err) {
				t.Fatalf("verify with an untrusted issuer: want ClassRejected, got %v", err)
			}
			if !strings.Contains(err.Error(), "not trusted") {
				t.Fatalf("the error should say the certificate is not trusted: %v", err)
			}
			sanitized := rotator.Sanitize(r)
			_, serr := sanitized.Verify(t.Context(), rotator.VerifyRequest{Credential: pend})
			if x509rot.Urgent(err) != tc.urgent || x509rot.Urgent(serr) != tc.urgent {
				t.Fatalf("Urgent = %v (sanitized %v), want %v: %v", x509rot.Urgent(err), x509rot.Urgent(serr), tc.urgent, err)
			}
			if tc.urgent && !strings.Contains(err.Error(), "URGENT: the current certificate expires") {
				t.Fatalf("the message should say it is urgent: %v", err)
			}
			t.Log(err)

			for range 2 {
				if _, err := r.Revert(t.Context(), rotator.RevertRequest{Current: cur, Pending: pend}); err != nil {
					t.Fatal(err)
				}
			}
			if got := srv.servedSerial(t, ca.CertPEM()); got != cur.String("serial") {
				t.Fatalf("after revert the server serves %s, want the old %s", got, cur.String("serial"))
			}
		})
	}

	t.Run("stage failure", func(t *testing.T) {
		cur := issue(t, ca, fields("missing", srv, ca.CertPEM()), "", 5*24*time.Hour, srv.p)
		_, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, RotationID: 1})
		if rotator.ClassOf(err) != rotator.ClassConfig || !x509rot.Urgent(err) {
			t.Fatalf("want an urgent config error, got %v", err)
		}
	})
}

// Failure paths never print the private key: a reload command that dumps it,
// a key that does not match, an unreachable server.
func TestErrorsNeverContainKeys(t *testing.T) {
	ca := newCA(t, "nebula test root")
	dir := t.TempDir()
	r := x509rot.New(x509rot.Config{CAs: map[string]*x509rot.CA{"main": ca}})
	f := map[string]any{"ca": "main", "common_name": host, "verify": map[string]any{"address": "127.0.0.1:1", "trust_bundle": string(ca.CertPEM())}}
	cur := issue(t, ca, f, "", 0, nil)
	pend := rotatortest.Stage(t, rotatortest.Harness{Rotator: r}, cur, rotator.Reissue)
	key := pend.Secret["private_key"].Reveal()

	var errs []error
	for _, script := range []string{
		"cat " + dir + "/k.pem >&2; exit 3",                     // the whole key
		"sed -n 2p " + dir + "/k.pem >&2; exit 3",               // one line of it
		"head -c 60 " + dir + "/k.pem | tail -c 30 >&2; exit 3", // a fragment
		"sed -n 3p " + dir + "/k.pem | cut -c 5-30 >&2; exit 3", // a fragment of a line
	} {
		p := pend
		p.Fields = map[string]any{}
		for k, v := range pend.Fields {
			p.Fields[k] = v
		}
		p.Fields["deploy"] = []map[string]any{{"type": "file", "cert_file": dir + "/c.pem", "key_file": dir + "/k.pem", "reload_command": []string{"sh", "-c", script}}}
		os.Remove(dir + "/k.pem") // make the deploy change something, so reload runs
		_, err := r.Apply(t.Context(), rotator.ApplyRequest{Current: cur, Pending: p})
		if err == nil {
			t.Fatal("a failing reload command must fail Apply")
		}
		errs = append(errs, err)
	}
	_, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: pend}) // unreachable
	if !rotator.Retryable(err) {
		t.Fatalf("unreachable server: want transient, got %v", err)
	}
	errs = append(errs, err)
	mismatched := pend
	mismatched.Secret = cur.Secret
	_, err = r.Verify(t.Context(), rotator.VerifyRequest{Credential: mismatched})
	if rotator.ClassOf(err) != rotator.ClassRejected {
		t.Fatalf("mismatched key: want ClassRejected, got %v", err)
	}
	errs = append(errs, err)

	body := strings.Join(strings.Split(key, "\n")[1:len(strings.Split(key, "\n"))-2], "")
	for _, err := range errs {
		msg := err.Error()
		t.Log(msg)
		for i := 0; i+12 <= len(body); i++ {
			if strings.Contains(msg, body[i:i+12]) {
				t.Fatalf("error leaks key material: %s", msg)
			}
		}
	}
}

// inMemory returns c with its verify address removed, so Verify handshakes in
// memory instead of with the live server.
func inMemory(c rotator.Credential) rotator.Credential {
	f := maps.Clone(c.Fields)
	if v, ok := f["verify"].(map[string]any); ok {
		v = maps.Clone(v)
		delete(v, "address")
		f["verify"] = v
	}
	c.Fields = f
	return c
}
