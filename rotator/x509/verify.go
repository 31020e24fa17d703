package x509

import (
	"bytes"
	"context"
	"crypto/tls"
	stdx509 "crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// handshake runs Verify's TLS handshake; see Rotator.Verify.
func (r *Rotator) handshake(ctx context.Context, f *Fields, c rotator.Credential) (string, error) {
	chainPEM, keyPEM, err := material(c)
	if err != nil {
		return "", err
	}
	leaf := leafRaw(chainPEM)
	v := f.Verify
	if v == nil {
		v = &VerifyFields{}
	}
	client := &tls.Config{ServerName: v.ServerName, MinVersion: tls.VersionTLS12}
	if client.ServerName == "" {
		if names := f.names(); len(names) > 0 {
			client.ServerName = names[0]
		} else if len(f.IPAddresses) > 0 {
			client.ServerName = f.IPAddresses[0]
		}
	}
	if v.TrustBundle != "" {
		client.RootCAs = stdx509.NewCertPool()
		if !client.RootCAs.AppendCertsFromPEM([]byte(v.TrustBundle)) {
			return "", rotator.Errorf(rotator.ClassConfig, "verify handshake", "verify.trust_bundle holds no PEM certificate")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()

	if v.Address == "" {
		// In memory: a TLS server holding this certificate, a client trusting
		// the bundle.
		pair, err := tls.X509KeyPair(chainPEM, keyPEM)
		if err != nil {
			return "", rotator.Errorf(rotator.ClassRejected, "verify handshake", "certificate and key do not form a pair")
		}
		// A loopback socket, not net.Pipe: the kernel buffers each side's
		// flight, so a client that rejects the certificate can send its alert
		// while the server is still writing (an unbuffered pipe deadlocks).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", rotator.Wrap(rotator.ClassTransient, "verify handshake", err)
		}
		defer ln.Close()
		go func() {
			sc, err := ln.Accept()
			if err != nil {
				return
			}
			srv := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{pair}})
			srv.HandshakeContext(ctx)
			srv.Close()
		}()
		cc, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return "", rotator.Wrap(rotator.ClassTransient, "verify handshake", err)
		}
		defer cc.Close()
		cl := tls.Client(cc, client)
		if err := cl.HandshakeContext(ctx); err != nil {
			return "", handshakeError(err, client.ServerName)
		}
		return fmt.Sprintf("in-memory TLS handshake as %s ok", client.ServerName), nil
	}

	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: client}
	conn, err := d.DialContext(ctx, "tcp", v.Address)
	if err != nil {
		return "", handshakeError(err, client.ServerName)
	}
	defer conn.Close()
	peer := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peer) == 0 || !bytes.Equal(peer[0].Raw, leaf) {
		serial := "none"
		if len(peer) > 0 {
			serial = peer[0].SerialNumber.Text(16)
		}
		// The server is healthy and trusted but not (yet) serving this
		// certificate: a reload may still be under way.
		return "", rotator.Errorf(rotator.ClassTransient, "verify handshake",
			"%s serves certificate serial %s, not %s: the deployment has not taken effect (no reload?)", v.Address, serial, c.String(FieldSerial))
	}
	return fmt.Sprintf("TLS handshake with %s as %s ok, serial %s", v.Address, client.ServerName, peer[0].SerialNumber.Text(16)), nil
}

// handshakeError classifies a failed handshake: a certificate clients would
// refuse is ClassRejected; a connection problem is ClassTransient.
func handshakeError(err error, name string) error {
	var (
		unknown  stdx509.UnknownAuthorityError
		hostname stdx509.HostnameError
		invalid  stdx509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return rotator.Errorf(rotator.ClassRejected, "verify handshake", "certificate not trusted: its issuer %q is not in the verify trust bundle", unknown.Cert.Issuer.CommonName)
	case errors.As(err, &hostname):
		return rotator.Errorf(rotator.ClassRejected, "verify handshake", "certificate not valid for %q", name)
	case errors.As(err, &invalid):
		return rotator.Errorf(rotator.ClassRejected, "verify handshake", "certificate rejected: %v", invalid)
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return rotator.Errorf(rotator.ClassRejected, "verify handshake", "certificate rejected: %v", cv.Err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return rotator.Wrap(rotator.ClassTransient, "verify handshake", err)
	}
	return rotator.Wrap(rotator.ClassUnknown, "verify handshake", err)
}
