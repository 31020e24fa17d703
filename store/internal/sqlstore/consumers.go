package sqlstore

import (
	"context"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Consumers.

func scanConsumer(s scanner, c *store.Consumer) error {
	var refresh, drain int64
	if err := s.Scan(&c.ID, &c.CredentialID, &c.Name, &c.Host, &c.Kind, &c.Version, &c.ActionOK,
		&c.ActionError, &c.TokenID, timeCol{&c.FirstSeen}, timeCol{&c.LastSeen}, &refresh, &drain); err != nil {
		return err
	}
	c.Refresh, c.DrainTimeout = time.Duration(refresh)*time.Millisecond, time.Duration(drain)*time.Millisecond
	return nil
}

// PutConsumer inserts or replaces the row of (c.ID, c.CredentialID), keeping
// the FirstSeen of an existing row.
func (t *Tx) PutConsumer(ctx context.Context, c *store.Consumer) error {
	if err := t.writable("put consumer"); err != nil {
		return err
	}
	_, err := t.exec(ctx, qPutConsumer, c.ID, c.CredentialID, c.Name, c.Host, c.Kind, c.Version,
		c.ActionOK, c.ActionError, c.TokenID, t.time(c.FirstSeen), t.time(c.LastSeen),
		c.Refresh.Milliseconds(), c.DrainTimeout.Milliseconds())
	if err != nil {
		return t.fail(err, "put consumer %q of %q", c.ID, c.CredentialID)
	}
	return nil
}

// ListConsumers returns the consumers of credentialID ("" for every credential).
func (t *Tx) ListConsumers(ctx context.Context, credentialID string) ([]store.Consumer, error) {
	var (
		rows rowSet
		err  error
	)
	if credentialID == "" {
		rows, err = t.query(ctx, qListAllConsumers)
	} else {
		rows, err = t.query(ctx, qListConsumers, credentialID)
	}
	if err != nil {
		return nil, t.fail(err, "list consumers")
	}
	cs, err := collect(rows, scanConsumer)
	if err != nil {
		return nil, t.fail(err, "list consumers")
	}
	return cs, nil
}

// DeleteConsumersSeenBefore is idempotent.
func (t *Tx) DeleteConsumersSeenBefore(ctx context.Context, before time.Time) (int, error) {
	if err := t.writable("delete consumers"); err != nil {
		return 0, err
	}
	n, err := t.exec(ctx, qDeleteConsumersSeenBefore, t.time(before))
	if err != nil {
		return 0, t.fail(err, "delete consumers")
	}
	return int(n), nil
}
