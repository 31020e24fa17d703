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
type auditLog struct {
	st      store.Store
	timeout time.Duration

	mu      sync.Mutex
	pending []*auditReq
	running bool
}

type auditReq struct {
	e    audit.Entry
	done chan error
}

// maxAuditBatch bounds one transaction.
const maxAuditBatch = 512

// Append writes e to the hash-chained log and waits for the commit.
func (a *auditLog) Append(ctx context.Context, e audit.Entry) error {
	r := &auditReq{e: e, done: make(chan error, 1)}
	a.mu.Lock()
	a.pending = append(a.pending, r)
	if !a.running {
		a.running = true
		go a.flush()
	}
	a.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The entry may still be written; the caller fails closed either way.
		return ctx.Err()
	}
}

func (a *auditLog) flush() {
	for {
		a.mu.Lock()
		n := min(len(a.pending), maxAuditBatch)
		if n == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		batch := a.pending[:n:n]
		a.pending = a.pending[n:]
		if len(a.pending) == 0 {
			a.pending = nil
		}
		a.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		err := a.st.Update(ctx, func(tx store.Tx) error {
			for _, r := range batch {
				if err := audit.Append(ctx, tx, r.e); err != nil {
					return err
				}
			}
			return nil
		})
		cancel()
		for _, r := range batch {
			r.done <- err
		}
	}
}
