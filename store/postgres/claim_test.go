package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// TestConcurrentClaimsDisjoint: four stores (four servers, each its own
// connection pool) claim the same queue of deliveries at once; every
// delivery is leased to exactly one of them. SERIALIZABLE writes make the
// second claimer of a row fail and retry, after which it sees the lease.
func TestConcurrentClaimsDisjoint(t *testing.T) {
	dsn := testenv.PGStoreDB(t)
	ctx := context.Background()
	var stores []store.Store
	for range 4 {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	const n = 300
	if err := stores[0].Update(ctx, func(tx store.Tx) error {
		for i := range n {
			d := &store.Delivery{SubscriptionID: "sub_claim", EventID: fmt.Sprintf("evt_%d", i), Kind: "rotation_committed",
				Payload: []byte(`{}`), State: store.DeliveryPending, CreatedAt: now, UpdatedAt: now, DueAt: now, LeaseUntil: now}
			if _, err := tx.InsertDelivery(ctx, d); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		owner = map[int64]string{}
		dups  []string
		wg    sync.WaitGroup
		errs  = make(chan error, len(stores)*2)
	)
	for i, st := range stores {
		for g := range 2 { // two claimers per server, like concurrent rounds
			name := fmt.Sprintf("server-%d/%d", i, g)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var got []store.Delivery
					err := st.Update(ctx, func(tx store.Tx) error {
						var err error
						got, err = tx.ClaimDeliveries(ctx, name, now, now.Add(time.Hour), 7)
						return err
					})
					if errors.Is(err, store.ErrBusy) {
						continue // the dispatcher's next round claims again
					}
					if err != nil {
						errs <- err
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, d := range got {
						if prev, ok := owner[d.ID]; ok {
							dups = append(dups, fmt.Sprintf("delivery %d leased to %s and %s", d.ID, prev, name))
						}
						owner[d.ID] = name
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, d := range dups {
		t.Error(d)
	}
	if len(owner) != n {
		t.Fatalf("%d of %d deliveries claimed", len(owner), n)
	}
	byOwner := map[string]int{}
	for _, o := range owner {
		byOwner[o]++
	}
	t.Logf("claims per claimer: %v", byOwner)
}
