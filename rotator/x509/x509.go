// Package x509 rotates TLS certificates: it issues them from a built-in CA or
// an ACME CA (lego), deploys them to files and to in-process Go servers, and
// proves them with a TLS handshake.
//
// Reach for New to get the rotator for credential type "certificate", with the
// CAs and in-process Providers it may use in its Config. Reach for Provider to
// give a Go server (tls.Config.GetCertificate) certificates that swap without
// a restart, and for Urgent to tell whether a failure leaves a certificate
// about to expire.
//
// Stage issues a new key and certificate (secret private_key; fields
// certificate, serial, not_after). Apply deploys it; Verify completes a TLS
// handshake with a configured trust bundle and server name and checks the
// certificate served is this one; Revert redeploys the current certificate;
// Retire does nothing, since the old certificate stays valid until it expires
// (the strategy is Reissue). When a step fails while the current certificate
// expires within Config.UrgentWindow (30 days), the error says so and Urgent
// reports it.
package x509

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-acme/lego/v5/challenge"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Config configures the rotator. The zero value means the defaults.
type Config struct {
	// CAs are the built-in CAs credentials may name in field "ca".
	CAs map[string]*CA
	// Providers are the in-process TLS providers deploy targets of type
	// "provider" name.
	Providers map[string]*Provider
	// HTTPClient talks to ACME CAs. Default: one trusting the system roots, or
	// the credential's acme.ca_bundle.
	HTTPClient *http.Client
	// ACMEChallenge solves http-01 challenges. Default: lego's built-in server
	// on the credential's acme.http01_address.
	ACMEChallenge challenge.Provider
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// UrgentWindow: a failure while the current certificate expires within it
	// is marked urgent. Default: 30 days.
	UrgentWindow time.Duration
	// ReloadTimeout bounds a deploy target's reload command. Default: 30 s.
	ReloadTimeout time.Duration
	// DialTimeout bounds the verify handshake. Default: 10 s.
	DialTimeout time.Duration
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	if c.UrgentWindow < 0 || c.ReloadTimeout < 0 || c.DialTimeout < 0 {
		return errors.New("x509: negative duration in Config")
	}
	for name, ca := range c.CAs {
		if ca == nil || len(ca.Chain) == 0 || ca.Key == nil {
			return fmt.Errorf("x509: CA %q is incomplete", name)
		}
	}
	for name, p := range c.Providers {
		if p == nil {
			return fmt.Errorf("x509: provider %q is nil", name)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UrgentWindow == 0 {
		c.UrgentWindow = 30 * 24 * time.Hour
	}
	if c.ReloadTimeout == 0 {
		c.ReloadTimeout = 30 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	return c
}

// Rotator rotates certificates. It is safe for concurrent use.
type Rotator struct {
	cfg Config
}

var _ rotator.Rotator = (*Rotator)(nil)

// New returns a rotator; the zero Config means the defaults.
func New(cfg Config) *Rotator { return &Rotator{cfg: cfg.withDefaults()} }

// Capabilities: certificates are reissued and the old one stays valid until it
// expires.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Reissue}, Mints: true}
}

// Stage issues a new key and certificate. It changes no deployment. Calling it
// again for the same rotation issues another certificate, which is harmless:
// nothing holds the key of the first one.
func (r *Rotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	f, err := fieldsOf(req.Current)
	if err != nil {
		return rotator.StageResponse{}, r.urgent(err, notAfterOf(req.Current))
	}
	resp, err := r.stage(ctx, f, req)
	if err != nil {
		return rotator.StageResponse{}, r.urgent(rotator.Scrub(err, req.Current.Secret), notAfterOf(req.Current))
	}
	return resp, nil
}

func (r *Rotator) stage(ctx context.Context, f *Fields, req rotator.StageRequest) (rotator.StageResponse, error) {
	var chainPEM, keyPEM []byte
	if f.Issuer == "acme" {
		var err error
		if chainPEM, keyPEM, err = r.issueACME(ctx, f, req.Resolver); err != nil {
			return rotator.StageResponse{}, err
		}
	} else {
		ca, err := r.ca(ctx, f, req.Resolver)
		if err != nil {
			return rotator.StageResponse{}, err
		}
		validity, _ := f.validity()
		var ips []net.IP
		for _, s := range f.IPAddresses {
			ips = append(ips, net.ParseIP(s))
		}
		out, err := ca.Issue(IssueRequest{CommonName: f.CommonName, DNSNames: f.names(), IPAddresses: ips, KeyType: f.KeyType, Validity: validity, Now: r.cfg.Now()})
		if err != nil {
			return rotator.StageResponse{}, rotator.Wrap(rotator.ClassUnknown, "issue certificate", err)
		}
		chainPEM, keyPEM = out.ChainPEM, out.KeyPEM
	}
	chain, err := parseChain(chainPEM)
	if err != nil {
		return rotator.StageResponse{}, rotator.Wrap(rotator.ClassUnknown, "issue certificate", err)
	}
	leaf := chain[0]
	notAfter := leaf.NotAfter.UTC()
	fields := map[string]any{
		FieldCertificate: string(chainPEM),
		FieldSerial:      leaf.SerialNumber.Text(16),
		FieldNotAfter:    notAfter.Format(time.RFC3339),
	}
	if prev := notAfterOf(req.Current); !prev.IsZero() {
		fields[FieldPreviousNotAfter] = prev.UTC().Format(time.RFC3339)
	}
	return rotator.StageResponse{
		Secret:    secret.Map{SecretPrivateKey: secret.New(string(keyPEM))},
		Fields:    fields,
		ExpiresAt: &notAfter,
	}, nil
}

// ca returns the CA a credential names.
func (r *Rotator) ca(ctx context.Context, f *Fields, res rotator.Resolver) (*CA, error) {
	if f.CA != "" {
		ca, ok := r.cfg.CAs[f.CA]
		if !ok {
			return nil, rotator.Errorf(rotator.ClassConfig, "load ca", "no CA named %q in the rotator's config", f.CA)
		}
		return ca, nil
	}
	if res == nil {
		return nil, rotator.Errorf(rotator.ClassConfig, "load ca", "admin_credential %q is set but no resolver was given", f.AdminCredential)
	}
	c, err := res.Resolve(ctx, f.AdminCredential)
	if err != nil {
		return nil, &rotator.Error{Class: rotator.ClassOf(err), Op: "load ca", Err: fmt.Errorf("resolve %q: %w", f.AdminCredential, err)}
	}
	ca, err := NewCA([]byte(c.String(FieldCertificate)), []byte(c.Secret[SecretPrivateKey].Reveal()))
	if err != nil {
		return nil, rotator.Wrap(rotator.ClassConfig, "load ca", fmt.Errorf("credential %q: %w", f.AdminCredential, err))
	}
	return ca, nil
}

// material returns a credential's chain and key, checked to form a pair.
func material(c rotator.Credential) (chainPEM, keyPEM []byte, err error) {
	chainPEM, keyPEM = []byte(c.String(FieldCertificate)), []byte(c.Secret[SecretPrivateKey].Reveal())
	chain, err := parseChain(chainPEM)
	if err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassRejected, "load certificate", fmt.Errorf("version %d: %w", c.Version, err))
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, rotator.Wrap(rotator.ClassRejected, "load certificate", fmt.Errorf("version %d: %w", c.Version, err))
	}
	if !publicKeyEqual(chain[0].PublicKey, key.Public()) {
		return nil, nil, rotator.Errorf(rotator.ClassRejected, "load certificate", "version %d: the private key does not match the certificate", c.Version)
	}
	return chainPEM, keyPEM, nil
}

// deploy installs c on every target of f; it reports whether anything changed.
func (r *Rotator) deploy(ctx context.Context, f *Fields, c rotator.Credential) (bool, error) {
	chainPEM, keyPEM, err := material(c)
	if err != nil {
		return false, err
	}
	changed := false
	for i, d := range f.Deploy {
		switch d.Type {
		case "file":
			ch, err := deployFile(d, chainPEM, keyPEM)
			if err != nil {
				return changed, rotator.Wrap(rotator.ClassUnknown, "deploy files", err)
			}
			if ch && len(d.ReloadCommand) > 0 {
				if err := reload(ctx, d.ReloadCommand, r.cfg.ReloadTimeout, keyPEM); err != nil {
					return true, rotator.Wrap(rotator.ClassUnknown, "reload", err)
				}
			}
			changed = changed || ch
		case "provider":
			p, ok := r.cfg.Providers[d.Name]
			if !ok {
				return changed, rotator.Errorf(rotator.ClassConfig, "deploy provider", "deploy[%d]: no provider named %q in the rotator's config", i, d.Name)
			}
			if l := p.Leaf(); l != nil && bytes.Equal(l.Raw, leafRaw(chainPEM)) {
				continue
			}
			if err := p.Set(chainPEM, keyPEM); err != nil {
				return changed, rotator.Wrap(rotator.ClassRejected, "deploy provider", err)
			}
			changed = true
		}
	}
	return changed, nil
}

func leafRaw(chainPEM []byte) []byte {
	chain, err := parseChain(chainPEM)
	if err != nil {
		return nil
	}
	return chain[0].Raw
}

// Apply deploys the pending certificate to every target, skipping targets that
// already have it; a reload command runs only where files changed.
func (r *Rotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	f, err := fieldsOf(req.Pending)
	if err != nil {
		return rotator.ApplyResponse{}, r.urgent(err, notAfterOf(req.Current))
	}
	// Check the new certificate in memory, as Verify's clients would, before it
	// reaches a live server: an untrusted issuer or a wrong name never serves a
	// single handshake.
	if f.Verify != nil {
		pre, v := *f, *f.Verify
		v.Address = ""
		pre.Verify = &v
		if _, err := r.handshake(ctx, &pre, req.Pending); err != nil {
			return rotator.ApplyResponse{}, r.urgent(rotator.Scrub(err, req.Current.Secret, req.Pending.Secret), notAfterOf(req.Current))
		}
	}
	changed, err := r.deploy(ctx, f, req.Pending)
	if err != nil {
		return rotator.ApplyResponse{}, r.urgent(rotator.Scrub(err, req.Current.Secret, req.Pending.Secret), notAfterOf(req.Current))
	}
	return rotator.ApplyResponse{Skipped: !changed}, nil
}

// Verify completes a TLS handshake as a client trusting the verify trust
// bundle, with the verify server name: against verify.address, which must
// serve this very certificate, or, without an address, in memory against the
// certificate itself. An untrusted issuer, a wrong name, an expired
// certificate or a key that does not match are ClassRejected.
func (r *Rotator) Verify(ctx context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	c := req.Credential
	prev, _ := time.Parse(time.RFC3339, c.String(FieldPreviousNotAfter))
	f, err := fieldsOf(c)
	if err != nil {
		return rotator.VerifyResponse{}, r.urgent(err, prev)
	}
	detail, err := r.handshake(ctx, f, c)
	if err != nil {
		return rotator.VerifyResponse{}, r.urgent(rotator.Scrub(err, c.Secret), prev)
	}
	return rotator.VerifyResponse{Detail: detail}, nil
}

// Retire does nothing: the old certificate stays valid until it expires, and
// it is no longer deployed.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	return rotator.RetireResponse{}, nil
}

// Revert redeploys the current certificate everywhere (a no-op where it is
// still deployed). The pending certificate stays valid until it expires, but
// is no longer served.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	f, err := fieldsOf(req.Current)
	if err != nil {
		return rotator.RevertResponse{}, r.urgent(err, notAfterOf(req.Current))
	}
	if _, err := r.deploy(ctx, f, req.Current); err != nil {
		return rotator.RevertResponse{}, r.urgent(rotator.Scrub(
			rotator.Wrap(rotator.ClassOf(err), "redeploy current", err), req.Current.Secret, req.Pending.Secret), notAfterOf(req.Current))
	}
	return rotator.RevertResponse{}, nil
}

// UrgentPhrase starts the message of an urgent error.
const UrgentPhrase = "URGENT: the current certificate expires"

// UrgentError marks a failure that leaves a certificate close to expiry.
type UrgentError struct {
	NotAfter time.Time
	Err      error
}

func (e *UrgentError) Error() string { return e.Err.Error() }
func (e *UrgentError) Unwrap() error { return e.Err }

// Urgent reports whether err is a failure that leaves the current certificate
// expiring within the urgent window. rotator.Sanitize (which the registry
// applies) keeps only an error's class and text, so after it the phrase in the
// text is what remains to go by.
func Urgent(err error) bool {
	var u *UrgentError
	return errors.As(err, &u) || rotator.IsUrgent(err)
}

// urgent marks err when notAfter is within the urgent window.
func (r *Rotator) urgent(err error, notAfter time.Time) error {
	if err == nil || notAfter.IsZero() {
		return err
	}
	left := notAfter.Sub(r.cfg.Now())
	if left >= r.cfg.UrgentWindow {
		return err
	}
	day := 24 * time.Hour
	when := fmt.Sprintf("in %d days", (left+day/2)/day)
	if left < 0 {
		when = fmt.Sprintf("and expired %d days ago", (-left+day/2)/day)
	}
	inner := fmt.Errorf("%s at %s (%s): fix this failure and rotate again before then: %w",
		UrgentPhrase, notAfter.UTC().Format(time.RFC3339), when, err)
	return &rotator.Error{
		Class:      rotator.ClassOf(err),
		RetryAfter: rotator.RetryAfter(err),
		Privilege:  rotator.PrivilegeOf(err),
		Urgent:     true,
		Err:        &UrgentError{NotAfter: notAfter, Err: inner},
	}
}
