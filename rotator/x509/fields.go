package x509

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	stdx509 "crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// Secret and field names.
const (
	SecretPrivateKey = "private_key" // PEM (PKCS #8)
	FieldCertificate = "certificate" // PEM chain, leaf first
	FieldSerial      = "serial"      // hex
	FieldNotAfter    = "not_after"   // RFC 3339
	// FieldPreviousNotAfter is the expiry of the certificate a version replaced,
	// so a failure verifying it can say how urgent the fix is.
	FieldPreviousNotAfter = "previous_not_after"
)

// Fields are the non-secret fields of a certificate credential.
type Fields struct {
	// Issuer is "ca" (the built-in CA, default) or "acme".
	Issuer string `json:"issuer,omitempty"`
	// CA names a CA in Config.CAs (issuer "ca").
	CA string `json:"ca,omitempty"`
	// AdminCredential is the ID of a stored credential holding the CA: field
	// "certificate" (the CA certificate, then its own chain) and secret
	// "private_key" (issuer "ca", when CA is empty).
	AdminCredential string `json:"admin_credential,omitempty"`
	// ACME configures issuer "acme".
	ACME *ACMEFields `json:"acme,omitempty"`

	CommonName  string   `json:"common_name,omitempty"`
	DNSNames    []string `json:"dns_names,omitempty"`
	IPAddresses []string `json:"ip_addresses,omitempty"`
	// KeyType is ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa3072 or rsa4096.
	KeyType string `json:"key_type,omitempty"`
	// Validity of certificates from the built-in CA, a Go duration. Default 2160h (90 days).
	Validity string `json:"validity,omitempty"`

	// Deploy lists where Apply installs the certificate, in order.
	Deploy []Deploy `json:"deploy,omitempty"`
	// Verify configures the TLS handshake that proves a certificate works.
	Verify *VerifyFields `json:"verify,omitempty"`

	Certificate      string `json:"certificate,omitempty"`
	Serial           string `json:"serial,omitempty"`
	NotAfter         string `json:"not_after,omitempty"`
	PreviousNotAfter string `json:"previous_not_after,omitempty"`
}

// ACMEFields configure issuance by an ACME CA (RFC 8555).
type ACMEFields struct {
	DirectoryURL string `json:"directory_url"`
	Email        string `json:"email,omitempty"`
	// AccountCredential is the ID of a stored credential whose secret
	// "account_key" (PEM) is the ACME account key. Empty: a new account is
	// registered for every issuance (fine for private ACME CAs).
	AccountCredential string `json:"account_credential,omitempty"`
	// CABundle (PEM) is trusted for the ACME server's own HTTPS, for private
	// ACME servers; empty: the system roots.
	CABundle string `json:"ca_bundle,omitempty"`
	// HTTP01Address is where lego serves http-01 challenges, unless
	// Config.ACMEChallenge is set. Default ":80".
	HTTP01Address string `json:"http01_address,omitempty"`
	Profile       string `json:"profile,omitempty"`
}

// Deploy is one place the certificate is installed.
type Deploy struct {
	// Type is "file" or "provider".
	Type string `json:"type"`
	// CertFile receives the chain and KeyFile the key (mode 0600), each
	// written atomically. When both name the same file it receives key and
	// chain together, which a server reading it can never see mismatched.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// ReloadCommand runs (argv, no shell) after the files changed.
	ReloadCommand []string `json:"reload_command,omitempty"`
	// Name selects a Provider in Config.Providers.
	Name string `json:"name,omitempty"`
}

// VerifyFields configure the handshake of Verify.
type VerifyFields struct {
	// Address (host:port) is dialled and must serve the certificate. Empty:
	// the handshake runs in memory against the certificate itself, proving the
	// chain, the key and the name but not the deployment.
	Address string `json:"address,omitempty"`
	// ServerName is sent as SNI and checked. Default: the first DNS name, else
	// the common name.
	ServerName string `json:"server_name,omitempty"`
	// TrustBundle (PEM) holds the roots clients trust. Empty: the system roots.
	TrustBundle string `json:"trust_bundle,omitempty"`
}

func fieldsOf(c rotator.Credential) (*Fields, error) {
	var f Fields
	if err := c.Decode(&f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, rotator.Wrap(rotator.ClassConfig, "fields", err)
	}
	return &f, nil
}

func (f *Fields) validate() error {
	switch f.Issuer {
	case "", "ca":
		if f.CA == "" && f.AdminCredential == "" {
			return errors.New("issuer ca needs ca (a name in the rotator's config) or admin_credential")
		}
	case "acme":
		if f.ACME == nil || f.ACME.DirectoryURL == "" {
			return errors.New("issuer acme needs acme.directory_url")
		}
		if len(f.names()) == 0 {
			return errors.New("issuer acme needs dns_names or common_name")
		}
	default:
		return fmt.Errorf("issuer %q: want ca or acme", f.Issuer)
	}
	if f.CommonName == "" && len(f.DNSNames) == 0 && len(f.IPAddresses) == 0 {
		return errors.New("a certificate needs common_name, dns_names or ip_addresses")
	}
	for _, ip := range f.IPAddresses {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("ip_addresses: %q is not an IP address", ip)
		}
	}
	if _, err := f.validity(); err != nil {
		return err
	}
	if _, err := generateKey(f.KeyType, true); err != nil {
		return err
	}
	for i, d := range f.Deploy {
		switch d.Type {
		case "file":
			if d.CertFile == "" || d.KeyFile == "" {
				return fmt.Errorf("deploy[%d]: a file target needs cert_file and key_file", i)
			}
		case "provider":
			if d.Name == "" {
				return fmt.Errorf("deploy[%d]: a provider target needs name", i)
			}
		default:
			return fmt.Errorf("deploy[%d]: type %q: want file or provider", i, d.Type)
		}
	}
	return nil
}

// names are the DNS names of the certificate, common name first.
func (f *Fields) names() []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range append([]string{f.CommonName}, f.DNSNames...) {
		if n != "" && !seen[n] && net.ParseIP(n) == nil {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func (f *Fields) validity() (time.Duration, error) {
	if f.Validity == "" {
		return 90 * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(f.Validity)
	if err != nil || d < time.Hour {
		return 0, fmt.Errorf("validity %q: want a Go duration of at least 1h", f.Validity)
	}
	return d, nil
}

// generateKey makes a private key of type t; check only validates t.
func generateKey(t string, check bool) (crypto.Signer, error) {
	var bits int
	var curve elliptic.Curve
	switch t {
	case "", "ecdsa-p256":
		curve = elliptic.P256()
	case "ecdsa-p384":
		curve = elliptic.P384()
	case "rsa2048":
		bits = 2048
	case "rsa3072":
		bits = 3072
	case "rsa4096":
		bits = 4096
	default:
		return nil, fmt.Errorf("key_type %q: want ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or rsa4096", t)
	}
	if check {
		return nil, nil
	}
	if curve != nil {
		return ecdsa.GenerateKey(curve, rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, bits)
}

// encodeKey returns k as PKCS #8 PEM.
func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := stdx509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKey reads a PKCS #8, PKCS #1 or SEC 1 private key. Its errors never
// quote the input.
func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("private key is not PEM")
	}
	if k, err := stdx509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("private key type cannot sign")
	}
	if k, err := stdx509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := stdx509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("private key is not PKCS #8, SEC 1 or PKCS #1")
}

// parseChain reads every certificate of a PEM bundle.
func parseChain(b []byte) ([]*stdx509.Certificate, error) {
	var out []*stdx509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := stdx509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return out, nil
}

func encodeChain(certs ...*stdx509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// notAfterOf returns the expiry a credential records, or that of its
// certificate; zero if neither is known.
func notAfterOf(c rotator.Credential) time.Time {
	if c.ExpiresAt != nil {
		return *c.ExpiresAt
	}
	if t, err := time.Parse(time.RFC3339, c.String(FieldNotAfter)); err == nil {
		return t
	}
	if chain, err := parseChain([]byte(c.String(FieldCertificate))); err == nil {
		return chain[0].NotAfter
	}
	return time.Time{}
}
