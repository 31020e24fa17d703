package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func newRing(t *testing.T) *Keyring {
	t.Helper()
	key := bytes.Repeat([]byte{7}, KeySize)
	root, err := NewRoot(key)
	if err != nil {
		t.Fatal(err)
	}
	k := New(root)
	id, _, err := k.NewKEK()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetActive(id); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenBindsRow(t *testing.T) {
	k := newRing(t)
	aad := AAD("prod/db", 3, "postgres")
	kek, wk, ct, err := k.Seal([]byte(`{"password":"hunter2"}`), aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("hunter2")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	p, err := k.Open(kek, wk, ct, aad)
	if err != nil || string(p) != `{"password":"hunter2"}` {
		t.Fatalf("open = %q, %v", p, err)
	}
	for name, other := range map[string][]byte{
		"other id":      AAD("prod/db2", 3, "postgres"),
		"other version": AAD("prod/db", 4, "postgres"),
		"other type":    AAD("prod/db", 3, "mysql"),
	} {
		if _, err := k.Open(kek, wk, ct, other); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	// Swapping in another version's data key fails too.
	_, wk2, _, _ := k.Seal([]byte("x"), aad)
	if _, err := k.Open(kek, wk2, ct, aad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("swapped data key: err = %v", err)
	}
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open(kek, wk, bad, aad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("flipped bit: err = %v", err)
	}
	if _, err := k.Open(kek, wk, ct[:5], aad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: err = %v", err)
	}
}

func TestWrongRootKey(t *testing.T) {
	root, _ := NewRoot(bytes.Repeat([]byte{1}, KeySize))
	k := New(root)
	id, wrapped, _ := k.NewKEK()
	other, _ := NewRoot(bytes.Repeat([]byte{2}, KeySize))
	if err := New(other).Load(id, wrapped); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("load under wrong root: %v", err)
	}
	if root.ID() == other.ID() {
		t.Fatal("root IDs collide")
	}
	if err := New(root).Load(id, wrapped); err != nil {
		t.Fatalf("load under right root: %v", err)
	}
	if err := New(root).Load("kek-other", wrapped); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrapped KEK moved to another ID must not load: %v", err)
	}
}

func TestRewrap(t *testing.T) {
	k := newRing(t)
	aad := AAD("a", 1, "generic")
	old, wk, ct, _ := k.Seal([]byte("v"), aad)
	id2, _, _ := k.NewKEK()
	k.SetActive(id2)
	nk, nw, err := k.Rewrap(old, wk, aad)
	if err != nil || nk != id2 {
		t.Fatalf("rewrap: %v %v", nk, err)
	}
	k.Forget(old)
	if p, err := k.Open(nk, nw, ct, aad); err != nil || string(p) != "v" {
		t.Fatalf("open after rewrap: %q %v", p, err)
	}
	if _, err := k.Open(old, wk, ct, aad); !errors.Is(err, ErrUnknownKEK) {
		t.Fatalf("forgotten KEK: %v", err)
	}
}

func TestExportToOtherRoot(t *testing.T) {
	k := newRing(t)
	aad := AAD("a", 1, "generic")
	kek, wk, ct, _ := k.Seal([]byte("v"), aad)
	other, _ := NewRoot(bytes.Repeat([]byte{9}, KeySize))
	w, err := k.Export(kek, other)
	if err != nil {
		t.Fatal(err)
	}
	k2 := New(other)
	if err := k2.Load(kek, w); err != nil {
		t.Fatal(err)
	}
	if p, err := k2.Open(kek, wk, ct, aad); err != nil || string(p) != "v" {
		t.Fatalf("%q %v", p, err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := CreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	if err := CreateKeyFile(path); err == nil {
		t.Fatal("overwrote an existing key file")
	}
	r1, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := ReadKeyFile(path)
	if r1.ID() != r2.ID() {
		t.Fatal("same file, different keys")
	}
	os.Chmod(path, 0o644)
	if _, err := ReadKeyFile(path); !errors.Is(err, ErrKeyFileMode) {
		t.Fatalf("world-readable key file accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := ReadKeyFile(path); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("short key file: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file accepted")
	}
}

func TestPassphrase(t *testing.T) {
	p := NewArgon2Params()
	p.MemoryKiB = 8 * 1024 // keep the test fast
	a, err := FromPassphrase([]byte("correct horse"), p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := FromPassphrase([]byte("correct horse"), p)
	c, _ := FromPassphrase([]byte("wrong horse"), p)
	if a.ID() != b.ID() || a.ID() == c.ID() {
		t.Fatal("passphrase derivation not deterministic or not distinct")
	}
	if _, err := FromPassphrase(nil, p); err == nil {
		t.Fatal("empty passphrase accepted")
	}
	p.Salt = p.Salt[:4]
	if _, err := FromPassphrase([]byte("x"), p); err == nil {
		t.Fatal("short salt accepted")
	}
}

func BenchmarkSealOpen(b *testing.B) {
	root, _ := NewRoot(bytes.Repeat([]byte{7}, KeySize))
	k := New(root)
	id, _, _ := k.NewKEK()
	k.SetActive(id)
	aad := AAD("prod/db/orders", 12, "postgres")
	pt := []byte(`{"password":"0123456789abcdef0123456789abcdef"}`)
	for b.Loop() {
		kek, wk, ct, _ := k.Seal(pt, aad)
		if _, err := k.Open(kek, wk, ct, aad); err != nil {
			b.Fatal(err)
		}
	}
}
