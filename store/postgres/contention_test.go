package postgres

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// TestHotRowRetriesEnd: on two servers, short writers increment one row in
// a loop (as dispatchers and schedulers do) while slower writers, holding
// their transaction open a little while as a rotation step does, increment
// it too: the worst case for serialization failures. Every write must
// succeed, because a writer that keeps losing then runs alone, and none may
// be lost.
func TestHotRowRetriesEnd(t *testing.T) {
	ctx := t.Context()
	dsn := newSchema(t)
	stores := []*Store{openDSN(t, dsn), openDSN(t, dsn)}
	const slow, each = 4, 5
	var (
		stop     atomic.Bool
		writes   atomic.Int64
		busy     atomic.Int64
		bg, fg   sync.WaitGroup
		firstErr = make(chan error, 1)
	)
	record := func(err error) {
		switch {
		case err == nil:
			writes.Add(1)
		case errors.Is(err, store.ErrBusy):
			busy.Add(1)
		default:
			select {
			case firstErr <- err:
			default:
			}
		}
	}
	for i := range 4 {
		st := stores[i%2]
		bg.Go(func() {
			for !stop.Load() {
				record(st.Update(ctx, func(tx store.Tx) error { return increment(ctx, tx, 0) }))
			}
		})
	}
	for i := range slow {
		st := stores[i%2]
		fg.Go(func() {
			for range each {
				record(st.Update(ctx, func(tx store.Tx) error { return increment(ctx, tx, 5*time.Millisecond) }))
			}
		})
	}
	fg.Wait()
	stop.Store(true)
	bg.Wait()
	select {
	case err := <-firstErr:
		t.Fatal(err)
	default:
	}
	if n := busy.Load(); n > 0 {
		t.Errorf("%d of %d writes gave up as busy; the retries of a writer that keeps losing must end", n, n+writes.Load())
	}
	var got int64
	if err := stores[0].View(ctx, func(tx store.Tx) error {
		v, err := tx.GetMeta(ctx, "counter")
		if err != nil {
			return err
		}
		got, err = strconv.ParseInt(string(v), 10, 64)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := writes.Load(); got != want {
		t.Errorf("counter = %d, want %d: an increment was lost", got, want)
	}
}

// increment adds one to the meta row "counter", holding the transaction
// open for hold between the read and the write.
func increment(ctx context.Context, tx store.Tx, hold time.Duration) error {
	n := 0
	v, err := tx.GetMeta(ctx, "counter")
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		if n, err = strconv.Atoi(string(v)); err != nil {
			return err
		}
	}
	time.Sleep(hold) // widens the window for a conflicting commit
	return tx.SetMeta(ctx, "counter", []byte(strconv.Itoa(n+1)))
}
