package consumer_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func manager(t *testing.T) *credential.Manager {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(context.Background(), credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "k"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func put(t *testing.T, m *credential.Manager, id, v string) {
	t.Helper()
	if _, err := m.Put(context.Background(), id, credential.PutRequest{Type: credential.Generic,
		Fields: map[string]any{"port": float64(5432)}, Secret: secret.Map{"value": secret.New(v)}}); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ch <-chan consumer.Change) consumer.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(time.Minute): // generous: a loaded machine is slow, a broken watch never delivers
		t.Fatal("no change delivered")
	}
	return consumer.Change{}
}

var _ consumer.Source = (*consumer.ManagerSource)(nil)

func TestManagerSourceCacheAndWatch(t *testing.T) {
	m := manager(t)
	ctx := context.Background()
	put(t, m, "app/x", "one")
	src := consumer.FromManager(m)
	defer src.Close()

	c, err := src.Current(ctx, "app/x")
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || c.Secret["value"].Reveal() != "one" || c.Field("port") != "5432" || c.Type != "generic" {
		t.Fatalf("got %+v", c)
	}
	ch, err := src.Watch(ctx, "app/x")
	if err != nil {
		t.Fatal(err)
	}
	other, err := src.Watch(ctx, "app/other")
	if err != nil {
		t.Fatal(err)
	}

	// A rotation commits: the change arrives, and Current serves the new version.
	grace := time.Duration(0)
	if _, err := m.Rotate(ctx, "app/x", credential.RotateOptions{Grace: &grace}); err != nil {
		t.Fatal(err)
	}
	if ch := recv(t, ch); ch.Version != 2 || ch.ID != "app/x" || ch.Kind != "current_changed" {
		t.Fatalf("change %+v", ch)
	}
	if c, _ := src.Current(ctx, "app/x"); c.Version != 2 || c.Secret["value"].Reveal() == "one" {
		t.Fatalf("after rotation: version %d", c.Version)
	}
	select {
	case c := <-other:
		t.Fatalf("change of another credential delivered: %+v", c)
	default:
	}

	// Put is a change too.
	put(t, m, "app/x", "three")
	if ch := recv(t, ch); ch.Version != 3 {
		t.Fatalf("change %+v", ch)
	}
	if c, _ := src.Current(ctx, "app/x"); c.Version != 3 || c.Secret["value"].Reveal() != "three" {
		t.Fatalf("after put: version %d", c.Version)
	}

	if _, err := src.Current(ctx, "app/missing"); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("missing credential: %v", err)
	}
	if _, err := src.Watch(ctx, "Bad ID"); err == nil {
		t.Fatal("watch of an invalid ID accepted")
	}
}

// The cache really is a cache: without an event, Current does not go to the
// store (a change the engine does not announce, here a store-level label
// move, stays invisible until the next event).
func TestManagerSourceServesCacheUntilEvent(t *testing.T) {
	m := manager(t)
	ctx := context.Background()
	put(t, m, "app/x", "one")
	put(t, m, "app/x", "two")
	src := consumer.FromManager(m)
	defer src.Close()
	if c, _ := src.Current(ctx, "app/x"); c.Version != 2 {
		t.Fatalf("version %d", c.Version)
	}
	// Move the label behind the engine's back.
	if err := m.Store().Update(ctx, func(tx storeTx) error { return tx.SetLabel(ctx, "app/x", "current", 1) }); err != nil {
		t.Fatal(err)
	}
	if c, _ := src.Current(ctx, "app/x"); c.Version != 2 {
		t.Fatalf("cache bypassed: version %d", c.Version)
	}
	// Any event for the ID invalidates.
	m.Engine().Notify(eventCurrentChanged("app/x", 1))
	if c, _ := src.Current(ctx, "app/x"); c.Version != 1 {
		t.Fatalf("after event: version %d", c.Version)
	}
}

// A slow watcher loses intermediate changes, never the latest.
func TestWatchCoalesces(t *testing.T) {
	m := manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	put(t, m, "app/x", "v")
	src := consumer.FromManager(m)
	defer src.Close()
	ch, err := src.Watch(ctx, "app/x")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		put(t, m, "app/x", "v"+string(rune('a'+i)))
	}
	if c := recv(t, ch); c.Version != 6 {
		t.Fatalf("got version %d, want the latest (6)", c.Version)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("change after cancel")
		}
	case <-time.After(time.Minute):
		t.Fatal("channel not closed after cancel")
	}
}

func TestReportUnused(t *testing.T) {
	m := manager(t)
	ctx := context.Background()
	put(t, m, "app/x", "one")
	put(t, m, "app/x", "two")
	src := consumer.FromManager(m)
	defer src.Close()
	var hook atomic.Int32
	src.HandleUnused(func(_ context.Context, id string, v int) error {
		if id == "app/x" {
			hook.Add(1)
		}
		return nil
	})
	var r consumer.UnusedReporter = src
	r.ReportUnused(ctx, "app/x", 1)
	r.ReportUnused(ctx, "app/x", 1)
	if got := src.Unused("app/x"); !slices.Equal(got, []int{1}) {
		t.Fatalf("unused %v", got)
	}
	if hook.Load() != 2 {
		t.Fatalf("hook called %d times", hook.Load())
	}
	// Version 1 current again (a rollback): no longer unused.
	m.Engine().Notify(eventCurrentChanged("app/x", 1))
	if got := src.Unused("app/x"); len(got) != 0 {
		t.Fatalf("unused after it became current again: %v", got)
	}
}

func TestCloseClosesWatches(t *testing.T) {
	m := manager(t)
	put(t, m, "app/x", "one")
	src := consumer.FromManager(m)
	ch, err := src.Watch(context.Background(), "app/x")
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	if _, ok := <-ch; ok {
		t.Fatal("change after Close")
	}
	if _, err := src.Watch(context.Background(), "app/x"); err == nil {
		t.Fatal("Watch after Close accepted")
	}
	put(t, m, "app/x", "two") // no panic on a closed source
}

type storeTx = store.Tx

func eventCurrentChanged(id string, v int) rotation.Event {
	return rotation.Event{Kind: rotation.EventCurrentChanged, CredentialID: id, Version: v}
}
