package x509

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestNewCAKeyUsage: a CA certificate without a key usage extension (what
// `openssl req -x509` makes, and what docs/targets/x509.md tells a newcomer to
// run) may sign; one whose key usage leaves out certSign, or that is not a CA,
// may not.
func TestNewCAKeyUsage(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := stdx509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	mk := func(isCA bool, usage stdx509.KeyUsage) []byte {
		tmpl := &stdx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			BasicConstraintsValid: true, IsCA: isCA, KeyUsage: usage}
		c, err := stdx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	for _, tc := range []struct {
		name string
		cert []byte
		want string
	}{
		{"no key usage extension", mk(true, 0), ""},
		{"certSign", mk(true, stdx509.KeyUsageCertSign), ""},
		{"digitalSignature only", mk(true, stdx509.KeyUsageDigitalSignature), "not a CA"},
		{"not a CA", mk(false, stdx509.KeyUsageCertSign), "not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCA(tc.cert, keyPEM)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
