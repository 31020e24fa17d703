package sqlstore

import (
	"context"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Instances.

func scanInstance(s scanner, in *store.Instance) error {
	return s.Scan(&in.ID, &in.Host, &in.Address, &in.Version, timeCol{&in.StartedAt}, timeCol{&in.LastHeartbeat})
}

// PutInstance inserts or replaces the row of in.ID, keeping the StartedAt of
// an existing row.
func (t *Tx) PutInstance(ctx context.Context, in *store.Instance) error {
	if err := t.writable("put instance"); err != nil {
		return err
	}
	_, err := t.exec(ctx, qPutInstance, in.ID, in.Host, in.Address, in.Version, t.time(in.StartedAt), t.time(in.LastHeartbeat))
	if err != nil {
		return t.fail(err, "put instance %q", in.ID)
	}
	return nil
}

// ListInstances returns every instance row, ordered by ID.
func (t *Tx) ListInstances(ctx context.Context) ([]store.Instance, error) {
	rows, err := t.query(ctx, qListInstances)
	if err != nil {
		return nil, t.fail(err, "list instances")
	}
	out, err := collect(rows, scanInstance)
	if err != nil {
		return nil, t.fail(err, "list instances")
	}
	return out, nil
}

// DeleteInstancesSeenBefore is idempotent.
func (t *Tx) DeleteInstancesSeenBefore(ctx context.Context, before time.Time) (int, error) {
	if err := t.writable("delete instances"); err != nil {
		return 0, err
	}
	n, err := t.exec(ctx, qDeleteInstancesSeenBefore, t.time(before))
	if err != nil {
		return 0, t.fail(err, "delete instances")
	}
	return int(n), nil
}
