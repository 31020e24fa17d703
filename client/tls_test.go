package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/server"
)

// TestTLS serves the API over HTTPS with ListenAndServe and talks to it with
// a client that trusts the server's certificate.
func TestTLS(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.ListenAndServe(ctx, e.srv, server.ServeConfig{Addr: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile, OnListen: func(a net.Addr) { addr <- a }})
	}()
	url := "https://" + (<-addr).String()
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c, err := client.New(url, e.admin, &client.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "tls/a", generic("v")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "tls/a", client.GetOptions{Reveal: true}); err != nil || got.Secret["key"].Reveal() != "v" {
		t.Fatalf("get over TLS: %v %v", got, err)
	}
	// A client that does not trust the certificate fails.
	untrusting, _ := client.New(url, e.admin, &client.Options{Retries: -1})
	if err := untrusting.Health(ctx); err == nil {
		t.Error("TLS without trust succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}
