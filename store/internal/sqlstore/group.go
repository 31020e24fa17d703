package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nebula-credential/nebula-credential/store"
)

// Group commit (DB.GroupCommit): concurrent Update calls share one write
// transaction and so one durable commit (one fsync), instead of one each.
//
// Each caller runs its own fn, one at a time, inside a SAVEPOINT of the
// batch's transaction: a fn that fails (or panics) has its writes rolled back
// to its savepoint and gets its error at once, without touching the others.
// A caller whose fn succeeded hands the transaction on when more callers are
// queued for it, and waits; the last caller of a batch (nobody queued, or the
// batch is full) commits, and every member of the batch gets the commit's
// outcome. Update therefore still returns only after its writes are durable,
// fn still runs exactly once, and the members of a batch are serialised in
// the order they ran: each sees the writes of those before it (audit entries
// chain on one another as they would in separate transactions).
//
// A relaxed member (UpdateRelaxed) may join a durable batch; a durable member
// never joins a relaxed one, since the commit mode is set before BEGIN.

// maxGroup bounds the members of one batch, and so the wait of its first.
const maxGroup = 64

type group struct {
	mu      sync.Mutex   // held by the member running its fn, or committing
	queued  atomic.Int32 // callers waiting for mu
	durable atomic.Int32 // those of them that are not relaxed
	tx      *sql.Tx      // the open batch's transaction, nil between batches
	relaxed bool         // the open batch commits without waiting for the disk
	// connRelaxed: the writer connection may have Dialect.RelaxConn in
	// effect (it keeps it between batches until a durable one begins).
	connRelaxed bool
	members     int
	done        chan struct{} // closed when the open batch is committed or failed
	err         *error        // the batch's outcome, readable once done is closed

	// head is the audit chain's last entry after the last committed
	// batch, batchHead after the open batch's members so far
	// (DB.CacheAuditHead).
	head, batchHead auditHead

	commits, committed atomic.Int64 // batches committed, and their members
}

// auditHead is the last entry of the audit chain, as far as known.
type auditHead struct {
	seq   int64
	hash  []byte
	known bool
}

// GroupStats reports how many group-committed batches were committed and
// how many Updates they held in all.
func (db *DB) GroupStats() (commits, updates int64) {
	return db.group.commits.Load(), db.group.committed.Load()
}

func (db *DB) groupUpdate(ctx context.Context, fn func(store.Tx) error, relaxed bool) error {
	g := &db.group
	g.queued.Add(1)
	if !relaxed {
		g.durable.Add(1)
	}
	g.mu.Lock()
	g.queued.Add(-1)
	if !relaxed {
		g.durable.Add(-1)
	}
	if g.tx != nil && g.relaxed && !relaxed {
		db.groupCommit() // a durable member cannot join a relaxed batch
	}
	if err := ctx.Err(); err != nil {
		db.groupRelease()
		return fmt.Errorf("%s: begin update: %w", db.Dialect.Name, err)
	}
	if g.tx == nil {
		// A relaxed batch would have to commit as soon as a durable caller
		// comes in: open a durable one if such a caller is already queued.
		if err := db.groupBegin(ctx, relaxed && g.durable.Load() == 0); err != nil {
			g.mu.Unlock()
			return err
		}
	}
	tx := g.tx
	// The first member of a batch needs no savepoint: nothing else is in
	// the transaction yet, so undoing its writes is rolling it back.
	first := g.members == 0
	if !first {
		if _, err := tx.ExecContext(context.WithoutCancel(ctx), "SAVEPOINT member"); err != nil {
			db.groupAbort(fmt.Errorf("%s: begin update: %w", db.Dialect.Name, err))
			err := *g.err
			db.groupRelease()
			return err
		}
	}
	ok := false
	head := g.batchHead // to restore if fn's writes are undone
	defer func() {
		if !ok { // fn panicked: undo its writes, keep the batch, pass the panic on
			g.batchHead = head
			db.groupUndo(tx, first)
			db.groupRelease()
		}
	}()
	t := &Tx{db: db, r: &sqlRunner{tx: tx, stmts: db.wstmts, queries: &db.queries, detach: true}}
	if db.CacheAuditHead {
		t.head = &g.batchHead
	}
	err := fn(t)
	ok = true
	if err != nil {
		g.batchHead = head
		db.groupUndo(tx, first)
		db.groupRelease()
		return err
	}
	if first {
		// Nothing to release.
	} else if _, rerr := tx.ExecContext(context.WithoutCancel(ctx), "RELEASE member"); rerr != nil {
		db.groupAbort(fmt.Errorf("%s: update: %w", db.Dialect.Name, rerr))
		err := *g.err
		db.groupRelease()
		return err
	}
	g.members++
	done, res := g.done, g.err
	if g.members >= maxGroup || g.queued.Load() == 0 {
		db.groupCommit()
		g.mu.Unlock()
		return *res
	}
	g.mu.Unlock()
	<-done // the batch's last member commits it
	return *res
}

// groupBegin opens a batch. It sets the commit mode first: SQLite refuses to
// change it inside a transaction. The writer connection keeps the mode of the
// last batch until a batch needs the other one (connRelaxed), so a run of
// relaxed batches (the server's read-audit entries) does not pay two more
// statements each; a durable batch always restores it before BEGIN, and
// fails if it cannot.
func (db *DB) groupBegin(ctx context.Context, relaxed bool) error {
	g := &db.group
	relaxed = relaxed && db.Dialect.RelaxConn != ""
	if relaxed != g.connRelaxed {
		mode, what := db.Dialect.RelaxConn, "relax commit"
		if !relaxed {
			mode, what = db.Dialect.RelaxConnRestore, "restore durable commit"
		}
		// A failed switch leaves the mode unknown: connRelaxed stays set
		// (or is set), so the next durable batch tries to restore it again.
		g.connRelaxed = true
		if _, err := db.Writer.ExecContext(context.WithoutCancel(ctx), mode); err != nil {
			return fmt.Errorf("%s: %s: %w", db.Dialect.Name, what, err)
		}
		g.connRelaxed = relaxed
	}
	// The batch outlives its first member's context.
	tx, err := db.Writer.BeginTx(context.WithoutCancel(ctx), db.WriteOptions)
	if err != nil {
		return fmt.Errorf("%s: begin update: %w", db.Dialect.Name, err)
	}
	var res error
	g.tx, g.relaxed, g.members = tx, relaxed, 0
	g.batchHead = g.head
	g.done, g.err = make(chan struct{}), &res
	return nil
}

// groupUndo rolls back the current member's writes: to its savepoint, or the
// whole transaction for the first member, which has none (the batch then has
// no member to tell). If that fails, the whole batch fails: its transaction
// is in an unknown state.
func (db *DB) groupUndo(tx *sql.Tx, first bool) {
	if first {
		db.groupAbort(fmt.Errorf("%s: update: rolled back", db.Dialect.Name))
		return
	}
	ctx := context.Background()
	if _, err := tx.ExecContext(ctx, "ROLLBACK TO member"); err != nil {
		db.groupAbort(fmt.Errorf("%s: update: a transaction sharing this commit failed: %w", db.Dialect.Name, err))
		return
	}
	if _, err := tx.ExecContext(ctx, "RELEASE member"); err != nil {
		db.groupAbort(fmt.Errorf("%s: update: a transaction sharing this commit failed: %w", db.Dialect.Name, err))
	}
}

// groupRelease ends a caller's turn that added nothing to the batch: it
// commits the batch if nobody else is queued to continue it, and unlocks.
func (db *DB) groupRelease() {
	g := &db.group
	if g.tx != nil && g.queued.Load() == 0 {
		db.groupCommit()
	}
	g.mu.Unlock()
}

// groupCommit commits the open batch (or just ends it when it has no
// members) and wakes its members. g.mu is held.
func (db *DB) groupCommit() {
	g := &db.group
	if g.tx == nil {
		return
	}
	var err error
	if g.members == 0 {
		g.tx.Rollback() // nothing to keep, nobody waiting
	} else if cerr := g.tx.Commit(); cerr != nil {
		err = fmt.Errorf("%s: commit: %w", db.Dialect.Name, cerr)
		g.head = auditHead{} // committed or not: read it again
	} else {
		g.head = g.batchHead
		g.commits.Add(1)
		g.committed.Add(int64(g.members))
	}
	db.groupFinish(err)
}

// groupAbort rolls back the open batch: every member of it fails with err.
func (db *DB) groupAbort(err error) {
	g := &db.group
	if g.tx == nil {
		return
	}
	g.tx.Rollback()
	g.head = auditHead{} // the rollback may have failed too: read it again
	db.groupFinish(err)
}

func (db *DB) groupFinish(err error) {
	g := &db.group
	*g.err = err
	close(g.done)
	g.tx, g.relaxed = nil, false
}
