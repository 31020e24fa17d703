package server

import (
	"context"
	"runtime"
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
//
// The writer gathers each batch on purpose (gather): before it takes the
// oldest batch off the queue it yields the processor and looks again, for
// as long as the batch keeps growing, so that the requests already running
// queue their entries into this commit rather than each paying for its own.
// A lone client's batch does not grow during the yield, so it is written at
// once.
type auditLog struct {
	st      store.Store
	timeout time.Duration

	mu      sync.Mutex
	batches []*auditBatch // queued, oldest first; each up to maxAuditBatch entries
	running bool          // the writer goroutine is up
	wake    chan struct{} // one token: batches was empty and is not
}

// auditBatch is the entries written in one transaction. Its requests wait
// for done together: one channel closed per batch, rather than one
// allocated and sent on per entry.
type auditBatch struct {
	entries []audit.Entry
	done    chan struct{}
	err     error // readable once done is closed
}

// maxAuditBatch bounds one transaction.
const maxAuditBatch = 512

// auditIdle is how long the writer waits for an entry before it exits.
const auditIdle = time.Second

// maxAuditGather bounds the yields spent gathering one batch, and so the
// wait its first entry adds to its commit under a steady stream.
const maxAuditGather = 16

// Append writes e to the hash-chained log and waits for the commit.
func (a *auditLog) Append(ctx context.Context, e audit.Entry) error {
	return a.wait(ctx, a.start(e))
}

// start queues e for the writer and returns at once with the batch it
// joined; wait for its commit with wait.
func (a *auditLog) start(e audit.Entry) *auditBatch {
	a.mu.Lock()
	n := len(a.batches)
	if n == 0 || len(a.batches[n-1].entries) >= maxAuditBatch {
		a.batches = append(a.batches, &auditBatch{entries: make([]audit.Entry, 0, 16), done: make(chan struct{})})
		n++
	}
	b := a.batches[n-1]
	b.entries = append(b.entries, e)
	switch {
	case !a.running:
		a.running = true
		if a.wake == nil {
			a.wake = make(chan struct{}, 1)
		}
		go a.writer()
	case n == 1 && len(b.entries) == 1:
		select {
		case a.wake <- struct{}{}:
		default: // a token is already there
		}
	}
	a.mu.Unlock()
	return b
}

// wait returns the outcome of b's commit, or ctx's error first.
func (a *auditLog) wait(ctx context.Context, b *auditBatch) error {
	select {
	case <-b.done:
		return b.err
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
		if len(a.batches) == 0 {
			a.mu.Unlock()
			idle.Reset(auditIdle)
			select {
			case <-a.wake:
				continue
			case <-idle.C:
			}
			a.mu.Lock()
			if len(a.batches) == 0 {
				a.running = false
				a.mu.Unlock()
				return
			}
			a.mu.Unlock()
			continue
		}
		b := a.batches[0]
		a.mu.Unlock()

		a.gather(b)

		a.mu.Lock()
		a.batches[0] = nil
		a.batches = a.batches[1:]
		if len(a.batches) == 0 {
			a.batches = nil
		}
		a.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		b.err = a.write(ctx, b.entries)
		cancel()
		close(b.done)
	}
}

// gather lets b, the oldest batch, fill before it is written: it yields the
// processor to the runnable goroutines (requests on their way to queueing an
// entry) and does so again while b grew in the meantime, up to
// maxAuditGather times or until b is full. b stays first in the queue, so
// start keeps adding to it. When b did not grow in one yield (one client, or
// every request is waiting for a commit) gather returns: one yield with
// nothing else runnable is all it costs.
//
// Without it the writer takes whatever is queued the moment it is free,
// and at 32 clients on 2 processors commits about 2 entries at a time.
func (a *auditLog) gather(b *auditBatch) {
	a.mu.Lock()
	n := len(b.entries)
	a.mu.Unlock()
	for range maxAuditGather {
		if n >= maxAuditBatch {
			return
		}
		runtime.Gosched()
		a.mu.Lock()
		m := len(b.entries)
		a.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}

// write appends a batch in one transaction. It commits without waiting for
// the disk where the store allows (store.RelaxedUpdater): the entries are in
// the log, in order, before any request waiting on them is answered, and a
// killed process keeps them; only an OS crash or power failure can drop the
// last few. The entries of changes themselves (put, rotate, ...) are written
// durably by the Manager in the same transaction as the change.
func (a *auditLog) write(ctx context.Context, entries []audit.Entry) error {
	update := a.st.Update
	if ru, ok := a.st.(store.RelaxedUpdater); ok {
		update = ru.UpdateRelaxed
	}
	return update(ctx, func(tx store.Tx) error { return audit.Append(ctx, tx, entries...) })
}
