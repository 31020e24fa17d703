package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		err := a.write(ctx, batch)
		cancel()
		for _, r := range batch {
			r.done <- err
		}
	}
}

// write appends a batch in one transaction. It builds the chain as
// audit.Append does (same payload encoding, same hash), but reads the last
// link once per batch instead of once per entry, and encodes the payloads
// before taking the store's write lock.
func (a *auditLog) write(ctx context.Context, batch []*auditReq) error {
	payloads := make([][]byte, len(batch))
	for i, r := range batch {
		r.e.At = r.e.At.UTC()
		b, err := json.Marshal(r.e)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		payloads[i] = b
	}
	return a.st.Update(ctx, func(tx store.Tx) error {
		var prev []byte
		var seq int64
		last, err := tx.LastAudit(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fmt.Errorf("audit: %w", err)
		default:
			prev, seq = last.Hash, last.Seq
		}
		for i, r := range batch {
			rec := &store.AuditRecord{At: r.e.At, Payload: payloads[i], PrevHash: prev, Hash: audit.Hash(seq+1, prev, payloads[i])}
			if err := tx.AppendAudit(ctx, rec); err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			if rec.Seq != seq+1 {
				return fmt.Errorf("audit: store assigned seq %d, want %d", rec.Seq, seq+1)
			}
			prev, seq = rec.Hash, rec.Seq
		}
		return nil
	})
}
