package credential_test

import (
	"context"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// A validated rotation that succeeds writes the store twice: the plan (the
// pending version, durable before the target changes) and the commit, which
// also records the applied and verified steps (their audit entries stay).
func TestRotationWritesPlanAndCommitOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	gs, ok := e.m.Store().(interface{ GroupStats() (int64, int64) })
	if !ok {
		t.Fatalf("the test store (%T) reports no group stats", e.m.Store())
	}
	_, before := gs.GroupStats()
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, after := gs.GroupStats(); after-before != 2 {
		t.Fatalf("a validated rotation made %d store writes, want 2 (plan, commit)", after-before)
	}
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Action] = true
	}
	for _, a := range []string{"rotate.planned", "rotate.staged", "rotate.applied", "rotate.verified", "rotate.committed", "rotate.grace"} {
		if !seen[a] {
			t.Errorf("audit has no %s entry (have %v)", a, seen)
		}
	}
}

// countingStore counts, per credential, the versions its transactions read.
type countingStore struct {
	store.Store
	mu    sync.Mutex
	reads map[string]int
}

func (s *countingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.View(ctx, func(tx store.Tx) error { return fn(countingTx{tx, s}) })
}

func (s *countingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(countingTx{tx, s}) })
}

func (s *countingStore) take() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.reads
	s.reads = map[string]int{}
	return out
}

type countingTx struct {
	store.Tx
	s *countingStore
}

func (t countingTx) GetVersion(ctx context.Context, id string, version int) (*store.Version, error) {
	t.s.mu.Lock()
	t.s.reads[id]++
	t.s.mu.Unlock()
	return t.Tx.GetVersion(ctx, id, version)
}

// A validated rotation bound to an admin credential applies the binding rule
// twice, when it is planned and when the admin is resolved to change the
// target, and each check reads the versions it checks once: the resolve hands
// out the admin version the check read, and planning stages from the current
// version the check read.
func TestRotationReadsEachVersionOncePerCheck(t *testing.T) {
	srv := testenv.Redis(t, true)
	u, pw := testenv.UniqueName("app_"), testenv.UniqueName("pw-")
	srv.Do(t, "ACL", "SETUSER", u, "reset", "on", ">"+pw, "~*", "+@all")
	dir := t.TempDir()
	cfg := realConfig(dir, true)
	cs := &countingStore{Store: cfg.Store, reads: map[string]int{}}
	cfg.Store = cs
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Put(ctx, "admin/redis", credential.PutRequest{Type: credential.Redis, Fields: map[string]any{"host": srv.Host, "port": srv.Port, "username": srv.AdminUser, "manages": []any{u}}, Secret: secret.Map{"password": secret.New(srv.AdminPassword)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, "app/redis", credential.PutRequest{Type: credential.Redis, Fields: map[string]any{"host": srv.Host, "port": srv.Port, "username": u, "admin_credential": "admin/redis"}, Secret: secret.Map{"password": secret.New(pw)}}); err != nil {
		t.Fatal(err)
	}
	cs.take()
	if _, err := m.Rotate(ctx, "app/redis", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got := cs.take()
	want := map[string]int{"admin/redis": 2, "app/redis": 2} // plan, resolve
	for id, n := range want {
		if got[id] != n {
			t.Errorf("a validated rotation read a version of %s %d times, want %d (one per binding check)", id, got[id], n)
		}
	}
}
