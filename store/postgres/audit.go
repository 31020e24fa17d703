package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
)

// The audit chain without a hot row.
//
// Every audited operation inserts its entries into audit_pending, in its own
// transaction, so the entry commits (or not) with the operation and a failed
// write still fails the operation. No writer reads the chain's head. A single
// appender at a time (a transaction-level advisory lock, across every server
// on the schema) then moves the committed entries, in the order of their
// queue IDs, into audit with their sequence numbers and hashes: the chain is
// computed once, in one order, and audit.Verify checks it as before. Each
// server wakes its appender after every commit that queued an entry and every
// AppendInterval besides, so entries left by a server that died are chained
// by the others; audit.Verify and audit.List chain what is pending first.
//
// Until it is chained (normally milliseconds) an entry is protected only by
// the database's own access control, like any other row.

// AppendInterval is how often each server chains pending audit entries even
// when it queued none itself.
const AppendInterval = time.Second

const (
	auditLock  = `SELECT pg_advisory_xact_lock(hashtext('nebula-credential audit ' || current_schema()))`
	sealBatch  = 1000
	auditHead  = `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`
	auditQueue = `SELECT id, at, payload FROM audit_pending ORDER BY id LIMIT $1`
	auditMove  = `INSERT INTO audit (seq, at, payload, prev_hash, hash)
		SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bytea[], $4::bytea[], $5::bytea[])`
	auditDone = `DELETE FROM audit_pending WHERE id = ANY($1)`
)

func (s *Store) appendLoop(ctx context.Context) {
	t := time.NewTicker(AppendInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.seal:
		case <-t.C:
		}
		// An error (the database is unreachable) leaves the entries queued
		// for the next round, here or on another server.
		_ = s.SealAudit(ctx)
	}
}

// SealAudit chains every audit entry queued and committed so far, by any
// server. audit.Verify and audit.List call it first.
func (s *Store) SealAudit(ctx context.Context) error {
	for {
		n, err := s.sealOnce(ctx)
		if err != nil {
			return err
		}
		if n < sealBatch {
			return nil
		}
	}
}

func (s *Store) sealOnce(ctx context.Context) (int, error) {
	// READ COMMITTED: each statement after the lock sees what the previous
	// appender committed.
	tx, err := s.pool.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("postgres: chain audit: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, auditLock); err != nil {
		return 0, fmt.Errorf("postgres: chain audit: lock: %w", err)
	}
	var (
		seq  int64
		prev []byte
	)
	if err := tx.QueryRowContext(ctx, auditHead).Scan(&seq, &prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("postgres: chain audit: head: %w", err)
	}
	rows, err := tx.QueryContext(ctx, auditQueue, sealBatch)
	if err != nil {
		return 0, fmt.Errorf("postgres: chain audit: queue: %w", err)
	}
	var (
		ids, seqs           []int64
		ats                 []time.Time
		payloads, prevs, hs [][]byte
	)
	for rows.Next() {
		var (
			id      int64
			at      time.Time
			payload []byte
		)
		if err := rows.Scan(&id, &at, &payload); err != nil {
			rows.Close()
			return 0, fmt.Errorf("postgres: chain audit: queue: %w", err)
		}
		seq++
		h := audit.Hash(seq, prev, payload)
		ids, seqs, ats = append(ids, id), append(seqs, seq), append(ats, at)
		payloads, prevs, hs = append(payloads, payload), append(prevs, nonNil(prev)), append(hs, h)
		prev = h
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("postgres: chain audit: queue: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, auditMove, seqs, ats, payloads, prevs, hs); err != nil {
		return 0, fmt.Errorf("postgres: chain audit: insert: %w", err)
	}
	if _, err := tx.ExecContext(ctx, auditDone, ids); err != nil {
		return 0, fmt.Errorf("postgres: chain audit: dequeue: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("postgres: chain audit: commit: %w", err)
	}
	return len(ids), nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
