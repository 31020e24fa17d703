package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

// TestAuditChainConcurrent appends audit entries from many goroutines on two
// stores (two servers) at once: none may fail, the chain must verify with
// every entry in it, and editing, removing or truncating must still be
// detected.
func TestAuditChainConcurrent(t *testing.T) {
	ctx := t.Context()
	dsn := newSchema(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	const workers, each = 64, 3
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			errs <- st.Update(ctx, func(tx store.Tx) error {
				var es []audit.Entry
				for j := range each {
					es = append(es, audit.Entry{At: time.Now(), Action: "test", CredentialID: fmt.Sprint("c/", i), FromVersion: j, Outcome: "ok"})
				}
				return audit.Append(ctx, tx, es...)
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent append: %v", err)
		}
	}
	n, err := audit.Verify(ctx, b, nil)
	if err != nil || n != workers*each {
		t.Fatalf("Verify = %d, %v; want %d entries", n, err, workers*each)
	}
	// A batch keeps its order in the chain.
	recs, err := audit.List(ctx, a, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	for _, r := range recs {
		if v, ok := last[r.CredentialID]; ok && r.FromVersion != v+1 {
			t.Fatalf("entries of one transaction out of order: %s %d after %d", r.CredentialID, r.FromVersion, v)
		}
		last[r.CredentialID] = r.FromVersion
	}
	anchor, _ := hex(recs[len(recs)-1].Hash)

	tamper := func(name, stmt string) {
		t.Helper()
		if _, err := a.pool.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
		_, err := audit.Verify(ctx, a, anchor)
		var p *audit.Problem
		if !errors.As(err, &p) {
			t.Fatalf("%s: Verify = %v, want a problem", name, err)
		}
		t.Logf("%s: %v", name, p)
	}
	tamper("truncate", `DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)`)
	tamper("remove", `DELETE FROM audit WHERE seq = 10`)
	tamper("edit", `UPDATE audit SET payload = payload || '\x20'::bytea WHERE seq = 5`)
}

func hex(s string) ([]byte, error) {
	var out []byte
	_, err := fmt.Sscanf(s, "%x", &out)
	return out, err
}

// TestAuditPendingChainedByOthers: entries a server queued and never chained
// (it died right after committing) are chained by another server.
func TestAuditPendingChainedByOthers(t *testing.T) {
	ctx := t.Context()
	dsn := newSchema(t)
	a := openDSN(t, dsn)
	if _, err := a.pool.ExecContext(ctx, `INSERT INTO audit_pending (at, payload) VALUES (now(), '{"action":"orphan"}')`); err != nil {
		t.Fatal(err)
	}
	b := openDSN(t, dsn)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		if err := b.pool.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM audit`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the orphaned entry was never chained")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, err := audit.Verify(ctx, b, nil); err != nil || n != 1 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
}
