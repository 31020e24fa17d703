package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/storetest"
)

func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	if Exists(path) {
		t.Fatal("Exists before Open")
	}
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.SetMeta(t.Context(), "k", []byte("v"))
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if !Exists(path) {
		t.Fatal("Exists after Open = false")
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Base(p), perm)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err = Open(t.Context(), path)
		if !errors.Is(err, ErrInsecureFile) {
			t.Fatalf("Open of a %04o file: %v, want ErrInsecureFile", mode, err)
		}
		t.Logf("%04o: %v", mode, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open after chmod 600: %v", err)
	}
	s.Close()
}

func TestCreateUnderUmask(t *testing.T) {
	// Open creates a file that is exactly 0600 whatever the directory holds.
	path := filepath.Join(t.TempDir(), "sub dir?#%", "store.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open with special characters in the path: %v", err)
	}
	s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the store is not where asked: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
}

// TestReopen checks that a committed Update survives closing and reopening,
// and that reopening (migrations included) is idempotent.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	now := time.Date(2030, 1, 1, 0, 0, 0, 1000, time.UTC)
	for i := range 3 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		if err := s.View(ctx, func(tx store.Tx) error {
			n, err := tx.MaxVersion(ctx, "c")
			if err != nil {
				return err
			}
			if n != i {
				t.Errorf("open #%d: MaxVersion %d, want %d", i, n, i)
			}
			return nil
		}); err != nil {
			t.Fatalf("View: %v", err)
		}
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.InsertVersion(ctx, &store.Version{CredentialID: "c", Version: i + 1, KEKID: "k", CreatedAt: now})
		}); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (999)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path)
	if err == nil {
		t.Fatal("Open of a newer schema succeeded")
	}
	t.Log(err)
}

// TestQueryPlans checks that the scheduler's queries walk an index, so that
// their cost grows with the rows due rather than with the table.
func TestQueryPlans(t *testing.T) {
	s := openTemp(t)
	for name, q := range map[string]string{
		"DueCredentials": `SELECT id FROM credentials c WHERE c.deleted_at IS NULL AND c.next_due_at <= 1
			AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.credential_id = c.id AND r.open)
			ORDER BY c.next_due_at LIMIT 10`,
		"DueRotations": `SELECT id FROM rotations WHERE open AND due_at <= 1 AND lease_until <= 1 ORDER BY due_at LIMIT 10`,
		"OpenRotation": `SELECT id FROM rotations WHERE credential_id = 'x' AND open`,
	} {
		rows, err := s.reader.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q)
		if err != nil {
			t.Fatal(err)
		}
		var plan string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan += detail + "\n"
		}
		rows.Close()
		t.Logf("%s:\n%s", name, plan)
		want := map[string]string{
			"DueCredentials": "SEARCH c USING INDEX credentials_due (next_due_at<?)",
			"DueRotations":   "SEARCH rotations USING INDEX rotations_due (due_at<?)",
			"OpenRotation":   "SEARCH rotations USING INDEX rotations_one_open (credential_id=?)",
		}[name]
		if !strings.Contains(plan, want) || strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "SCAN") {
			t.Errorf("%s: plan\n%s\nwant %q and no scan or sort", name, plan, want)
		}
	}
}
