// Package keyring implements nebula-credential's envelope encryption.
//
// Three levels of keys:
//
//   - the root key: 32 bytes from a key file (created 0600 by init) or derived
//     from a passphrase with Argon2id (salt and parameters stored in the store);
//   - key-encryption keys (KEKs): random, named, stored in the store wrapped by
//     the root key; one is active, older ones are retired by `key rotate` and
//     deleted once no data key needs them;
//   - data keys: one random key per credential version, wrapped by a KEK.
//
// Everything is sealed with AES-256-GCM. The associated data binds a version's
// ciphertext and its wrapped data key to the credential ID, version number and
// type, so a blob copied to another row fails to open. A wrong root key shows up
// as ErrWrongKey, never as garbage.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

var (
	// ErrWrongKey: the key file or passphrase does not open this store's keys.
	ErrWrongKey = errors.New("wrong key: the key file or passphrase does not match this store")
	// ErrCorrupt: a ciphertext failed authentication under the right key (edited or moved).
	ErrCorrupt = errors.New("ciphertext failed authentication: data was altered or moved")
	// ErrUnknownKEK: a data key names a KEK this keyring does not hold.
	ErrUnknownKEK = errors.New("unknown key-encryption key")
)

// KeySize is the size of every key: root, KEK and data key.
const KeySize = 32

// Root is the root key. It only wraps KEKs.
type Root struct {
	key  []byte
	aead cipher.AEAD
	id   string
}

// NewRoot returns a root key from 32 bytes.
func NewRoot(key []byte) (*Root, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("root key must be %d bytes, got %d", KeySize, len(key))
	}
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("nebula-credential root key id v1"))
	return &Root{key: append([]byte(nil), key...), aead: a, id: hex.EncodeToString(m.Sum(nil)[:8])}, nil
}

// ID is a public fingerprint of the root key, stored so a mismatch can be named.
func (r *Root) ID() string { return r.id }

// Wrap seals b under the root key with associated data label.
func (r *Root) Wrap(b []byte, label string) []byte { return seal(r.aead, b, []byte(label)) }

// Unwrap opens what Wrap sealed. A failure means the wrong root key: ErrWrongKey.
func (r *Root) Unwrap(b []byte, label string) ([]byte, error) {
	p, err := open(r.aead, b, []byte(label))
	if err != nil {
		return nil, ErrWrongKey
	}
	return p, nil
}

// Derive returns a purpose-specific key derived from the root key with HKDF-SHA-256
// (for backup files).
func (r *Root) Derive(purpose string, salt []byte) []byte {
	k, err := hkdf.Key(sha256.New, r.key, salt, "nebula-credential "+purpose, KeySize)
	if err != nil {
		panic("hkdf: " + err.Error()) // only for lengths out of range
	}
	return k
}

// Keyring holds the unwrapped KEKs. It is safe for concurrent use.
type Keyring struct {
	root   *Root
	mu     sync.RWMutex
	keks   map[string]kek
	active string
}

type kek struct {
	aead cipher.AEAD
	key  []byte
}

// New returns an empty keyring under root.
func New(root *Root) *Keyring {
	return &Keyring{root: root, keks: map[string]kek{}}
}

// Root returns the root key.
func (k *Keyring) Root() *Root { return k.root }

func kekLabel(id string) string { return "nebula-credential kek " + id }

// NewKEK creates a random KEK, adds it to the keyring and returns its ID and the
// wrapped form to store. It does not make it active.
func (k *Keyring) NewKEK() (id string, wrapped []byte, err error) {
	key := make([]byte, KeySize)
	rand.Read(key)
	idb := make([]byte, 6)
	rand.Read(idb)
	id = "kek-" + hex.EncodeToString(idb)
	a, err := newAEAD(key)
	if err != nil {
		return "", nil, err
	}
	k.mu.Lock()
	k.keks[id] = kek{a, key}
	k.mu.Unlock()
	return id, k.root.Wrap(key, kekLabel(id)), nil
}

// Load unwraps a stored KEK into the keyring. ErrWrongKey if the root key is wrong.
func (k *Keyring) Load(id string, wrapped []byte) error {
	key, err := k.root.Unwrap(wrapped, kekLabel(id))
	if err != nil {
		return err
	}
	a, err := newAEAD(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.keks[id] = kek{a, key}
	k.mu.Unlock()
	return nil
}

// Export returns a KEK wrapped under another root (restoring a backup into a store
// whose root key differs, for example another passphrase salt).
func (k *Keyring) Export(id string, to *Root) ([]byte, error) {
	k.mu.RLock()
	e, ok := k.keks[id]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKEK, id)
	}
	return to.Wrap(e.key, kekLabel(id)), nil
}

// SetActive selects the KEK that wraps new data keys.
func (k *Keyring) SetActive(id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.keks[id]; !ok {
		return fmt.Errorf("%w %q", ErrUnknownKEK, id)
	}
	k.active = id
	return nil
}

// Active returns the ID of the active KEK.
func (k *Keyring) Active() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.active
}

// Forget drops a KEK from memory (after it was deleted from the store).
func (k *Keyring) Forget(id string) {
	k.mu.Lock()
	delete(k.keks, id)
	k.mu.Unlock()
}

func (k *Keyring) kek(id string) (cipher.AEAD, error) {
	k.mu.RLock()
	e, ok := k.keks[id]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKEK, id)
	}
	return e.aead, nil
}

// AAD returns the associated data that binds a sealed version to its row.
func AAD(credentialID string, version int, typ string) []byte {
	b := make([]byte, 0, len(credentialID)+len(typ)+32)
	b = append(b, "nebula-credential v1\x00"...)
	b = append(b, credentialID...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, 0)
	b = append(b, typ...)
	return b
}

func dekAAD(aad []byte, kekID string) []byte {
	out := make([]byte, 0, len(aad)+len(kekID)+5)
	out = append(out, "dek\x00"...)
	out = append(out, aad...)
	out = append(out, 0)
	return append(out, kekID...)
}

// Seal encrypts plaintext under a fresh data key wrapped by the active KEK.
func (k *Keyring) Seal(plaintext, aad []byte) (kekID string, wrappedKey, ciphertext []byte, err error) {
	kekID = k.Active()
	kek, err := k.kek(kekID)
	if err != nil {
		return "", nil, nil, err
	}
	dek := make([]byte, KeySize)
	defer clear(dek) // the wrapped copy and the cipher's schedule are all that is kept
	rand.Read(dek)
	a, err := newAEAD(dek)
	if err != nil {
		return "", nil, nil, err
	}
	return kekID, seal(kek, dek, dekAAD(aad, kekID)), seal(a, plaintext, aad), nil
}

// Open decrypts what Seal produced. ErrCorrupt if the blob was altered or moved.
func (k *Keyring) Open(kekID string, wrappedKey, ciphertext, aad []byte) ([]byte, error) {
	dek, err := k.unwrapDEK(kekID, wrappedKey, aad)
	if err != nil {
		return nil, err
	}
	a, err := newAEAD(dek)
	clear(dek) // the cipher keeps its own schedule
	if err != nil {
		return nil, err
	}
	p, err := open(a, ciphertext, aad)
	if err != nil {
		return nil, ErrCorrupt
	}
	return p, nil
}

func (k *Keyring) unwrapDEK(kekID string, wrappedKey, aad []byte) ([]byte, error) {
	kek, err := k.kek(kekID)
	if err != nil {
		return nil, err
	}
	dek, err := open(kek, wrappedKey, dekAAD(aad, kekID))
	if err != nil {
		return nil, ErrCorrupt
	}
	return dek, nil
}

// Rewrap re-wraps a data key under the active KEK. The ciphertext is untouched.
// It returns the same values if the key is already under the active KEK.
func (k *Keyring) Rewrap(kekID string, wrappedKey, aad []byte) (newKEK string, newWrapped []byte, err error) {
	active := k.Active()
	if kekID == active {
		return kekID, wrappedKey, nil
	}
	dek, err := k.unwrapDEK(kekID, wrappedKey, aad)
	if err != nil {
		return "", nil, err
	}
	defer clear(dek)
	kek, err := k.kek(active)
	if err != nil {
		return "", nil, err
	}
	return active, seal(kek, dek, dekAAD(aad, active)), nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// seal returns nonce || ciphertext.
func seal(a cipher.AEAD, plaintext, aad []byte) []byte {
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	rand.Read(out)
	return a.Seal(out, out, plaintext, aad)
}

func open(a cipher.AEAD, b, aad []byte) ([]byte, error) {
	if len(b) < a.NonceSize()+a.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	return a.Open(nil, b[:a.NonceSize()], b[a.NonceSize():], aad)
}
