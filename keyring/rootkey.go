package keyring

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/crypto/argon2"
)

// CreateKeyFile writes a new random 32-byte key file with mode 0600. It refuses
// to overwrite an existing file.
func CreateKeyFile(path string) error {
	key := make([]byte, KeySize)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync key file: %w", err)
	}
	return f.Close()
}

// ErrKeyMissing: the key file does not exist.
var ErrKeyMissing = errors.New("missing key")

// ErrKeyFileMode: the key file is readable by group or others.
var ErrKeyFileMode = errors.New("key file is readable by group or others")

// ReadKeyFile reads a root key from a key file. The file must hold exactly 32
// bytes and must not be readable by group or others.
func ReadKeyFile(path string) (*Root, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: key file %s does not exist: pass --key-file (or run `nebula-credential init` for a new store)", ErrKeyMissing, path)
		}
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v; run `chmod 600 %s`", ErrKeyFileMode, path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("%w: key file %s holds %d bytes, want %d", ErrWrongKey, path, len(b), KeySize)
	}
	return NewRoot(b)
}

// Argon2Params are the Argon2id parameters of a passphrase root key. They are
// stored beside the data (not secret).
type Argon2Params struct {
	Salt      []byte `json:"salt"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// NewArgon2Params returns parameters with a fresh random salt and the RFC 9106
// second recommended option (t=3, m=64 MiB).
func NewArgon2Params() Argon2Params {
	salt := make([]byte, 16)
	rand.Read(salt)
	return Argon2Params{Salt: salt, Time: 3, MemoryKiB: 64 * 1024, Threads: 4}
}

// Validate rejects parameters too weak or too costly to be ours.
func (p Argon2Params) Validate() error {
	switch {
	case len(p.Salt) < 16:
		return errors.New("argon2 salt shorter than 16 bytes")
	case p.Time < 1 || p.Time > 64:
		return errors.New("argon2 time out of range")
	case p.MemoryKiB < 8*1024 || p.MemoryKiB > 4*1024*1024:
		return errors.New("argon2 memory out of range")
	case p.Threads < 1:
		return errors.New("argon2 threads out of range")
	}
	return nil
}

// FromPassphrase derives a root key from a passphrase.
func FromPassphrase(passphrase []byte, p Argon2Params) (*Root, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return NewRoot(argon2.IDKey(passphrase, p.Salt, p.Time, p.MemoryKiB, p.Threads, KeySize))
}
