package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// rotationOpenFlag reads credentials.rotation_open in the store at path.
func rotationOpenFlag(path string) storetest.Flag {
	return func(t *testing.T, id string) bool {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var open bool
		if err := db.QueryRowContext(t.Context(), `SELECT rotation_open FROM credentials WHERE id = ?`, id).Scan(&open); err != nil {
			t.Fatalf("read rotation_open of %s: %v", id, err)
		}
		return open
	}
}

func TestRotationOpenFlag(t *testing.T) {
	s := openTemp(t)
	storetest.RunRotationOpenFlag(t, s, rotationOpenFlag(s.Path()))
}

// TestUpgradeRotationOpen: migration 8 sets the open-rotation flag of a
// store written by a binary before it.
func TestUpgradeRotationOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	storetest.RunUpgrade(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}, func(t *testing.T) {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(t.Context(), `
			DROP TRIGGER rotations_open_insert;
			DROP TRIGGER rotations_open_update;
			DROP TRIGGER rotations_open_delete;
			DROP TRIGGER credentials_rotation_open;
			ALTER TABLE credentials DROP COLUMN rotation_open;
			DELETE FROM schema_version WHERE version = 8`); err != nil {
			t.Fatalf("downgrade: %v", err)
		}
	}, rotationOpenFlag(path))
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

// TestQueryPlans checks that the queries that select by key or by due time
// walk an index, so that their cost grows with the rows they return, not with
// the table, and that none sorts.
func TestQueryPlans(t *testing.T) {
	s := openTemp(t)
	want := map[string]string{
		"GetVersion":                 "SEARCH versions USING PRIMARY KEY (credential_id=? AND version=?)",
		"GetCredentialState":         "SEARCH c USING PRIMARY KEY (id=?)",
		"GetCredentialStateByNumber": "SEARCH c USING PRIMARY KEY (id=?)",
		"ListCredentialsRange":       "SEARCH credentials USING PRIMARY KEY (id>? AND id<?)",
		"DueCredentials":             "SEARCH c USING INDEX credentials_due (next_due_at<?)",
		"ListVersionKeys":            "SEARCH versions USING PRIMARY KEY ((credential_id,version)>(?,?))",
		"VersionNumbers":             "SEARCH versions USING PRIMARY KEY (credential_id=?)",
		"CountVersionsByKEK":         "USING COVERING INDEX versions_kek (kek_id=?)",
		"OpenRotation":               "SEARCH rotations USING INDEX rotations_one_open (credential_id=?)",
		"ListRotationsByCredential":  "SEARCH rotations USING INDEX rotations_credential (credential_id=?)",
		"DueRotations":               "SEARCH rotations USING INDEX rotations_due (due_at<?)",
		"ListHistory":                "SEARCH history USING INDEX history_credential (credential_id=?)",
		"ListAudit":                  "SEARCH audit USING INTEGER PRIMARY KEY (rowid>?)",
		"ListEvents":                 "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)",
		"GetTokenByHash":             "SEARCH tokens USING INDEX sqlite_autoindex_tokens_2 (hash=?)",
	}
	queries := s.db.PlannedQueries()
	if len(queries) != len(want) {
		t.Errorf("%d planned queries, %d expected plans", len(queries), len(want))
	}
	for name, q := range queries {
		args := make([]any, strings.Count(q, "?")) // all NULL: the plan does not depend on them
		rows, err := s.writer.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan strings.Builder
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(detail + "\n")
		}
		rows.Close()
		p := plan.String()
		if !strings.Contains(p, want[name]) || strings.Contains(p, "TEMP B-TREE") || strings.Contains(p, "SCAN ") {
			t.Errorf("%s: plan\n%s\nwant %q and no scan or sort", name, p, want[name])
		}
	}
}

// TestPragmas checks the settings durability and concurrency rely on.
func TestPragmas(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	reader, err := sql.Open("sqlite", s.readDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for _, tc := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.writer, "journal_mode", "wal"},
		{s.writer, "synchronous", "2"}, // FULL
		{s.writer, "foreign_keys", "1"},
		{s.writer, "busy_timeout", "10000"},
		{s.writer, "query_only", "0"},
		{s.writer, "temp_store", "2"}, // MEMORY: savepoint journals never spill to a file
		{reader, "journal_mode", "wal"},
		{reader, "busy_timeout", "10000"},
		{reader, "query_only", "1"},
	} {
		var got string
		if err := tc.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
		}
	}
}

// TestCrashDurability commits in a child process, kills it with SIGKILL
// before it closes the store, and checks that a new Open sees the commit.
func TestCrashDurability(t *testing.T) {
	if path := os.Getenv("NEBULA_SQLITE_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process: not under testing.Short")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashDurability$")
	cmd.Env = append(os.Environ(), "NEBULA_SQLITE_CRASH_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "committed\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open after a crash: %v", err)
	}
	defer s.Close()
	if err := s.View(t.Context(), func(tx store.Tx) error {
		vs, err := tx.ListVersions(t.Context(), "crash")
		if err == nil && len(vs) != 100 {
			err = fmt.Errorf("%d versions after the crash, want 100", len(vs))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// crashChild commits 100 versions, one Update each, reports it and waits to be killed.
func crashChild(path string) {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := 1; i <= 100; i++ {
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.InsertVersion(ctx, &store.Version{CredentialID: "crash", Version: i, KEKID: "k", CreatedAt: time.Now()})
		}); err != nil {
			fmt.Println("update:", err)
			os.Exit(1)
		}
	}
	fmt.Println("committed")
	time.Sleep(time.Minute)
	os.Exit(1)
}

// UpdateRelaxed lowers synchronous; the writer keeps it so between relaxed
// updates, and a durable Update restores FULL before it begins (so its
// commit, and every one after it until the next relaxed update, waits for the
// disk).
func TestUpdateRelaxedRestoresSynchronous(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	level := func() int {
		t.Helper()
		var level int
		if err := s.writer.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&level); err != nil {
			t.Fatal(err)
		}
		return level
	}
	for range 2 {
		if err := s.UpdateRelaxed(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v")) }); err != nil {
			t.Fatal(err)
		}
		if l := level(); l != 1 { // NORMAL
			t.Fatalf("synchronous = %d after a relaxed update, want 1 (NORMAL)", l)
		}
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("w")) }); err != nil {
			t.Fatal(err)
		}
		if l := level(); l != 2 { // FULL
			t.Fatalf("synchronous = %d after a durable update, want 2 (FULL)", l)
		}
	}
}
