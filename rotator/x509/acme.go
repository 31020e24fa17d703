package x509

import (
	"context"
	"crypto"
	"crypto/tls"
	stdx509 "crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/http01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// acmeUser is the ACME account lego acts for.
type acmeUser struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *acmeUser) GetEmail() string                       { return u.email }
func (u *acmeUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *acmeUser) GetPrivateKey() crypto.Signer           { return u.key }

// issueACME obtains a certificate for f's names from an ACME CA with a new
// key of f.KeyType.
func (r *Rotator) issueACME(ctx context.Context, f *Fields, res rotator.Resolver) (chainPEM, keyPEM []byte, err error) {
	a := f.ACME
	user := &acmeUser{email: a.Email}
	if a.AccountCredential != "" {
		if res == nil {
			return nil, nil, rotator.Errorf(rotator.ClassConfig, "acme account", "acme.account_credential is set but no resolver was given")
		}
		c, err := res.Resolve(ctx, a.AccountCredential)
		if err != nil {
			return nil, nil, &rotator.Error{Class: rotator.ClassOf(err), Op: "acme account", Err: fmt.Errorf("resolve %q: %w", a.AccountCredential, err)}
		}
		if user.key, err = parseKey([]byte(c.Secret["account_key"].Reveal())); err != nil {
			return nil, nil, rotator.Wrap(rotator.ClassConfig, "acme account", fmt.Errorf("credential %q: account_key: %w", a.AccountCredential, err))
		}
	} else if user.key, err = generateKey("ecdsa-p256", false); err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassUnknown, "acme account", err)
	}

	cfg := lego.NewConfig(user)
	cfg.CADirURL = a.DirectoryURL
	cfg.UserAgent = "nebula-credential"
	switch {
	case r.cfg.HTTPClient != nil:
		cfg.HTTPClient = r.cfg.HTTPClient
	case a.CABundle != "":
		pool := stdx509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(a.CABundle)) {
			return nil, nil, rotator.Errorf(rotator.ClassConfig, "acme", "acme.ca_bundle holds no PEM certificate")
		}
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
	}
	client, err := lego.NewClient(cfg)
	if err != nil {
		return nil, nil, classifyACME("acme directory", err)
	}
	solver := r.cfg.ACMEChallenge
	if solver == nil {
		addr := a.HTTP01Address
		if addr == "" {
			addr = ":80"
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, nil, rotator.Wrap(rotator.ClassConfig, "acme", fmt.Errorf("acme.http01_address: %w", err))
		}
		solver = http01.NewProviderServer(host, port)
	}
	if err := client.Challenge.SetHTTP01Provider(solver); err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassConfig, "acme", err)
	}
	if user.reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		return nil, nil, classifyACME("acme register", err)
	}
	key, err := generateKey(f.KeyType, false)
	if err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassConfig, "generate key", err)
	}
	cert, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{
		Domains: f.names(), PrivateKey: key, Bundle: true, Profile: a.Profile,
	})
	if err != nil {
		return nil, nil, classifyACME("acme order", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassUnknown, "encode key", err)
	}
	return cert.Certificate, keyPEM, nil
}

// classifyACME maps lego and ACME problem errors to classes.
func classifyACME(op string, err error) error {
	var p *acme.ProblemDetails
	if errors.As(err, &p) {
		class := rotator.ClassUnknown
		switch t := strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:"); {
		case t == "rateLimited" || t == "serverInternal" || t == "badNonce" || p.HTTPStatus >= 500:
			class = rotator.ClassTransient
		case t == "unauthorized" || t == "accountDoesNotExist" || t == "externalAccountRequired":
			class = rotator.ClassAuth
		case t == "rejectedIdentifier" || t == "caa" || t == "malformed" || t == "unsupportedIdentifier" ||
			t == "connection" || t == "dns" || t == "tls" || t == "incorrectResponse" || t == "invalidProfile":
			class = rotator.ClassConfig // the names or the challenge set-up need fixing
		case t == "badCSR" || t == "badPublicKey":
			class = rotator.ClassRejected // a new key may pass
		}
		return &rotator.Error{Class: class, Op: op, Err: fmt.Errorf("%s: %s", p.Type, p.Detail)}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return rotator.Wrap(rotator.ClassTransient, op, err)
	}
	return rotator.Wrap(rotator.ClassUnknown, op, err)
}
