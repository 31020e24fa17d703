package storetest

import (
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

func testConsumers(t *testing.T, s store.Store) {
	ctx := t.Context()
	a1 := store.Consumer{ID: "agent-a", CredentialID: "app/db", Name: "web", Host: "h1", Kind: "agent", Version: 1, ActionOK: true, TokenID: "t1", FirstSeen: at(0), LastSeen: at(0)}
	b1 := store.Consumer{ID: "agent-b", CredentialID: "app/db", Name: "cron", Host: "h2", Kind: "agent", Version: 1, ActionError: "exit status 3", TokenID: "t1", FirstSeen: at(0), LastSeen: at(time.Second), Refresh: 5 * time.Second, DrainTimeout: 5 * time.Minute}
	a2 := store.Consumer{ID: "agent-a", CredentialID: "app/api", Name: "web", Host: "h1", Kind: "agent", Version: 4, ActionOK: true, TokenID: "t1", FirstSeen: at(0), LastSeen: at(0)}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListConsumers(ctx, "app/db")
		noErr(t, "ListConsumers empty", err)
		equal(t, "ListConsumers empty", len(got), 0)
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutConsumer", tx.PutConsumer(ctx, &b1))
		noErr(t, "PutConsumer", tx.PutConsumer(ctx, &a2))
		return tx.PutConsumer(ctx, &a1)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListConsumers(ctx, "app/db")
		noErr(t, "ListConsumers", err)
		equal(t, "ListConsumers", got, []store.Consumer{a1, b1})
		all, err := tx.ListConsumers(ctx, "")
		noErr(t, "ListConsumers all", err)
		equal(t, "ListConsumers all", all, []store.Consumer{a2, a1, b1})
		return nil
	})
	// A heartbeat replaces the row but keeps when it was first seen.
	next := a1
	next.Version, next.LastSeen, next.FirstSeen, next.ActionOK, next.ActionError = 2, at(time.Minute), at(time.Minute), false, "signal: no such process"
	update(t, s, func(tx store.Tx) error { return tx.PutConsumer(ctx, &next) })
	next.FirstSeen = a1.FirstSeen
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListConsumers(ctx, "app/db")
		noErr(t, "ListConsumers after heartbeat", err)
		equal(t, "ListConsumers after heartbeat", got, []store.Consumer{next, b1})
		return nil
	})
	// Rows seen before the cut go; the others stay. Deleting again is a no-op.
	update(t, s, func(tx store.Tx) error {
		n, err := tx.DeleteConsumersSeenBefore(ctx, at(time.Second))
		noErr(t, "DeleteConsumersSeenBefore", err)
		equal(t, "DeleteConsumersSeenBefore count", n, 1) // a2
		n, err = tx.DeleteConsumersSeenBefore(ctx, at(time.Second))
		noErr(t, "DeleteConsumersSeenBefore again", err)
		equal(t, "DeleteConsumersSeenBefore again count", n, 0)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		all, err := tx.ListConsumers(ctx, "")
		noErr(t, "ListConsumers after delete", err)
		equal(t, "ListConsumers after delete", all, []store.Consumer{next, b1})
		if err := tx.PutConsumer(ctx, &a1); err == nil {
			t.Fatal("PutConsumer in a View succeeded")
		}
		return nil
	})
}
