package credential_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
)

// FuzzRestore feeds arbitrary and mutated backup files to Restore: it must
// refuse them with an error and leave the store as it was, never panic.
func FuzzRestore(f *testing.F) {
	dir := f.TempDir()
	m := openAt(f, dir, true, nil)
	ctx := context.Background()
	m.Put(ctx, "a", gen("original"))
	var buf bytes.Buffer
	if _, err := m.Backup(ctx, &buf, nil); err != nil {
		f.Fatal(err)
	}
	m.Put(ctx, "a", gen("changed"))
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:len(buf.Bytes())/2])
	f.Add([]byte("nebula-credential backup v1\n{}\n"))
	f.Add([]byte("nebula-credential backup v1\n{\"key_mode\":\"passphrase\",\"argon2\":{\"salt\":\"AAAA\",\"time\":1}}\n"))
	good := buf.Bytes()
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := m.Restore(ctx, bytes.NewReader(data), credential.RestoreOptions{})
		if bytes.Equal(data, good) {
			if err != nil {
				t.Fatalf("the real backup was refused: %v", err)
			}
			m.Put(ctx, "a", gen("changed"))
			return
		}
		if err == nil {
			t.Fatal("a mutated backup was accepted")
		}
		if !errors.Is(err, credential.ErrBadBackup) && !errors.Is(err, credential.ErrWrongKey) && !errors.Is(err, credential.ErrInvalid) {
			t.Fatalf("unclear error: %v", err)
		}
		c, gerr := m.Get(ctx, "a", credential.GetOptions{})
		if gerr != nil || c.Secret["value"].Reveal() != "changed" {
			t.Fatalf("a refused restore changed the store: %v", gerr)
		}
	})
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "A", "a//b", "prod/db.orders_1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if credential.ValidateID(id) != nil {
			return
		}
		if len(id) > credential.MaxIDLength || id[0] == '/' || id[len(id)-1] == '/' || bytes.Contains([]byte(id), []byte("//")) {
			t.Fatalf("accepted %q", id)
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '/') {
				t.Fatalf("accepted %q", id)
			}
		}
	})
}
