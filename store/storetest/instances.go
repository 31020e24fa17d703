package storetest

import (
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

func testInstances(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := store.Instance{ID: "host-a:10:ab", Host: "host-a", Address: "10.0.0.1:8270", Version: "v1.2.0", StartedAt: at(0), LastHeartbeat: at(0)}
	b := store.Instance{ID: "host-b:20:cd", Host: "host-b", Address: "10.0.0.2:8270", Version: "v1.2.0", StartedAt: at(0), LastHeartbeat: at(time.Second)}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListInstances(ctx)
		noErr(t, "ListInstances empty", err)
		equal(t, "ListInstances empty", len(got), 0)
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutInstance", tx.PutInstance(ctx, &b))
		return tx.PutInstance(ctx, &a)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListInstances(ctx)
		noErr(t, "ListInstances", err)
		equal(t, "ListInstances", got, []store.Instance{a, b})
		return nil
	})
	// A heartbeat replaces the row but keeps when it started.
	next := a
	next.LastHeartbeat, next.StartedAt, next.Address = at(time.Minute), at(time.Minute), "10.0.0.9:8270"
	update(t, s, func(tx store.Tx) error { return tx.PutInstance(ctx, &next) })
	next.StartedAt = a.StartedAt
	// Rows that stopped beating before the cut go. Deleting again is a no-op.
	update(t, s, func(tx store.Tx) error {
		n, err := tx.DeleteInstancesSeenBefore(ctx, at(2*time.Second))
		noErr(t, "DeleteInstancesSeenBefore", err)
		equal(t, "DeleteInstancesSeenBefore count", n, 1) // b
		n, err = tx.DeleteInstancesSeenBefore(ctx, at(2*time.Second))
		noErr(t, "DeleteInstancesSeenBefore again", err)
		equal(t, "DeleteInstancesSeenBefore again count", n, 0)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListInstances(ctx)
		noErr(t, "ListInstances after heartbeat", err)
		equal(t, "ListInstances after heartbeat", got, []store.Instance{next})
		if err := tx.PutInstance(ctx, &a); err == nil {
			t.Fatal("PutInstance in a View succeeded")
		}
		return nil
	})
}
