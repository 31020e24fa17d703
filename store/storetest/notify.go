package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// testNotify covers the tables of package notify: subscriptions, the outbox
// AppendEvent fills in the event's own transaction, and deliveries.
func testNotify(t *testing.T, s store.Store) {
	ctx := t.Context()

	// No subscription: events leave nothing in the outbox.
	update(t, s, func(tx store.Tx) error {
		return tx.AppendEvent(ctx, &store.Event{At: at(0), Kind: "current_changed", CredentialID: "a"})
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListOutbox(ctx, 0)
		noErr(t, "ListOutbox", err)
		if len(got) != 0 {
			t.Fatalf("outbox without subscriptions = %v", got)
		}
		return nil
	})

	sub := store.Subscription{ID: "sub_b", Prefix: "prod/", Config: []byte(`{"events":["x"]}`),
		KEKID: "k1", DataKey: []byte("dk"), Ciphertext: []byte("ct"), CreatedAt: at(0), UpdatedAt: at(time.Second)}
	sub2 := sub
	sub2.ID, sub2.Prefix, sub2.KEKID = "sub_a", "", "k2"
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutSubscription", tx.PutSubscription(ctx, &sub))
		return tx.PutSubscription(ctx, &sub2)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetSubscription(ctx, "sub_b")
		noErr(t, "GetSubscription", err)
		equal(t, "GetSubscription", *got, sub)
		_, err = tx.GetSubscription(ctx, "nope")
		wantErr(t, "GetSubscription(missing)", err, store.ErrNotFound)
		all, err := tx.ListSubscriptions(ctx)
		noErr(t, "ListSubscriptions", err)
		equal(t, "ListSubscriptions", all, []store.Subscription{sub2, sub})
		n, err := tx.CountVersionsByKEK(ctx, "k1")
		noErr(t, "CountVersionsByKEK", err)
		if n != 1 {
			t.Errorf("CountVersionsByKEK(k1) = %d, want 1 (the subscription's data key)", n)
		}
		return nil
	})
	sub.Config = []byte(`{"events":["y"]}`)
	update(t, s, func(tx store.Tx) error { return tx.PutSubscription(ctx, &sub) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetSubscription(ctx, "sub_b")
		noErr(t, "GetSubscription", err)
		equal(t, "GetSubscription after replace", *got, sub)
		return nil
	})

	// With subscriptions, an event is copied to the outbox in its own
	// transaction: rolled back together, committed together.
	errBoom := errors.New("boom")
	err := s.Update(ctx, func(tx store.Tx) error {
		noErr(t, "AppendEvent", tx.AppendEvent(ctx, &store.Event{At: at(0), Kind: "rolled_back", CredentialID: "x"}))
		return errBoom
	})
	wantErr(t, "Update", err, errBoom)
	var e1, e2 store.Event
	update(t, s, func(tx store.Tx) error {
		e1 = store.Event{At: at(time.Second), Kind: "rotation_failed", CredentialID: "prod/a", Version: 3, Detail: []byte(`{"x":1}`)}
		noErr(t, "AppendEvent", tx.AppendEvent(ctx, &e1))
		e2 = store.Event{At: at(2 * time.Second), Kind: "current_changed", CredentialID: "prod/b", Version: 4}
		return tx.AppendEvent(ctx, &e2)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListOutbox(ctx, 0)
		noErr(t, "ListOutbox", err)
		equal(t, "ListOutbox", got, []store.Event{e1, e2})
		got, err = tx.ListOutbox(ctx, 1)
		noErr(t, "ListOutbox", err)
		equal(t, "ListOutbox limit 1", got, []store.Event{e1})
		st, err := tx.NotifyStats(ctx)
		noErr(t, "NotifyStats", err)
		if st.Outbox != 2 || st.Pending != 0 || st.Oldest == nil || !st.Oldest.Equal(e1.At.Truncate(time.Microsecond)) {
			t.Errorf("NotifyStats = %+v, oldest %v; want 2 in the outbox since %v", st, st.Oldest, e1.At)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteOutbox(ctx, []int64{e1.Seq, 999999}) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListOutbox(ctx, 0)
		noErr(t, "ListOutbox", err)
		equal(t, "ListOutbox after delete", got, []store.Event{e2})
		return nil
	})

	// Deliveries.
	d := func(sub, event string, due time.Duration) *store.Delivery {
		return &store.Delivery{SubscriptionID: sub, EventID: event, Kind: "rotation_failed", CredentialID: "prod/a",
			Payload: []byte(`{"id":"` + event + `"}`), State: store.DeliveryPending, CreatedAt: at(0), UpdatedAt: at(0), DueAt: at(due), LeaseUntil: at(0)}
	}
	d1, d2, d3 := d("sub_b", "evt_1", 0), d("sub_b", "evt_2", time.Minute), d("sub_a", "evt_1", time.Second)
	update(t, s, func(tx store.Tx) error {
		for _, x := range []*store.Delivery{d1, d2, d3} {
			ok, err := tx.InsertDelivery(ctx, x)
			noErr(t, "InsertDelivery", err)
			if !ok || x.ID == 0 {
				t.Fatalf("InsertDelivery(%s, %s) = %v, ID %d", x.SubscriptionID, x.EventID, ok, x.ID)
			}
		}
		dup := d("sub_b", "evt_1", 0)
		ok, err := tx.InsertDelivery(ctx, dup)
		noErr(t, "InsertDelivery(duplicate)", err)
		if ok {
			t.Fatalf("InsertDelivery of a duplicate (subscription, event) reported an insert")
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetDelivery(ctx, d1.ID)
		noErr(t, "GetDelivery", err)
		equal(t, "GetDelivery", *got, *d1)
		_, err = tx.GetDelivery(ctx, 987654)
		wantErr(t, "GetDelivery(missing)", err, store.ErrNotFound)
		return nil
	})

	// Claim: due and unleased only, oldest due first; a second claimer at
	// the same moment gets nothing.
	var claimed []store.Delivery
	update(t, s, func(tx store.Tx) error {
		var err error
		claimed, err = tx.ClaimDeliveries(ctx, "one", at(2*time.Second), at(time.Minute), 10)
		return err
	})
	if len(claimed) != 2 || claimed[0].ID != d1.ID || claimed[1].ID != d3.ID || claimed[0].LeaseOwner != "one" {
		t.Fatalf("ClaimDeliveries = %+v, want d1 then d3 leased to one", claimed)
	}
	update(t, s, func(tx store.Tx) error {
		again, err := tx.ClaimDeliveries(ctx, "two", at(3*time.Second), at(time.Minute), 10)
		noErr(t, "ClaimDeliveries", err)
		if len(again) != 0 {
			t.Fatalf("ClaimDeliveries while leased = %+v", again)
		}
		// After the lease, another owner takes them; limit applies.
		again, err = tx.ClaimDeliveries(ctx, "two", at(time.Minute), at(2*time.Minute), 1)
		noErr(t, "ClaimDeliveries", err)
		if len(again) != 1 || again[0].ID != d1.ID || again[0].LeaseOwner != "two" {
			t.Fatalf("ClaimDeliveries after the lease = %+v", again)
		}
		return nil
	})

	// Update: delivered and dead rows are never claimed.
	d1.State, d1.Attempts, d1.LastStatus, d1.DeliveredAt, d1.UpdatedAt = store.DeliveryDelivered, 1, 204, ptr(at(time.Hour)), at(time.Hour)
	d1.LeaseOwner, d1.LeaseUntil = "", at(time.Hour)
	d3.State, d3.Attempts, d3.LastStatus, d3.LastError = store.DeliveryDead, 5, 500, "HTTP 500"
	update(t, s, func(tx store.Tx) error {
		noErr(t, "UpdateDelivery", tx.UpdateDelivery(ctx, d1))
		noErr(t, "UpdateDelivery", tx.UpdateDelivery(ctx, d3))
		missing := *d1
		missing.ID = 987654
		wantErr(t, "UpdateDelivery(missing)", tx.UpdateDelivery(ctx, &missing), store.ErrNotFound)
		again, err := tx.ClaimDeliveries(ctx, "three", at(24*time.Hour), at(25*time.Hour), 10)
		noErr(t, "ClaimDeliveries", err)
		if len(again) != 1 || again[0].ID != d2.ID {
			t.Fatalf("ClaimDeliveries = %+v, want only the pending d2", again)
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetDelivery(ctx, d1.ID)
		noErr(t, "GetDelivery", err)
		equal(t, "GetDelivery after update", *got, *d1)
		dead, err := tx.ListDeliveries(ctx, store.DeliveryFilter{State: store.DeliveryDead})
		noErr(t, "ListDeliveries", err)
		equal(t, "dead letters", dead, []store.Delivery{*d3})
		bySub, err := tx.ListDeliveries(ctx, store.DeliveryFilter{SubscriptionID: "sub_b"})
		noErr(t, "ListDeliveries", err)
		if len(bySub) != 2 || bySub[0].ID != d1.ID || bySub[1].ID != d2.ID {
			t.Fatalf("ListDeliveries(sub_b) = %+v", bySub)
		}
		page, err := tx.ListDeliveries(ctx, store.DeliveryFilter{After: d1.ID, Limit: 1})
		noErr(t, "ListDeliveries", err)
		if len(page) != 1 || page[0].ID <= d1.ID {
			t.Fatalf("ListDeliveries(after d1, limit 1) = %+v", page)
		}
		st, err := tx.NotifyStats(ctx)
		noErr(t, "NotifyStats", err)
		if st.Outbox != 1 || st.Pending != 1 || st.Dead != 1 {
			t.Errorf("NotifyStats = %+v, want outbox 1, pending 1, dead 1", st)
		}
		return nil
	})

	// Prune removes delivered rows delivered before the cutoff only; a
	// condition's row (its event ID holds a ':') stays until the second cutoff.
	cond := d("sub_b", "certificate_expiring:prod/a:v1", 0)
	cond.State, cond.DeliveredAt = store.DeliveryDelivered, ptr(at(time.Hour))
	update(t, s, func(tx store.Tx) error {
		_, err := tx.InsertDelivery(ctx, cond)
		noErr(t, "InsertDelivery(condition)", err)
		n, err := tx.PruneDeliveries(ctx, at(time.Hour), at(time.Hour))
		noErr(t, "PruneDeliveries", err)
		if n != 0 {
			t.Errorf("PruneDeliveries(at delivery) = %d, want 0", n)
		}
		n, err = tx.PruneDeliveries(ctx, at(2*time.Hour), at(time.Hour))
		noErr(t, "PruneDeliveries", err)
		if n != 1 {
			t.Errorf("PruneDeliveries = %d, want 1 (the event's, not the condition's)", n)
		}
		_, err = tx.GetDelivery(ctx, cond.ID)
		noErr(t, "GetDelivery(condition after prune)", err)
		n, err = tx.PruneDeliveries(ctx, at(2*time.Hour), at(2*time.Hour))
		noErr(t, "PruneDeliveries", err)
		if n != 1 {
			t.Errorf("PruneDeliveries past the condition cutoff = %d, want 1", n)
		}
		return nil
	})

	// Deleting a subscription deletes its deliveries; it is idempotent.
	update(t, s, func(tx store.Tx) error {
		noErr(t, "DeleteSubscription", tx.DeleteSubscription(ctx, "sub_b"))
		return tx.DeleteSubscription(ctx, "sub_b")
	})
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetSubscription(ctx, "sub_b")
		wantErr(t, "GetSubscription(deleted)", err, store.ErrNotFound)
		left, err := tx.ListDeliveries(ctx, store.DeliveryFilter{})
		noErr(t, "ListDeliveries", err)
		equal(t, "deliveries after delete", left, []store.Delivery{*d3})
		return nil
	})

	// Writes fail in a View.
	err = s.View(ctx, func(tx store.Tx) error {
		if tx.PutSubscription(ctx, &sub) == nil || tx.DeleteOutbox(ctx, []int64{1}) == nil {
			t.Errorf("notification writes succeeded in a View")
		}
		if _, err := tx.ClaimDeliveries(ctx, "x", at(0), at(0), 1); err == nil {
			t.Errorf("ClaimDeliveries succeeded in a View")
		}
		return nil
	})
	noErr(t, "View", err)
}
