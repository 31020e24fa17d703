package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
)

// issue makes a leaf certificate signed by an intermediate: the leaf and
// intermediate PEM, and the leaf's key.
func issue(t *testing.T, cn string) (leaf, inter, key string) {
	t.Helper()
	mk := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: ca, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, DNSNames: []string{cn}}
		if parent == nil {
			parent, parentKey = tpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, parent, &k.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	root, rootKey, _ := mk("root", nil, nil, true)
	ic, ik, interPEM := mk("inter", root, rootKey, true)
	_, lk, leafPEM := mk(cn, ic, ik, false)
	der, _ := x509.MarshalPKCS8PrivateKey(lk)
	return leafPEM, interPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// TestCertificateFilesThenOneReload: a certificate credential delivered as
// cert, key and chain files with one HUP to a pid file's process, as nginx
// is. At every HUP the three files on disk belong together (the key matches
// the certificate), and each change sends exactly one HUP.
func TestCertificateFilesThenOneReload(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	put := func(cn string) string {
		leaf, inter, key := issue(t, cn)
		if _, err := s.m.Put(context.Background(), "web/cert", credential.PutRequest{Type: credential.Certificate,
			Fields: map[string]any{"certificate": leaf + inter}, Secret: secret.Map{"private_key": secret.New(key)}}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	put("www-1.example")
	dir := t.TempDir()
	// the "server" to reload: on HUP it snapshots the three files
	reloader := exec.Command("sh", "-c", `n=0; trap 'n=$((n+1)); cat cert.pem > snap.$n.cert; cat key.pem > snap.$n.key; cat chain.pem > snap.$n.chain' HUP; echo $$ > app.pid; while :; do sleep 0.05; done`)
	reloader.Dir = dir
	if err := reloader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reloader.Process.Kill(); reloader.Wait() })
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if b, _ := os.ReadFile(filepath.Join(dir, "app.pid")); strings.TrimSpace(string(b)) == strconv.Itoa(reloader.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reloader never wrote its pid file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s]
templates:
  - contents: '{{ pemcert "web/cert" }}'
    destination: cert.pem
    mode: 0644
    action: {signal: HUP, pid_file: app.pid}
  - contents: '{{ pemkey "web/cert" }}'
    destination: key.pem
    action: {signal: HUP, pid_file: app.pid}
  - contents: '{{ pemchain "web/cert" }}'
    destination: chain.pem
    mode: 0644
    action: {signal: HUP, pid_file: app.pid}
`, s.ts.URL))
	for i := range cfg.Templates {
		cfg.Templates[i].Action.PIDFile = filepath.Join(dir, "app.pid")
	}
	var st0 func(*testing.T) string
	snaps := func() int { m, _ := filepath.Glob(filepath.Join(dir, "snap.*.chain")); return len(m) }
	waitSnaps := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); snaps() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d HUPs, want %d\n%s", snaps(), n, st0(t))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	st := startAgent(t, cfg, s.token)
	st0 = func(*testing.T) string { return st.log.String() }
	st.waitVersion(t, "web/cert", 1)
	waitSnaps(1)
	keys := []string{"", ""}
	for v := 2; v <= 4; v++ {
		// one change at a time: a shell runs one trap for HUPs that arrive
		// together
		keys = append(keys, put(fmt.Sprintf("www-%d.example", v)))
		si := st.waitVersion(t, "web/cert", v)
		if si.Actions != 1 || len(si.Written) != 3 {
			t.Errorf("version %d: %d files, %d actions; want 3 files, 1 action", v, len(si.Written), si.Actions)
		}
		waitSnaps(v)
	}
	time.Sleep(100 * time.Millisecond) // a fifth HUP would be there by now
	if n := snaps(); n != 4 {
		t.Fatalf("%d HUPs, want 4 (one per delivery)", n)
	}
	for i := 1; i <= 4; i++ {
		read := func(ext string) []byte {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("snap.%d.%s", i, ext)))
			return b
		}
		cert, key, chain := read("cert"), read("key"), read("chain")
		if _, err := tls.X509KeyPair(append(cert, chain...), key); err != nil {
			t.Errorf("HUP %d saw a certificate and key that do not belong together: %v", i, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "key.pem")); string(b) != keys[4] {
		t.Error("key.pem is not the last version's key")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "key.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode %v", fi.Mode().Perm())
	}
	for _, k := range keys[2:] {
		if strings.Contains(st.log.String(), strings.Split(k, "\n")[1]) {
			t.Error("a private key is in the agent's log")
		}
	}
}
