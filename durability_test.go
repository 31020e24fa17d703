package credential_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/store"
)

// durabilityStore records, for every journal write (CreateRotation,
// UpdateRotation), the step written and whether its transaction was durable
// (Update) or relaxed (UpdateRelaxed).
type durabilityStore struct {
	store.Store
	mu     sync.Mutex
	writes []string // "step:durable" or "step:relaxed"
}

func (s *durabilityStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, s.wrap(fn, "durable"))
}

func (s *durabilityStore) UpdateRelaxed(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.(store.RelaxedUpdater).UpdateRelaxed(ctx, s.wrap(fn, "relaxed"))
}

func (s *durabilityStore) wrap(fn func(store.Tx) error, how string) func(store.Tx) error {
	return func(tx store.Tx) error { return fn(&durabilityTx{Tx: tx, s: s, how: how}) }
}

func (s *durabilityStore) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes
	s.writes = nil
	return w
}

type durabilityTx struct {
	store.Tx
	s   *durabilityStore
	how string
}

func (t *durabilityTx) note(step string) {
	t.s.mu.Lock()
	t.s.writes = append(t.s.writes, step+":"+t.how)
	t.s.mu.Unlock()
}

func (t *durabilityTx) CreateRotation(ctx context.Context, r *store.Rotation) error {
	err := t.Tx.CreateRotation(ctx, r)
	if err == nil {
		t.note(r.Step)
	}
	return err
}

func (t *durabilityTx) UpdateRotation(ctx context.Context, r *store.Rotation) error {
	err := t.Tx.UpdateRotation(ctx, r)
	if err == nil {
		t.note(r.Step)
	}
	return err
}

// The journal writes of a validated rotation, and whether each waits for the
// disk. The plan (the pending version stored before the target changes) and
// the commit (current moves to the new version; the watch event, whose
// sequence number watchers resume from, and the answer to the caller follow
// it) must be durable; see the comment on relaxedStep in rotation/steps.go.
func TestJournalWritesDurability(t *testing.T) {
	var ds *durabilityStore
	e := newEnv(t, func(cfg *credential.Config) {
		ds = &durabilityStore{Store: cfg.Store}
		cfg.Store = ds
	})
	e.put("a", nil)
	ds.take()
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ds.take()), "[staged:durable grace:durable]"; got != want {
		t.Fatalf("rotation writes %s, want %s (plan with the pending version, then the commit folded with applied, verified and grace)", got, want)
	}
	e.clock.Advance(48 * time.Hour)
	e.tick()
	if got, want := fmt.Sprint(ds.take()), "[retired:durable]"; got != want {
		t.Fatalf("retire writes %s, want %s", got, want)
	}
	if c := e.get("a", "current"); c.Version != 2 || !e.auth(c) {
		t.Fatalf("after rotation: v%d", c.Version)
	}
}
