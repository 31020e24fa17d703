// Package postgres is the store.Store for shared deployments: several
// nebula-credential servers use one PostgreSQL database.
//
// Reach for Open with a connection string (URL or key=value form, as pgx
// parses it). Tables live in the first schema of the connection's
// search_path, so one database can hold several isolated stores:
//
//	postgres://nebula@db.internal/creds?search_path=team_a
//
// The schema must exist; Open creates and migrates the tables in it.
//
// Update runs SERIALIZABLE transactions and runs fn again when PostgreSQL
// reports a serialization failure (40001) or a deadlock (40P01), a bounded
// number of times. Every attempt holds an advisory lock of the schema in
// shared mode; after two lost conflicts an attempt waits for it in exclusive
// mode instead (across every server on the schema) and so runs alone, with a
// fresh snapshot, and cannot lose again: the retries of contending writers
// end. When they run out, Update fails with store.ErrBusy. Shared
// counters have no hot row: events take their numbers from a sequence, and
// audit entries are chained after commit by one appender (see audit.go). View runs REPEATABLE READ, READ ONLY transactions: one
// consistent snapshot, never blocked by writers. Leases on journaled
// rotations are claimed with conditional updates, so two servers never both
// hold one.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/internal/sqlstore"
)

var (
	_ store.Store          = (*Store)(nil)
	_ store.RelaxedUpdater = (*Store)(nil)
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// DefaultMaxConns is how many connections a Store opens at most (plus one
// that listens for notifications). The connection string's pool_max_conns
// parameter (the name pgxpool uses) changes it, e.g.
// postgres://nebula@db/creds?pool_max_conns=8: size it so that every
// instance's share fits the server's max_connections.
const DefaultMaxConns = 16

// MaxAttempts is how often Update runs fn before it gives up on
// serialization failures.
const MaxAttempts = 10

// migrateLock serializes servers migrating the same schema at once.
const migrateLock = `SELECT pg_advisory_xact_lock(hashtext('nebula-credential schema ' || current_schema()))`

var dialect = &sqlstore.Dialect{
	Name:        "postgres",
	EventLock:   `SELECT pg_advisory_xact_lock(hashtext('nebula-credential events ' || current_schema()))`,
	AppendEvent: `INSERT INTO events (seq, at, kind, credential_id, version, detail) VALUES (nextval('events_seq'), $1, $2, $3, $4, $5) RETURNING seq`,
	QueueAudit:  `INSERT INTO audit_pending (at, payload) VALUES ($1, $2)`,
	// After two lost conflicts, an Update waits its turn among the writers
	// that lost (across every server on the schema) before it begins.
	SerialLock:   `SELECT pg_advisory_lock(hashtext('nebula-credential writers ' || current_schema()))`,
	SerialUnlock: `SELECT pg_advisory_unlock(hashtext('nebula-credential writers ' || current_schema()))`,
	SharedLock:   `SELECT pg_advisory_xact_lock_shared(hashtext('nebula-credential writers ' || current_schema()))`,
	SerialAfter:  2,
	RelaxTx:      "SET LOCAL synchronous_commit TO OFF",
	Numbered:     true,
	TimeArg:      func(t time.Time) any { return t.UTC().Truncate(time.Microsecond) },
	IsUniqueViolation: func(err error) bool {
		return pgCode(err) == "23505"
	},
	IsRetryable: func(err error) bool {
		switch pgCode(err) {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
		return false
	},
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Store is a store.Store in a PostgreSQL schema. It is safe for concurrent use.
type Store struct {
	pool *sql.DB
	db   sqlstore.DB

	seal     chan struct{} // wakes the audit appender
	stop     context.CancelFunc
	appender sync.WaitGroup

	cfg    *pgx.ConnConfig // for the listening connection
	schema string
	listen listener
}

// Open connects to the database named by dsn, and creates or migrates the
// tables in the first schema of its search_path. It refuses a schema written
// by a newer version of nebula-credential.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err) // pgx redacts the password
	}
	maxConns := DefaultMaxConns
	if v, ok := cfg.RuntimeParams["pool_max_conns"]; ok {
		// Ours, not PostgreSQL's: taken out before connecting.
		delete(cfg.RuntimeParams, "pool_max_conns")
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			return nil, fmt.Errorf("postgres: pool_max_conns=%q: want a whole number of at least 2 (default %d)", v, DefaultMaxConns)
		}
		maxConns = n
	}
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(maxConns)
	// Keep as many idle as may be open: with fewer, every burst above the
	// idle count closes connections and the next opens new ones (a backend
	// fork and a login each). bench/ha measured 4 idle against 16: revealed
	// GETs at 32 clients 352 against 1,095/s, and a watch stream on the
	// instance that committed the change 232 against 12 ms p99.
	pool.SetMaxIdleConns(maxConns)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{pool: pool, seal: make(chan struct{}, 1), cfg: cfg}
	if err := s.open(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.appender.Go(func() { s.appendLoop(actx) })
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	var schema sql.NullString
	if err := s.pool.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	if !schema.Valid {
		return errors.New("postgres: no schema of the search_path exists: create it first (CREATE SCHEMA ...)")
	}
	s.schema = schema.String
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := sqlstore.Migrate(ctx, s.pool, dialect, ms, migrateLock); err != nil {
		return err
	}
	s.db = sqlstore.DB{
		Dialect:      dialect,
		Writer:       s.pool,
		Reader:       s.pool,
		ReadOptions:  &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		WriteOptions: &sql.TxOptions{Isolation: sql.LevelSerializable},
		// pgx prepares and caches statements on each connection itself.
		Prepare:     false,
		MaxAttempts: MaxAttempts,
	}
	return s.db.Init(ctx)
}

// View runs fn in a read-only transaction that sees one consistent snapshot.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.db.View(ctx, fn)
}

// Update runs fn in a SERIALIZABLE transaction and commits it if fn returns
// nil. fn runs again (up to MaxAttempts times in all) when the transaction
// loses a serialization conflict with a concurrent one, so it must have no
// side effects outside the Tx.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, fn, s.db.Update)
}

// UpdateRelaxed implements store.RelaxedUpdater.
func (s *Store) UpdateRelaxed(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, fn, s.db.UpdateRelaxed)
}

func (s *Store) update(ctx context.Context, fn func(store.Tx) error, run func(context.Context, func(store.Tx) error) error) error {
	queued := false
	err := run(ctx, func(tx store.Tx) error {
		err := fn(tx)
		queued = tx.(*sqlstore.Tx).QueuedAudit()
		return err
	})
	if err == nil && queued {
		select {
		case s.seal <- struct{}{}:
		default: // the appender is already due to run
		}
	}
	return err
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.PingContext(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the connections. Transactions in progress fail.
func (s *Store) Close() error {
	s.stop()
	s.appender.Wait()
	s.listen.stop()
	s.db.Close()
	if err := s.pool.Close(); err != nil {
		return fmt.Errorf("postgres: close: %w", err)
	}
	return nil
}
