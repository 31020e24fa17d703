package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestPEMHelpersSplitCertKeyChain(t *testing.T) {
	mk := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
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
		return c, k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	root, rootKey, _ := mk("root", nil, nil, true)
	inter, interKey, interPEM := mk("inter", root, rootKey, true)
	_, leafKey, leafPEM := mk("www.example", inter, interKey, false)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(leafKey)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	c := &credential.Credential{ID: "web/cert", Type: credential.Certificate, Version: 2,
		Fields: map[string]any{"certificate": string(leafPEM) + string(interPEM)},
		Secret: secret.Map{"private_key": secret.New(string(keyPEM))}}
	r := newRenderer(t.Context(), fixed(map[string]*credential.Credential{"web/cert": c}))
	get := func(text string) string {
		b, err := r.render("t", text)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := get(`{{ pemcert "web/cert" }}`); got != string(leafPEM) {
		t.Errorf("pemcert = %q", got)
	}
	if got := get(`{{ pemchain "web/cert" }}`); got != string(interPEM) {
		t.Errorf("pemchain = %q", got)
	}
	full := get(`{{ pemfullchain "web/cert" }}`)
	if _, err := tls.X509KeyPair([]byte(full), []byte(get(`{{ pemkey "web/cert" }}`))); err != nil {
		t.Errorf("the full chain and key do not pair: %v", err)
	}
	if strings.Count(full, "BEGIN CERTIFICATE") != 2 {
		t.Errorf("full chain = %q", full)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("servers: [a:1]\ntemplates:\n  - contents: x\n    destination: /tmp/x\n    mode: 0640\n")
	f.Add("servers: [a:1]\nfull_check: 5m\nexec:\n  command: [sleep, 1]\n  on_change: signal\n")
	f.Add("servers: [a:1\n")
	f.Add("templates: {a: 1}\n")
	f.Fuzz(func(t *testing.T, text string) {
		_, err := ParseConfig("fuzz.yaml", []byte(text))
		var ce *ConfigError
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("%T is not a *ConfigError: %v", err, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}
