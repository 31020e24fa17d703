package x509

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a built-in certificate authority: a CA certificate (and the chain
// above it, if it is an intermediate) with its private key.
type CA struct {
	// Chain is the CA certificate first, then its issuers.
	Chain []*stdx509.Certificate
	Key   crypto.Signer
}

// NewCA reads a CA from PEM: the CA certificate (then its own chain) and its
// private key. Its errors never quote the key.
func NewCA(certPEM, keyPEM []byte) (*CA, error) {
	chain, err := parseChain(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	ca := &CA{Chain: chain, Key: key}
	// A certificate without a key usage extension may be used for any purpose
	// (RFC 5280 4.2.1.3): `openssl req -x509` makes such CAs.
	if !chain[0].IsCA || (chain[0].KeyUsage != 0 && chain[0].KeyUsage&stdx509.KeyUsageCertSign == 0) {
		return nil, errors.New("ca certificate is not a CA (basic constraints or key usage)")
	}
	if !publicKeyEqual(chain[0].PublicKey, key.Public()) {
		return nil, errors.New("ca key does not match the ca certificate")
	}
	return ca, nil
}

// NewSelfSignedCA creates a root CA with an ECDSA P-256 key, for tests and for
// bootstrapping a private PKI.
func NewSelfSignedCA(commonName string, validity time.Duration, now time.Time) (*CA, error) {
	key, err := generateKey("ecdsa-p256", false)
	if err != nil {
		return nil, err
	}
	tmpl := &stdx509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              stdx509.KeyUsageCertSign | stdx509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := stdx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := stdx509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Chain: []*stdx509.Certificate{cert}, Key: key}, nil
}

// CertPEM returns the CA certificate and its chain as PEM.
func (ca *CA) CertPEM() []byte { return encodeChain(ca.Chain...) }

// KeyPEM returns the CA's private key as PKCS #8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.Key) }

// IssueRequest describes a server certificate.
type IssueRequest struct {
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	// KeyType as in Fields.KeyType; default ecdsa-p256.
	KeyType string
	// Validity, capped at the CA's own expiry. Default 90 days.
	Validity time.Duration
	// Now is the issuance time. Default: time.Now().
	Now time.Time
}

// Issued is a certificate with its key.
type Issued struct {
	Leaf     *stdx509.Certificate
	ChainPEM []byte // leaf, then the CA chain without the self-signed root
	KeyPEM   []byte
}

// Issue creates a key and a TLS server certificate for it.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	key, err := generateKey(req.KeyType, false)
	if err != nil {
		return nil, err
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := req.Validity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	notAfter := now.Add(validity)
	if caEnd := ca.Chain[0].NotAfter; notAfter.After(caEnd) {
		notAfter = caEnd
	}
	if !notAfter.After(now) {
		return nil, errors.New("the ca certificate has expired")
	}
	usage := stdx509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		usage |= stdx509.KeyUsageKeyEncipherment
	}
	tmpl := &stdx509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: req.CommonName},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
		NotBefore:    now.Add(-time.Minute), // tolerate clients whose clock lags
		NotAfter:     notAfter,
		KeyUsage:     usage,
		ExtKeyUsage:  []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
	}
	der, err := stdx509.CreateCertificate(rand.Reader, tmpl, ca.Chain[0], key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := stdx509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	chain := []*stdx509.Certificate{leaf}
	for _, c := range ca.Chain {
		if !bytes.Equal(c.RawIssuer, c.RawSubject) { // roots are the clients' business
			chain = append(chain, c)
		}
	}
	return &Issued{Leaf: leaf, ChainPEM: encodeChain(chain...), KeyPEM: keyPEM}, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return n.Add(n, big.NewInt(1))
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
