package credential

import (
	"context"
	"errors"
	"fmt"

	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// PutItem is one credential of a batch write (PutMany).
type PutItem struct {
	ID string
	PutRequest
}

// PutResult is the outcome of one PutItem: the stored version, or why it
// was not written.
type PutResult struct {
	ID      string
	Version int
	Err     error
}

// ValidatePut checks a put before any I/O: the ID, type, values and
// settings. Put and PutMany call it; an importer's dry run can too.
func (m *Manager) ValidatePut(id string, req PutRequest) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := ValidateType(req.Type); err != nil {
		return err
	}
	if err := ValidateValues(req.Type, req.Fields, req.Secret); err != nil {
		return err
	}
	if req.Settings != nil {
		if err := req.Settings.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if err := m.engine.CheckSettings(string(req.Type), req.Fields, *req.Settings); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

// PutMany stores a new version of each item in one transaction, each exactly
// as Put would (same checks, history, audit entry and event, and the same
// permission checks on what a credential references). An item that fails is
// left out and reported in its result; the others are written. Results are
// in the order of items. The returned error is for the batch as a whole
// (store unreachable, context cancelled): then nothing was written.
func (m *Manager) PutMany(ctx context.Context, items []PutItem) ([]PutResult, error) {
	return m.putMany(ctx, items, false)
}

// PutManyDryRun reports what PutMany would do with items against the store
// as it is now, without writing anything: each result has the version the
// item would get (1: a new credential; more: a new version of an existing
// one) or the error that would refuse it (permissions and bindings
// included). It runs the same transaction and rolls it back.
func (m *Manager) PutManyDryRun(ctx context.Context, items []PutItem) ([]PutResult, error) {
	return m.putMany(ctx, items, true)
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run: rolled back")

func (m *Manager) putMany(ctx context.Context, items []PutItem, dryRun bool) ([]PutResult, error) {
	res := make([]PutResult, len(items))
	live := make([]int, 0, len(items))
	for i, it := range items {
		res[i].ID = it.ID
		if err := m.ValidatePut(it.ID, it.PutRequest); err != nil {
			res[i].Err = err
			continue
		}
		live = append(live, i)
	}
	// Each round writes every live item in one transaction (the same ID
	// twice is two versions, in order). An item whose
	// write fails aborts the round; it is dropped with its error and the
	// round is repeated without it, so one bad item costs one retry, never
	// a half-written batch.
	for attempt := 0; len(live) > 0; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		failed := -1
		var failErr error
		written := make([]int, 0, len(live))
		err := m.st.Update(ctx, func(tx store.Tx) error {
			written = written[:0]
			failed, failErr = -1, nil
			for _, i := range live {
				c, err := m.put(ctx, tx, items[i].ID, items[i].PutRequest)
				if err != nil {
					failed, failErr = i, err
					return errItemFailed
				}
				res[i].Version = c.Version
				written = append(written, i)
			}
			if dryRun {
				return errDryRun
			}
			return nil
		})
		switch {
		case dryRun && errors.Is(err, errDryRun):
			return res, nil
		case err == nil:
			for _, i := range written {
				m.engine.Notify(rotation.Event{Kind: rotation.EventCurrentChanged, CredentialID: items[i].ID, Version: res[i].Version})
			}
			return res, nil
		case errors.Is(err, errItemFailed) && failed >= 0:
			if errors.Is(failErr, errVersionRace) && attempt < 5 {
				continue // a concurrent writer took the version: try again
			}
			res[failed].Err = fmt.Errorf("put %s: %w", items[failed].ID, failErr)
			res[failed].Version = 0
			next := live[:0:0]
			for _, i := range live {
				if i != failed {
					next = append(next, i)
				}
			}
			live = next
			for _, i := range live {
				res[i].Version = 0
			}
		default:
			return nil, err
		}
	}
	return res, nil
}

var errItemFailed = errors.New("batch item failed")
