package server

import (
	"context"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

// auditLog appends the server's own audit entries (reads, denials, request
// outcomes) with group commit: entries of concurrent requests share one store
// transaction, so a durable, fsynced commit is paid once per batch rather
// than once per request. Append returns only after the entry's transaction
// committed, so a caller that waits for it and fails on error is fail-closed.
//
// One writer goroutine writes the batches. It stays up while entries keep
// coming (it exits after auditIdle without any), so its stack, which
// SQLite's deep calls grow to tens of kilobytes, is grown once rather than
// for every batch by a new goroutine.
type auditLog struct {
	st      store.Store
	timeout time.Duration

	mu      sync.Mutex
	pending []*auditReq
	running bool          // the writer goroutine is up
	wake    chan struct{} // one token: pending was empty and is not
}

type auditReq struct {
	e    audit.Entry
	done chan error
}

// maxAuditBatch bounds one transaction.
const maxAuditBatch = 512

// auditIdle is how long the writer waits for an entry before it exits.
const auditIdle = time.Second

// Append writes e to the hash-chained log and waits for the commit.
func (a *auditLog) Append(ctx context.Context, e audit.Entry) error {
	return a.wait(ctx, a.start(e))
}

// start queues e for the writer and returns at once; wait for its commit
// with wait.
func (a *auditLog) start(e audit.Entry) *auditReq {
	r := &auditReq{e: e, done: make(chan error, 1)}
	a.mu.Lock()
	a.pending = append(a.pending, r)
	switch {
	case !a.running:
		a.running = true
		if a.wake == nil {
			a.wake = make(chan struct{}, 1)
		}
		go a.writer()
	case len(a.pending) == 1:
		select {
		case a.wake <- struct{}{}:
		default: // a token is already there
		}
	}
	a.mu.Unlock()
	return r
}

// wait returns the outcome of r's commit, or ctx's error first.
func (a *auditLog) wait(ctx context.Context, r *auditReq) error {
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The entry may still be written; the caller fails closed either way.
		return ctx.Err()
	}
}

func (a *auditLog) writer() {
	idle := time.NewTimer(auditIdle)
	defer idle.Stop()
	for {
		a.mu.Lock()
		n := min(len(a.pending), maxAuditBatch)
		if n == 0 {
			a.mu.Unlock()
			idle.Reset(auditIdle)
			select {
			case <-a.wake:
				continue
			case <-idle.C:
			}
			a.mu.Lock()
			if len(a.pending) == 0 {
				a.running = false
				a.mu.Unlock()
				return
			}
			a.mu.Unlock()
			continue
		}
		batch := a.pending[:n:n]
		a.pending = a.pending[n:]
		if len(a.pending) == 0 {
			a.pending = nil
		}
		a.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		err := a.write(ctx, batch)
		cancel()
		for _, r := range batch {
			r.done <- err
		}
	}
}

// write appends a batch in one transaction. It commits without waiting for
// the disk where the store allows (store.RelaxedUpdater): the entries are in
// the log, in order, before any request waiting on them is answered, and a
// killed process keeps them; only an OS crash or power failure can drop the
// last few. The entries of changes themselves (put, rotate, ...) are written
// durably by the Manager in the same transaction as the change.
func (a *auditLog) write(ctx context.Context, batch []*auditReq) error {
	entries := make([]audit.Entry, len(batch))
	for i, r := range batch {
		entries[i] = r.e
	}
	update := a.st.Update
	if ru, ok := a.st.(store.RelaxedUpdater); ok {
		update = ru.UpdateRelaxed
	}
	return update(ctx, func(tx store.Tx) error { return audit.Append(ctx, tx, entries...) })
}
