// Package sqlstore is the SQL shared by store/sqlite and store/postgres: one
// implementation of store.Tx, the View/Update transaction loop and the
// migration runner. A backend supplies a Dialect (placeholders, time
// encoding, error classification), its schema migrations and its connection
// setup.
//
// Statements run on database/sql transactions, except that a backend may
// serve View from driver connections of its own (SQLite does): see
// DB.ReadConnector.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Dialect describes what differs between the SQL backends. Queries are
// written once, with ? placeholders and portable SQL (ON CONFLICT, RETURNING,
// row values), and adapted by the dialect.
type Dialect struct {
	// Name prefixes every error ("sqlite", "postgres").
	Name string
	// Numbered rewrites ? placeholders as $1, $2, ... (PostgreSQL).
	Numbered bool
	// TimeArg encodes a time as a query argument. Times are stored in UTC
	// with microsecond precision.
	TimeArg func(time.Time) any
	// IsUniqueViolation reports whether err is a unique-constraint violation.
	IsUniqueViolation func(error) bool
	// IsRetryable reports whether err aborted the whole transaction for a
	// transient reason (serialization failure, deadlock), after which Update
	// runs fn again. Nil means never.
	IsRetryable func(error) bool
	// RelaxConn, for UpdateRelaxed, runs on the writer connection before the
	// transaction and returns the statement that restores it after (SQLite:
	// PRAGMA synchronous). RelaxTx runs first inside the transaction
	// (PostgreSQL: SET LOCAL synchronous_commit). Both empty: UpdateRelaxed is
	// Update.
	RelaxConn, RelaxConnRestore, RelaxTx string
	// EventLock and AppendEvent, when both set, replace numbering events
	// MAX(seq)+1, which makes every two concurrent writers of events conflict
	// on the tail of the table. EventLock (PostgreSQL: a transaction-level
	// advisory lock) runs before each event insert and is held until the
	// transaction ends, so writers of events commit in the order of the seq
	// AppendEvent takes from a sequence, and a watcher paging by seq still
	// misses nothing. AppendEvent has the arguments of the portable insert
	// (at, kind, credential ID, version, detail) and returns seq. Both are
	// raw SQL in the dialect's placeholders.
	EventLock, AppendEvent string
	// QueueAudit, when set, makes Tx.QueueAudit insert (at, payload) into a
	// queue of audit entries that the backend chains after commit, in one
	// order, from a single appender: writers of audit entries then never
	// read the chain's head, the one row every one of them would conflict
	// on. Raw SQL in the dialect's placeholders.
	QueueAudit string
	// SerialLock and SerialUnlock, when set, are a session-level lock taken
	// on the writer connection before the transaction begins, and its
	// release, for every attempt of an Update after the first SerialAfter
	// ones failed: transactions that lost a serialization conflict then run
	// one at a time, each with a snapshot taken after the previous one
	// committed, so they stop losing to each other and the retries end.
	SerialLock, SerialUnlock string
	SerialAfter              int
	// SharedLock, when set, is the first statement of every other attempt: a
	// transaction-level lock in the mode shared with each other and excluded
	// by SerialLock. A writer holding SerialLock then runs alone among the
	// store's writers, with a snapshot taken after every other one ended, so
	// it cannot lose a serialization conflict again and the retries end.
	SharedLock string
}

// DB runs View and Update transactions for a backend.
type DB struct {
	Dialect *Dialect
	// Writer runs Update; Reader runs View (it may be the same pool).
	Writer, Reader *sql.DB
	// ReadConnector, if set, replaces Reader: View then runs on at most
	// MaxReaders driver connections of its own, with each statement prepared
	// once per connection, bypassing database/sql. Its connections must be
	// read-only; View begins a deferred transaction with BEGIN and ends it
	// with ROLLBACK (SQLite).
	ReadConnector driver.Connector
	MaxReaders    int
	// ReadOptions and WriteOptions are passed to BeginTx.
	ReadOptions, WriteOptions *sql.TxOptions
	// Prepare caches prepared statements on both pools and binds them to each
	// transaction. Worth it where preparing is not cached by the driver (SQLite).
	Prepare bool
	// MaxAttempts bounds how often Update runs fn when the transaction fails
	// with a retryable error. Zero means 10.
	MaxAttempts int
	// GroupCommit lets concurrent Updates share one transaction and one
	// commit (see group.go). For a single-writer backend (SQLite): retries
	// (MaxAttempts) do not apply.
	GroupCommit bool
	// CacheAuditHead, with GroupCommit, keeps the audit chain's last entry
	// in memory from one batch to the next (Tx.CachedAudit), so that an
	// append need not read it first (Tx.AppendAuditsAfter checks it in the
	// insert). It saves a statement per batch where this process is the
	// usual writer (SQLite); another process writing the log only costs a
	// read.
	CacheAuditHead bool

	group   group
	queries [numQueries]string
	wstmts  []*sql.Stmt
	rstmts  []*sql.Stmt
	readers *readPool
}

// Init prepares the queries. Call it once, after the schema is migrated.
func (db *DB) Init(ctx context.Context) error {
	for i, q := range queryText {
		if db.Dialect.Numbered {
			q = numbered(q)
		}
		db.queries[i] = q
	}
	if db.ReadConnector != nil {
		db.readers = newReadPool(db.ReadConnector, &db.queries, max(1, db.MaxReaders))
	}
	if !db.Prepare {
		return nil
	}
	var err error
	if db.wstmts, err = prepareAll(ctx, db.Writer, db.queries[:]); err != nil {
		return fmt.Errorf("%s: prepare: %w", db.Dialect.Name, err)
	}
	if db.Reader == nil {
		// Views run on ReadConnector.
	} else if db.Reader == db.Writer {
		db.rstmts = db.wstmts
	} else if db.rstmts, err = prepareAll(ctx, db.Reader, db.queries[:]); err != nil {
		return fmt.Errorf("%s: prepare: %w", db.Dialect.Name, err)
	}
	return nil
}

func prepareAll(ctx context.Context, pool *sql.DB, queries []string) ([]*sql.Stmt, error) {
	stmts := make([]*sql.Stmt, len(queries))
	for i, q := range queries {
		s, err := pool.PrepareContext(ctx, q)
		if err != nil {
			closeAll(stmts)
			return nil, fmt.Errorf("%q: %w", q, err)
		}
		stmts[i] = s
	}
	return stmts, nil
}

func closeAll(stmts []*sql.Stmt) {
	for _, s := range stmts {
		if s != nil {
			s.Close()
		}
	}
}

// Close closes the prepared statements and the ReadConnector's connections
// (not the database/sql pools).
func (db *DB) Close() {
	if db.readers != nil {
		db.readers.close()
	}
	// The lists stay: a View or Update still running beside Close reads them,
	// and a closed statement answers "sql: statement is closed" (closing one
	// twice is harmless).
	closeAll(db.wstmts)
	if db.Reader != db.Writer {
		closeAll(db.rstmts)
	}
}

// View runs fn in a read-only transaction on the Reader pool (or the
// ReadConnector's connections).
func (db *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	if db.readers != nil {
		return db.viewDriver(ctx, fn)
	}
	sqlTx, err := db.Reader.BeginTx(ctx, db.ReadOptions)
	if err != nil {
		return fmt.Errorf("%s: begin view: %w", db.Dialect.Name, err)
	}
	// A read-only transaction has nothing to commit: rolling back ends it.
	defer sqlTx.Rollback()
	return fn(&Tx{db: db, r: &sqlRunner{tx: sqlTx, stmts: db.rstmts, queries: &db.queries}, readOnly: true})
}

func (db *DB) viewDriver(ctx context.Context, fn func(store.Tx) error) (err error) {
	c, err := db.readers.get(ctx)
	if err != nil {
		return fmt.Errorf("%s: begin view: %w", db.Dialect.Name, err)
	}
	if err := c.run(ctx, &c.begin, "BEGIN"); err != nil {
		db.readers.put(c, true)
		return fmt.Errorf("%s: begin view: %w", db.Dialect.Name, err)
	}
	ended := false
	defer func() {
		// Also when fn panics: end the transaction, or drop the connection.
		// ROLLBACK must run even if ctx is done.
		rerr := c.run(context.Background(), &c.rollback, "ROLLBACK")
		db.readers.put(c, rerr != nil)
		if rerr != nil && err == nil && ended {
			err = fmt.Errorf("%s: end view: %w", db.Dialect.Name, rerr)
		}
	}()
	err = fn(&Tx{db: db, r: driverRunner{c}, readOnly: true})
	ended = true
	return err
}

// ViewOne runs fn, which must read with a single statement, on a reader
// connection without BEGIN and ROLLBACK around it: in autocommit mode the
// statement is its own read transaction, so it still sees one consistent
// snapshot, at a third of the statements of View (BEGIN, the query,
// ROLLBACK). A second statement in fn fails with an error instead of
// reading from another snapshot. The statement is meant to be a lookup by
// key: ctx is checked before it starts, and it is not interrupted when ctx
// ends while it runs. Without a ReadConnector it is View.
func (db *DB) ViewOne(ctx context.Context, fn func(store.Tx) error) (err error) {
	if db.readers == nil {
		return db.View(ctx, fn)
	}
	c, err := db.readers.get(ctx)
	if err != nil {
		return fmt.Errorf("%s: begin view: %w", db.Dialect.Name, err)
	}
	v := &oneView{r: oneRunner{c: c}}
	v.tx = Tx{db: db, r: &v.r, readOnly: true}
	defer func() {
		// The statement's rows end its implicit transaction; close them
		// even when fn did not (or panicked), or drop the connection.
		broken := false
		if v.r.ran {
			broken = v.r.rows.Close() != nil
		}
		db.readers.put(c, broken)
	}()
	return fn(&v.tx)
}

// errOneStatement is returned by a second statement in ViewOne.
var errOneStatement = errors.New("a second statement in a single-statement view")

// oneView is the Tx of a ViewOne with its runner and the rows of its
// statement, in one allocation.
type oneView struct {
	tx Tx
	r  oneRunner
}

// oneRunner runs the one statement of a ViewOne on a readConn, in
// autocommit mode.
type oneRunner struct {
	c    *readConn
	ran  bool // rows holds the statement's rows
	rows driverRows
}

func (r *oneRunner) exec(ctx context.Context, q query, args []any) (int64, error) {
	return 0, errReadOnly // not reached: write methods check first
}

func (r *oneRunner) query(ctx context.Context, q query, args []any) (rowSet, error) {
	if r.ran {
		return nil, errOneStatement
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		// The statement is a lookup by key, shorter than what watching ctx
		// costs the SQLite driver for every statement run with a context
		// that can end (a goroutine, and a progress handler set and unset).
		// It runs to its end; a reader in WAL mode waits for no writer.
		ctx = context.WithoutCancel(ctx)
	}
	if err := (driverRunner{r.c}).queryInto(ctx, q, args, &r.rows); err != nil {
		return nil, err
	}
	r.ran = true
	return &r.rows, nil
}

// errRetry is returned by update when fn hid a retryable error and returned nil.
var errRetry = errors.New("transaction must be retried")

// Update runs fn in a read-write transaction on the Writer pool and commits it.
// A transaction that fails with a retryable error is rolled back and fn runs
// again, at most MaxAttempts times in all, with a short randomized backoff.
func (db *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	return db.updateLoop(ctx, fn, false)
}

// UpdateRelaxed is Update without waiting for the disk at commit; see
// store.RelaxedUpdater.
func (db *DB) UpdateRelaxed(ctx context.Context, fn func(store.Tx) error) error {
	return db.updateLoop(ctx, fn, true)
}

func (db *DB) updateLoop(ctx context.Context, fn func(store.Tx) error, relaxed bool) error {
	if db.GroupCommit {
		return db.groupUpdate(ctx, fn, relaxed)
	}
	attempts := db.MaxAttempts
	if attempts <= 0 {
		attempts = 10
	}
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		serial := db.Dialect.SerialLock != "" && attempt > db.Dialect.SerialAfter
		retry, err := db.update(ctx, fn, relaxed, serial)
		if err == nil || !retry {
			return err
		}
		if attempt >= attempts {
			return fmt.Errorf("%s: update: gave up after %d attempts: %w (%w)", db.Dialect.Name, attempt, store.ErrBusy, err)
		}
		sleep := backoff/2 + rand.N(backoff)
		if backoff < 50*time.Millisecond {
			backoff *= 2
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: update: %w (after %v)", db.Dialect.Name, ctx.Err(), err)
		case <-time.After(sleep):
		}
	}
}

// update runs one attempt of Update and reports whether a failure is worth retrying.
func (db *DB) update(ctx context.Context, fn func(store.Tx) error, relaxed, serial bool) (retry bool, err error) {
	var begin interface {
		BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
	} = db.Writer
	relaxConn := relaxed && db.Dialect.RelaxConn != ""
	if relaxConn || serial {
		// Hold the writer connection so the setting or the lock covers this
		// transaction only.
		conn, err := db.Writer.Conn(ctx)
		if err != nil {
			return db.retryable(err), fmt.Errorf("%s: begin update: %w", db.Dialect.Name, err)
		}
		defer conn.Close()
		if serial {
			if _, err := conn.ExecContext(ctx, db.Dialect.SerialLock); err != nil {
				return false, fmt.Errorf("%s: begin update: wait for the writers' lock: %w", db.Dialect.Name, err)
			}
			defer func() {
				if _, err := conn.ExecContext(context.WithoutCancel(ctx), db.Dialect.SerialUnlock); err != nil {
					// Closing the connection releases the lock.
					conn.Raw(func(any) error { return driver.ErrBadConn })
				}
			}()
		}
		if relaxConn {
			if _, err := conn.ExecContext(ctx, db.Dialect.RelaxConn); err != nil {
				return false, fmt.Errorf("%s: relax commit: %w", db.Dialect.Name, err)
			}
			defer conn.ExecContext(context.WithoutCancel(ctx), db.Dialect.RelaxConnRestore)
		}
		begin = conn
	}
	sqlTx, err := begin.BeginTx(ctx, db.WriteOptions)
	if err != nil {
		return db.retryable(err), fmt.Errorf("%s: begin update: %w", db.Dialect.Name, err)
	}
	if relaxed && db.Dialect.RelaxTx != "" {
		if _, err := sqlTx.ExecContext(ctx, db.Dialect.RelaxTx); err != nil {
			sqlTx.Rollback()
			return db.retryable(err), fmt.Errorf("%s: relax commit: %w", db.Dialect.Name, err)
		}
	}
	done := false
	defer func() {
		if !done { // fn failed or panicked: nothing it wrote is kept
			sqlTx.Rollback()
		}
	}()
	if !serial && db.Dialect.SharedLock != "" {
		if _, err := sqlTx.ExecContext(ctx, db.Dialect.SharedLock); err != nil {
			sqlTx.Rollback()
			return db.retryable(err), fmt.Errorf("%s: begin update: wait for the writers' lock: %w", db.Dialect.Name, err)
		}
	}
	t := &Tx{db: db, r: &sqlRunner{tx: sqlTx, stmts: db.wstmts, queries: &db.queries}}
	if err := fn(t); err != nil {
		return t.retry || db.retryable(err), err
	}
	if t.retry {
		return true, fmt.Errorf("%s: update: %w", db.Dialect.Name, errRetry)
	}
	done = true
	if err := sqlTx.Commit(); err != nil {
		return db.retryable(err), fmt.Errorf("%s: commit: %w", db.Dialect.Name, err)
	}
	return false, nil
}

func (db *DB) retryable(err error) bool {
	return db.Dialect.IsRetryable != nil && db.Dialect.IsRetryable(err)
}

// numbered rewrites ? placeholders as $1, $2, ... The queries in this package
// contain no ? inside literals or identifiers.
func numbered(q string) string {
	b := make([]byte, 0, len(q)+16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] != '?' {
			b = append(b, q[i])
			continue
		}
		n++
		b = fmt.Appendf(b, "$%d", n)
	}
	return string(b)
}
