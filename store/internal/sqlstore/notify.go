package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// The tables of package notify (migration 0002 of each backend).

const (
	subscriptionCols = `id, prefix, config, kek_id, data_key, ciphertext, created_at, updated_at`
	deliveryCols     = `id, subscription_id, event_id, kind, credential_id, payload, state, attempts,
		last_status, last_error, created_at, updated_at, due_at, delivered_at, lease_owner, lease_until`
	outboxCols = `seq, at, kind, credential_id, version, detail`
)

var notifyQueryText = map[query]string{
	qPutSubscription: `INSERT INTO notify_subscriptions (` + subscriptionCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, config = excluded.config,
			kek_id = excluded.kek_id, data_key = excluded.data_key, ciphertext = excluded.ciphertext,
			created_at = excluded.created_at, updated_at = excluded.updated_at`,
	qGetSubscription:              `SELECT ` + subscriptionCols + ` FROM notify_subscriptions WHERE id = ?`,
	qListSubscriptions:            `SELECT ` + subscriptionCols + ` FROM notify_subscriptions ORDER BY id`,
	qDeleteSubscription:           `DELETE FROM notify_subscriptions WHERE id = ?`,
	qDeleteSubscriptionDeliveries: `DELETE FROM notify_deliveries WHERE subscription_id = ?`,
	qCountSubscriptionKeys:        `SELECT COUNT(*) FROM notify_subscriptions WHERE kek_id = ?`,

	// Written by AppendEvent in the event's own transaction; nothing is
	// written while there is no subscription.
	qAppendOutbox: `INSERT INTO notify_outbox (` + outboxCols + `)
		SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM notify_subscriptions)`,
	qListOutbox:   `SELECT ` + outboxCols + ` FROM notify_outbox ORDER BY seq LIMIT ?`,
	qDeleteOutbox: `DELETE FROM notify_outbox WHERE seq = ?`,

	qInsertDelivery: `INSERT INTO notify_deliveries (subscription_id, event_id, kind, credential_id, payload,
			state, attempts, last_status, last_error, created_at, updated_at, due_at, delivered_at,
			lease_owner, lease_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (subscription_id, event_id) DO NOTHING RETURNING id`,
	qGetDelivery: `SELECT ` + deliveryCols + ` FROM notify_deliveries WHERE id = ?`,
	qUpdateDelivery: `UPDATE notify_deliveries SET subscription_id = ?, event_id = ?, kind = ?,
			credential_id = ?, payload = ?, state = ?, attempts = ?, last_status = ?, last_error = ?,
			created_at = ?, updated_at = ?, due_at = ?, delivered_at = ?, lease_owner = ?, lease_until = ?
		WHERE id = ?`,
	// Arguments: owner, leaseUntil, now, now, limit.
	qClaimDeliveries: `UPDATE notify_deliveries SET lease_owner = ?, lease_until = ?
		WHERE id IN (SELECT id FROM notify_deliveries
			WHERE state = 'pending' AND due_at <= ? AND lease_until <= ?
			ORDER BY due_at, id LIMIT ?)
		RETURNING ` + deliveryCols,
	// Arguments: state, state, subscription, subscription, after, limit.
	qListDeliveries: `SELECT ` + deliveryCols + ` FROM notify_deliveries
		WHERE (? = '' OR state = ?) AND (? = '' OR subscription_id = ?) AND id > ?
		ORDER BY id LIMIT ?`,
	// Arguments: before, conditionsBefore.
	qPruneDeliveries: `DELETE FROM notify_deliveries WHERE state = 'delivered'
		AND ((delivered_at < ? AND event_id NOT LIKE '%:%') OR delivered_at < ?)`,
	qNotifyStats: `SELECT (SELECT COUNT(*) FROM notify_outbox),
		(SELECT COUNT(*) FROM notify_deliveries WHERE state = 'pending'),
		(SELECT COUNT(*) FROM notify_deliveries WHERE state = 'dead'),
		(SELECT MIN(at) FROM notify_outbox),
		(SELECT MIN(created_at) FROM notify_deliveries WHERE state = 'pending')`,
}

func init() {
	for q, text := range notifyQueryText {
		queryText[q] = text
	}
}

func scanSubscription(s scanner, v *store.Subscription) error {
	return s.Scan(&v.ID, &v.Prefix, &v.Config, &v.KEKID, &v.DataKey, &v.Ciphertext,
		timeCol{&v.CreatedAt}, timeCol{&v.UpdatedAt})
}

func scanDelivery(s scanner, d *store.Delivery) error {
	return s.Scan(&d.ID, &d.SubscriptionID, &d.EventID, &d.Kind, &d.CredentialID, &d.Payload,
		&d.State, &d.Attempts, &d.LastStatus, &d.LastError, timeCol{&d.CreatedAt},
		timeCol{&d.UpdatedAt}, timeCol{&d.DueAt}, nullTimeCol{&d.DeliveredAt}, &d.LeaseOwner,
		timeCol{&d.LeaseUntil})
}

func (t *Tx) PutSubscription(ctx context.Context, s *store.Subscription) error {
	if err := t.writable("put subscription"); err != nil {
		return err
	}
	_, err := t.exec(ctx, qPutSubscription, s.ID, s.Prefix, blob(s.Config), s.KEKID, blob(s.DataKey),
		blob(s.Ciphertext), t.time(s.CreatedAt), t.time(s.UpdatedAt))
	if err != nil {
		return t.fail(err, "put subscription %q", s.ID)
	}
	return nil
}

func (t *Tx) GetSubscription(ctx context.Context, id string) (*store.Subscription, error) {
	s := new(store.Subscription)
	if err := scanSubscription(t.queryRow(ctx, qGetSubscription, id), s); err != nil {
		return nil, t.fail(err, "get subscription %q", id)
	}
	return s, nil
}

func (t *Tx) ListSubscriptions(ctx context.Context) ([]store.Subscription, error) {
	rows, err := t.query(ctx, qListSubscriptions)
	if err != nil {
		return nil, t.fail(err, "list subscriptions")
	}
	ss, err := collect(rows, scanSubscription)
	if err != nil {
		return nil, t.fail(err, "list subscriptions")
	}
	return ss, nil
}

// DeleteSubscription is idempotent.
func (t *Tx) DeleteSubscription(ctx context.Context, id string) error {
	if err := t.writable("delete subscription"); err != nil {
		return err
	}
	if _, err := t.exec(ctx, qDeleteSubscriptionDeliveries, id); err != nil {
		return t.fail(err, "delete deliveries of subscription %q", id)
	}
	if _, err := t.exec(ctx, qDeleteSubscription, id); err != nil {
		return t.fail(err, "delete subscription %q", id)
	}
	return nil
}

// countSubscriptionKeys counts the data keys kekID wraps for subscriptions,
// so that CountVersionsByKEK keeps a KEK they need from being dropped.
func (t *Tx) countSubscriptionKeys(ctx context.Context, kekID string) (int, error) {
	var n int
	if err := t.queryRow(ctx, qCountSubscriptionKeys, kekID).Scan(&n); err != nil {
		return 0, t.fail(err, "count subscriptions by kek %q", kekID)
	}
	return n, nil
}

// appendOutbox copies e into the outbox if any subscription exists.
func (t *Tx) appendOutbox(ctx context.Context, e *Event) error {
	if _, err := t.exec(ctx, qAppendOutbox, e.Seq, t.time(e.At), e.Kind, e.CredentialID, e.Version, blob(e.Detail)); err != nil {
		return t.fail(err, "append outbox")
	}
	return nil
}

func (t *Tx) ListOutbox(ctx context.Context, n int) ([]Event, error) {
	rows, err := t.query(ctx, qListOutbox, limit(n))
	if err != nil {
		return nil, t.fail(err, "list outbox")
	}
	es, err := collect(rows, scanEvent)
	if err != nil {
		return nil, t.fail(err, "list outbox")
	}
	return es, nil
}

func (t *Tx) DeleteOutbox(ctx context.Context, seqs []int64) error {
	if err := t.writable("delete outbox"); err != nil {
		return err
	}
	for _, seq := range seqs {
		if _, err := t.exec(ctx, qDeleteOutbox, seq); err != nil {
			return t.fail(err, "delete outbox %d", seq)
		}
	}
	return nil
}

func (t *Tx) deliveryArgs(d *store.Delivery) []any {
	return []any{d.SubscriptionID, d.EventID, d.Kind, d.CredentialID, blob(d.Payload), d.State,
		d.Attempts, d.LastStatus, d.LastError, t.time(d.CreatedAt), t.time(d.UpdatedAt),
		t.time(d.DueAt), t.nullTime(d.DeliveredAt), d.LeaseOwner, t.time(d.LeaseUntil)}
}

func (t *Tx) InsertDelivery(ctx context.Context, d *store.Delivery) (bool, error) {
	if err := t.writable("insert delivery"); err != nil {
		return false, err
	}
	rows, err := t.query(ctx, qInsertDelivery, t.deliveryArgs(d)...)
	if err != nil {
		return false, t.fail(err, "insert delivery %q for %q", d.EventID, d.SubscriptionID)
	}
	ids, err := collect(rows, func(s scanner, id *int64) error { return s.Scan(id) })
	if err != nil {
		return false, t.fail(err, "insert delivery %q for %q", d.EventID, d.SubscriptionID)
	}
	if len(ids) == 0 {
		return false, nil
	}
	d.ID = ids[0]
	return true, nil
}

func (t *Tx) GetDelivery(ctx context.Context, id int64) (*store.Delivery, error) {
	d := new(store.Delivery)
	if err := scanDelivery(t.queryRow(ctx, qGetDelivery, id), d); err != nil {
		return nil, t.fail(err, "get delivery %d", id)
	}
	return d, nil
}

func (t *Tx) UpdateDelivery(ctx context.Context, d *store.Delivery) error {
	if err := t.writable("update delivery"); err != nil {
		return err
	}
	n, err := t.exec(ctx, qUpdateDelivery, append(t.deliveryArgs(d), d.ID)...)
	if err != nil {
		return t.fail(err, "update delivery %d", d.ID)
	}
	if n == 0 {
		return t.fail(sql.ErrNoRows, "update delivery %d", d.ID)
	}
	return nil
}

func (t *Tx) ClaimDeliveries(ctx context.Context, owner string, now, leaseUntil time.Time, n int) ([]store.Delivery, error) {
	if err := t.writable("claim deliveries"); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, qClaimDeliveries, owner, t.time(leaseUntil), t.time(now), t.time(now), limit(n))
	if err != nil {
		return nil, t.fail(err, "claim deliveries")
	}
	ds, err := collect(rows, scanDelivery)
	if err != nil {
		return nil, t.fail(err, "claim deliveries")
	}
	sortDeliveries(ds)
	return ds, nil
}

// sortDeliveries orders by due time, then ID (RETURNING has no order).
func sortDeliveries(ds []store.Delivery) {
	slices.SortFunc(ds, func(a, b store.Delivery) int {
		if c := a.DueAt.Compare(b.DueAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

func (t *Tx) ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error) {
	rows, err := t.query(ctx, qListDeliveries, f.State, f.State, f.SubscriptionID, f.SubscriptionID, f.After, limit(f.Limit))
	if err != nil {
		return nil, t.fail(err, "list deliveries")
	}
	ds, err := collect(rows, scanDelivery)
	if err != nil {
		return nil, t.fail(err, "list deliveries")
	}
	return ds, nil
}

func (t *Tx) PruneDeliveries(ctx context.Context, before, conditionsBefore time.Time) (int, error) {
	if err := t.writable("prune deliveries"); err != nil {
		return 0, err
	}
	n, err := t.exec(ctx, qPruneDeliveries, t.time(before), t.time(conditionsBefore))
	if err != nil {
		return 0, t.fail(err, "prune deliveries")
	}
	return int(n), nil
}

func (t *Tx) NotifyStats(ctx context.Context) (*store.NotifyStats, error) {
	var (
		st                  store.NotifyStats
		oldOutbox, oldDeliv *time.Time
	)
	err := t.queryRow(ctx, qNotifyStats).Scan(&st.Outbox, &st.Pending, &st.Dead,
		nullTimeCol{&oldOutbox}, nullTimeCol{&oldDeliv})
	if err != nil {
		return nil, t.fail(err, "notify stats")
	}
	st.Oldest = oldOutbox
	if oldDeliv != nil && (st.Oldest == nil || oldDeliv.Before(*st.Oldest)) {
		st.Oldest = oldDeliv
	}
	return &st, nil
}
