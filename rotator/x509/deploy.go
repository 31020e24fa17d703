package x509

import (
	"bytes"
	"context"
	"crypto/tls"
	stdx509 "crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Provider serves a certificate to an in-process Go TLS server and swaps it
// atomically: set tls.Config.GetCertificate to its GetCertificate, register it
// in Config.Providers under the name a credential's deploy target uses, and
// every rotation takes effect on the next handshake without a restart.
// Handshakes in progress keep the certificate they started with.
type Provider struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewProvider returns a Provider with no certificate; handshakes fail until
// the first Set (usually the first Apply or a Set at start-up from the store).
func NewProvider() *Provider { return &Provider{} }

// Set parses a PEM chain and key and makes them the certificate served. It
// fails, serving the old one, if the key does not match.
func (p *Provider) Set(chainPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return errors.New("certificate and key do not form a pair") // the error of X509KeyPair may echo PEM types only, but keep it plain
	}
	p.cur.Store(&c)
	return nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (p *Provider) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := p.cur.Load()
	if c == nil {
		return nil, errors.New("no certificate provisioned yet")
	}
	return c, nil
}

// Leaf returns the certificate served now, or nil.
func (p *Provider) Leaf() *stdx509.Certificate {
	if c := p.cur.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// deployFile installs chain and key; it reports whether anything changed.
// The key is written first so that a server watching the certificate file
// finds the matching key when the certificate changes.
func deployFile(d Deploy, chainPEM, keyPEM []byte) (bool, error) {
	if filepath.Clean(d.CertFile) == filepath.Clean(d.KeyFile) {
		return writeAtomic(d.KeyFile, append(append([]byte{}, keyPEM...), chainPEM...), 0o600)
	}
	k, err := writeAtomic(d.KeyFile, keyPEM, 0o600)
	if err != nil {
		return false, err
	}
	c, err := writeAtomic(d.CertFile, chainPEM, 0o644)
	return k || c, err
}

// writeAtomic replaces path with data so that a reader, or a crash at any
// point, sees either the old or the new content, never a mix: data goes to a
// temporary file in the same directory, is synced, renamed over path, and the
// directory is synced. Temporary files left by a crashed write are removed
// first. Unchanged content is not rewritten.
func writeAtomic(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "."+base+".tmp-*"))
	for _, s := range stale {
		os.Remove(s)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("rename into %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return true, nil
}

// reload runs a deploy target's reload command. Its output is not quoted
// except the first line of stderr, with every line of the key removed.
func reload(ctx context.Context, argv []string, timeout time.Duration, keyPEM []byte) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := fmt.Sprintf("reload command %s: %v", argv[0], err)
		line, _, _ := strings.Cut(strings.TrimSpace(redactPEM(stderr.String(), keyPEM)), "\n")
		if longBase64Run(line) {
			line = "(stderr suppressed: it may hold key material)"
		}
		if line != "" {
			if len(line) > 160 {
				line = line[:160] + "…"
			}
			msg += ": " + line
		}
		return errors.New(msg)
	}
	return nil
}

// redactPEM removes every line of pem (and the whole of it) from s.
func redactPEM(s string, pem []byte) string {
	for _, line := range strings.Split(string(pem), "\n") {
		if line = strings.TrimSpace(line); len(line) >= 8 && !strings.HasPrefix(line, "-----") {
			s = strings.ReplaceAll(s, line, "[REDACTED]")
		}
	}
	return s
}

// longBase64Run reports whether s holds 24 or more base64 characters in a row,
// which could be part of a key.
func longBase64Run(s string) bool {
	run := 0
	for _, r := range s {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=' {
			if run++; run >= 24 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}
