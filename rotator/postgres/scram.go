package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

var _ rotator.Preparer = (*Rotator)(nil)

// scramIterations is what PostgreSQL itself uses (scram_iterations default).
const scramIterations = 4096

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password, computed client-side so the plaintext never reaches the server:
//
//	SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>
//
// The password is used as is. PostgreSQL applies SASLprep first, which leaves
// printable ASCII unchanged; policies are restricted to that (see policy).
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	return scramVerifierSalt(password, salt, scramIterations)
}

func scramVerifierSalt(password string, salt []byte, iter int) (string, error) {
	storedKey, serverKey, err := scramKeys(password, salt, iter)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(storedKey), b64(serverKey)), nil
}

// scramKeys derives StoredKey and ServerKey (RFC 5802 §3).
func scramKeys(password string, salt []byte, iter int) (storedKey, serverKey []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return nil, nil, err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	sk := sha256.Sum256(clientKey)
	return sk[:], hmacSHA256(salted, "Server Key"), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// prepared is what Prepare derives from a pending password ahead of Apply.
// It prints as "[prepared]" whatever the verb, so that neither the password
// nor its verifier reaches a log through an ApplyRequest.
type prepared struct {
	password secret.Value // the password verifier is for
	verifier string
}

func (p *prepared) String() string   { return "[prepared]" }
func (p *prepared) GoString() string { return "[prepared]" }

// Prepare computes the SCRAM verifier of pending's password (PBKDF2, a few
// milliseconds of CPU) so that Apply need not: the engine runs it while the
// pending version's durable commit waits for the disk. It implements
// rotator.Preparer; nil when there is no password.
func (r *Rotator) Prepare(pending rotator.Credential) any {
	pw := pending.Secret["password"]
	if pw.IsZero() {
		return nil
	}
	v, err := scramVerifier(pw.Reveal())
	if err != nil {
		return nil
	}
	return &prepared{password: pw, verifier: v}
}

// verifierFor returns the verifier Prepare made for password, or computes
// one when p is not for exactly this password.
func verifierFor(p any, password secret.Value) (string, error) {
	pw := password.Reveal()
	if pp, ok := p.(*prepared); ok && subtle.ConstantTimeCompare([]byte(pp.password.Reveal()), []byte(pw)) == 1 {
		return pp.verifier, nil
	}
	return scramVerifier(pw)
}
