package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// gatedStore is a real SQLite store whose Update (the audit writer's only
// write: it has no UpdateRelaxed) announces each transaction on entered and
// runs it only when release lets it, failing with fail if that is set.
type gatedStore struct {
	store.Store
	entered chan struct{}
	release chan struct{}
	fail    error
}

func (g *gatedStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	g.entered <- struct{}{}
	<-g.release
	if g.fail != nil {
		return g.fail
	}
	return g.Store.Update(ctx, fn)
}

func newGatedAuditLog(t *testing.T) (*auditLog, *gatedStore) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	return &auditLog{st: g, timeout: time.Minute}, g
}

// queued is the number of entries waiting in a's queue, not yet taken by
// the writer.
func (a *auditLog) queued() (n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.batches {
		n += len(b.entries)
	}
	return n
}

// waitQueued yields until a holds n queued entries.
func waitQueued(t *testing.T, a *auditLog, n int) {
	t.Helper()
	for a.queued() != n {
		if t.Context().Err() != nil {
			t.Fatalf("%d entries queued, want %d", a.queued(), n)
		}
		runtime.Gosched()
	}
}

func entry(i int) audit.Entry {
	return audit.Entry{At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Actor: "token:t", Action: "credential.get",
		CredentialID: "prod/a", Outcome: "allowed", RequestID: fmt.Sprintf("r%d", i), Detail: "reveal"}
}

// TestAuditLogAnswersAfterCommit: Append returns only once the transaction
// holding its entry committed, and the entries that arrive while a commit
// runs are written together in the next one.
func TestAuditLogAnswersAfterCommit(t *testing.T) {
	a, g := newGatedAuditLog(t)
	ctx := t.Context()
	first := make(chan error, 1)
	go func() { first <- a.Append(ctx, entry(0)) }()
	<-g.entered // the writer holds entry 0's transaction

	const n = 20
	rest := make(chan error, n)
	for i := 1; i <= n; i++ {
		go func() { rest <- a.Append(ctx, entry(i)) }()
	}
	waitQueued(t, a, n)
	select {
	case err := <-first:
		t.Fatalf("Append returned (%v) before its commit", err)
	default:
	}

	g.release <- struct{}{} // commit entry 0
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	<-g.entered // the next transaction: all n queued entries
	if q := a.queued(); q != 0 {
		t.Fatalf("%d entries left out of the batch that was queued before it began", q)
	}
	select {
	case err := <-rest:
		t.Fatalf("Append returned (%v) before its commit", err)
	default:
	}
	g.release <- struct{}{}
	for range n {
		if err := <-rest; err != nil {
			t.Fatal(err)
		}
	}
	got, err := audit.Verify(ctx, g.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != n+1 {
		t.Fatalf("%d entries in the log, want %d", got, n+1)
	}
}

// TestAuditLogFailedCommitFailsEveryMember: each request of a batch whose
// transaction fails gets the error (and so answers nothing).
func TestAuditLogFailedCommitFailsEveryMember(t *testing.T) {
	a, g := newGatedAuditLog(t)
	ctx := t.Context()
	first := make(chan error, 1)
	go func() { first <- a.Append(ctx, entry(0)) }()
	<-g.entered
	const n = 5
	rest := make(chan error, n)
	for i := 1; i <= n; i++ {
		go func() { rest <- a.Append(ctx, entry(i)) }()
	}
	waitQueued(t, a, n)
	g.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	<-g.entered
	g.fail = boom // read by the writer only after the release below
	g.release <- struct{}{}
	for range n {
		if err := <-rest; !errors.Is(err, boom) {
			t.Fatalf("Append of a failed batch: %v, want %v", err, boom)
		}
	}
}

// TestAuditLogBatchBound: no transaction holds more than maxAuditBatch
// entries, however many are queued.
func TestAuditLogBatchBound(t *testing.T) {
	a, g := newGatedAuditLog(t)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- a.Append(ctx, entry(0)) }()
	<-g.entered
	n := maxAuditBatch + 3
	bs := make([]*auditBatch, n)
	for i := range bs {
		bs[i] = a.start(entry(i + 1))
	}
	a.mu.Lock()
	var sizes []int
	for _, b := range a.batches {
		sizes = append(sizes, len(b.entries))
	}
	a.mu.Unlock()
	if len(sizes) != 2 || sizes[0] != maxAuditBatch || sizes[1] != 3 {
		t.Errorf("queued batches of %v entries, want [%d 3]", sizes, maxAuditBatch)
	}
	g.release <- struct{}{} // entry 0's transaction
	for range 2 {           // then the two batches
		<-g.entered
		g.release <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if err := a.wait(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}
