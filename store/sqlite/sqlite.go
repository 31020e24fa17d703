// Package sqlite is the embedded default store.Store: one SQLite file.
//
// Reach for Open; it creates the file (mode 0600) and its schema when missing
// and refuses a file that other users may read. Exists tells whether a store
// file is already there.
//
// The driver is pure Go (modernc.org/sqlite). The database runs in WAL mode
// with synchronous=FULL, so a committed Update survives a crash or power
// loss. Update transactions run one at a time on a single writer connection
// (BEGIN IMMEDIATE); View transactions run concurrently on a pool of
// query-only connections and see a consistent snapshot. Views bypass
// database/sql: each connection keeps its statements prepared, so a View
// that reads one row costs about as much as a plain database/sql query. Times are stored as
// UTC Unix microseconds.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/internal/sqlstore"
)

var (
	_ store.Store          = (*Store)(nil)
	_ store.RelaxedUpdater = (*Store)(nil)
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrInsecureFile is returned by Open for a store file that users other than
// its owner may access.
var ErrInsecureFile = errors.New("store file is accessible by other users")

// busyTimeout is how long a connection waits for a lock held by another
// process before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

var dialect = &sqlstore.Dialect{
	Name: "sqlite",
	// In WAL mode synchronous=NORMAL keeps commits atomic and ordered and
	// survives a killed process; only power loss may drop the last ones.
	RelaxConn:        "PRAGMA synchronous=NORMAL",
	RelaxConnRestore: "PRAGMA synchronous=FULL",
	TimeArg:          func(t time.Time) any { return t.UnixMicro() },
	IsUniqueViolation: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) &&
			(e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	},
}

// Store is a store.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	path    string
	readDSN string
	writer  *sql.DB
	db      sqlstore.DB
}

// Exists reports whether a file exists at path (a store, or something Open
// will refuse).
func Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Open opens the store at path, creating the file with mode 0600 and the
// schema when missing, and migrating an older schema. It fails with
// ErrInsecureFile when the file's mode grants any access to group or others,
// and refuses a schema written by a newer version of nebula-credential.
func Open(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := createOrCheck(abs); err != nil {
		return nil, err
	}
	s := &Store{path: abs}
	if err := s.open(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// createOrCheck creates the file with mode 0600, or checks the mode of an
// existing one.
func createOrCheck(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		f.Close()
		// The umask may have taken bits away; 0600 is what we mean.
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("sqlite: create %s: %w", path, err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("sqlite: create %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("sqlite: open %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("sqlite: open %s: mode %04o: %w; run: chmod 600 %s", path, perm, ErrInsecureFile, path)
	}
	return nil
}

func (s *Store) open(ctx context.Context) error {
	uri := "file:" + (&url.URL{Path: s.path}).EscapedPath() + "?"
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)", busyTimeout.Milliseconds())

	var err error
	// One writer connection: Update transactions run one at a time, and
	// BEGIN IMMEDIATE takes the write lock up front so that they never fail
	// half-way with SQLITE_BUSY. temp_store=MEMORY keeps the sub-journal of
	// each group-commit member's SAVEPOINT in memory: by default it spills to
	// a temporary file past 64 KiB and then costs two write(2) per page.
	if s.writer, err = sql.Open("sqlite", uri+common+"&_pragma=journal_mode(WAL)&_pragma=temp_store(MEMORY)&_txlock=immediate"); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)
	// The first connection switches the file to WAL, before any reader opens.
	if err := s.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if err := sqlstore.Migrate(ctx, s.writer, dialect, ms, ""); err != nil {
		return err
	}

	// Views run on their own query-only connections, outside database/sql.
	s.readDSN = uri + common + "&_pragma=query_only(1)"
	readers, err := sqlite.NewConnector(s.readDSN)
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}

	// SQLite creates -wal and -shm with the database file's mode; make sure.
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(s.path+suffix, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite: open %s: %w", s.path, err)
		}
	}

	s.db = sqlstore.DB{
		Dialect:       dialect,
		Writer:        s.writer,
		ReadConnector: readers,
		MaxReaders:    max(4, runtime.GOMAXPROCS(0)),
		Prepare:       true,
		MaxAttempts:   1, // one writer: nothing to retry
		GroupCommit:   true,
		// The one writer connection of this process appends most entries;
		// an append by another process is caught by the check in the insert.
		CacheAuditHead: true,
	}
	return s.db.Init(ctx)
}

// Path returns the absolute path of the store file.
func (s *Store) Path() string { return s.path }

// View runs fn in a read-only transaction that sees one consistent snapshot.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.db.View(ctx, fn)
}

// ViewOne is View for fn that reads with one statement: the statement runs
// in autocommit mode, which is its own consistent snapshot, without the
// BEGIN and ROLLBACK of a View. A second statement in fn fails. The
// statement is meant to be a lookup by key: an end of ctx stops it before it
// starts, not while it runs.
func (s *Store) ViewOne(ctx context.Context, fn func(store.Tx) error) error {
	return s.db.ViewOne(ctx, fn)
}

// Update runs fn in a write transaction and commits it durably if fn returns
// nil. Updates are serialized; fn runs exactly once.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.db.Update(ctx, fn)
}

// UpdateRelaxed implements store.RelaxedUpdater.
func (s *Store) UpdateRelaxed(ctx context.Context, fn func(store.Tx) error) error {
	return s.db.UpdateRelaxed(ctx, fn)
}

// GroupStats reports how many commits the store made for Updates and how
// many Updates they held: concurrent Updates share one commit (group commit).
func (s *Store) GroupStats() (commits, updates int64) { return s.db.GroupStats() }

// Ping checks that the database can be read.
func (s *Store) Ping(ctx context.Context) error {
	return s.View(ctx, func(store.Tx) error { return nil })
}

// Close closes the database. Transactions in progress fail.
func (s *Store) Close() error {
	s.db.Close()
	if s.writer != nil {
		if err := s.writer.Close(); err != nil {
			return fmt.Errorf("sqlite: close: %w", err)
		}
	}
	return nil
}
