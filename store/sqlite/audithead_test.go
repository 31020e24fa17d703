package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

type cachedAuditor interface {
	CachedAudit() (seq int64, hash []byte, ok bool)
}

// appendAudit appends n entries in one Update of s and returns the chain's
// last entry as the Update's transaction had it cached before appending.
func appendAudit(t *testing.T, s *Store, n int) (seq int64, hash []byte, cached bool) {
	t.Helper()
	ctx := t.Context()
	err := s.Update(ctx, func(tx store.Tx) error {
		c, ok := tx.(cachedAuditor)
		if !ok {
			return fmt.Errorf("%T has no CachedAudit", tx)
		}
		seq, hash, cached = c.CachedAudit()
		entries := make([]audit.Entry, n)
		for i := range entries {
			entries[i] = audit.Entry{At: time.Now(), Action: "test", Outcome: "ok"}
		}
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq, hash, cached
}

func lastAudit(t *testing.T, s *Store) store.AuditRecord {
	t.Helper()
	var last *store.AuditRecord
	if err := s.View(t.Context(), func(tx store.Tx) error {
		var err error
		last, err = tx.LastAudit(t.Context())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return *last
}

// The writer keeps the audit chain's last entry in memory from one commit to
// the next instead of reading it, and still chains on what another process
// (here a second Store on the file) or an editor of the file appended
// meanwhile: the chain verifies whatever the order.
func TestAuditHeadCachedAndChecked(t *testing.T) {
	a := openTemp(t)
	b, err := Open(context.Background(), a.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	verify := func(want int64) {
		t.Helper()
		n, err := audit.Verify(ctx, a, nil)
		if err != nil || n != want {
			t.Fatalf("Verify = %d, %v; want %d entries", n, err, want)
		}
	}

	if _, _, cached := appendAudit(t, a, 2); cached {
		t.Error("head cached before any commit")
	}
	second := lastAudit(t, a)
	if seq, hash, cached := appendAudit(t, a, 1); !cached || seq != 2 || !bytes.Equal(hash, second.Hash) {
		t.Errorf("second update: cached head %d, %v; want 2", seq, cached)
	}
	verify(3)

	// Another writer appends: a's cached head (3) is stale.
	appendAudit(t, b, 3)
	if seq, _, cached := appendAudit(t, a, 1); !cached || seq != 3 {
		t.Errorf("cached head %d, %v; want the stale 3", seq, cached)
	}
	verify(7)
	if seq, _, cached := appendAudit(t, a, 1); !cached || seq != 7 {
		t.Errorf("cached head %d, %v; want 7", seq, cached)
	}
	verify(8)
	// More entries than one insert takes (16), on a head that is current,
	// then on one that is stale.
	if seq, _, cached := appendAudit(t, a, 37); !cached || seq != 8 {
		t.Errorf("cached head %d, %v; want 8", seq, cached)
	}
	verify(45)
	appendAudit(t, b, 1)
	if seq, _, cached := appendAudit(t, a, 20); !cached || seq != 45 {
		t.Errorf("cached head %d, %v; want the stale 45", seq, cached)
	}
	verify(66)
	if seq, _, cached := appendAudit(t, a, 1); !cached || seq != 66 {
		t.Errorf("cached head %d, %v; want 66", seq, cached)
	}
	verify(67)
	if err := a.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.(interface {
			AppendAuditsAfter(context.Context, []*store.AuditRecord, int64) (bool, error)
		}).AppendAuditsAfter(ctx, []*store.AuditRecord{{At: time.Now(), Payload: []byte("{}"), PrevHash: []byte("x"), Hash: []byte("y")}}, 67); err != nil {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	verify(67) // a wrong previous hash: nothing written, and the head is read again
	if _, _, cached := appendAudit(t, a, 1); cached {
		t.Error("head still cached after a failed check")
	}
	verify(68)

	// The last entry replaced by one with the same seq and another hash:
	// the seq alone would match a's cache.
	mine := lastAudit(t, a)
	raw, err := sql.Open("sqlite", a.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`DELETE FROM audit WHERE seq = 68`); err != nil {
		t.Fatal(err)
	}
	appendAudit(t, b, 1)
	if theirs := lastAudit(t, a); theirs.Seq != 68 || bytes.Equal(theirs.Hash, mine.Hash) {
		t.Fatalf("replaced entry %d has the same hash", theirs.Seq)
	}
	if seq, h, cached := appendAudit(t, a, 2); !cached || seq != 68 || !bytes.Equal(h, mine.Hash) {
		t.Errorf("cached head %d, %v; want the replaced 68", seq, cached)
	}
	verify(70)

	// Truncated from the end (detected only with an anchor): the next
	// entries chain on what is left, as they would without the cache.
	if _, err := raw.Exec(`DELETE FROM audit WHERE seq > 65`); err != nil {
		t.Fatal(err)
	}
	appendAudit(t, a, 1)
	verify(66)
}
