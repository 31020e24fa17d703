package pgxswap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
)

// A pool whose Source still serves the old version after a zero-grace
// rotation retired it (the change has not reached it): the server refuses
// the old login, the pool refetches past the cache and logs in with the new
// version once. Without a Refresher the refetch finds nothing newer and the
// query fails, so the test can tell the two apart.
func TestRefetchOnRefusedLogin(t *testing.T) {
	m := consumertest.Manager(t)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{})
	src := consumer.FromManager(m)
	defer src.Close()
	ctx := context.Background()
	probe := "SELECT count(*) FROM " + pgx.Identifier{pg.Table}.Sanitize()

	for _, tc := range []struct {
		name    string
		refresh bool
	}{{"refresher", true}, {"no refresher", false}} {
		t.Run(tc.name, func(t *testing.T) {
			stale := &consumertest.Stale{Inner: src}
			var s consumer.Source = stale
			if !tc.refresh {
				s = consumertest.NoRefresh{S: stale}
			}
			p := newPool(t, s, pg.ID, time.Minute, newDrains(), testenv.UniqueName("refetch-"))
			old := p.Version()
			v := consumertest.Rotate(t, m, pg.ID, 0) // the old user is retired at once

			// Each method that connects goes through the refetch.
			var n int
			err := p.QueryRow(ctx, probe).Scan(&n)
			st := p.RefetchStats()
			if !tc.refresh {
				var pe *pgconn.PgError
				if err == nil || !errors.As(err, &pe) || (pe.Code != "28P01" && pe.Code != "28000") {
					t.Fatalf("query with version %d after it was retired: %v, want 28P01 or 28000", old, err)
				}
				if st != (consumer.RefetchStats{Refused: 1}) {
					t.Fatalf("stats %+v, want one refusal and no retry", st)
				}
				return
			}
			if err != nil {
				t.Fatalf("query after the rotation: %v", err)
			}
			if st != (consumer.RefetchStats{Refused: 1, Retried: 1, Recovered: 1}) {
				t.Fatalf("stats %+v, want one refusal, retried and recovered", st)
			}
			if stale.Refreshes() != 1 || p.Version() != v || p.Stats()[v] != 1 {
				t.Fatalf("refreshes %d, pool version %d (want %d), stats %v", stale.Refreshes(), p.Version(), v, p.Stats())
			}
			// The other methods use the refetched version without a refusal.
			if _, err := p.Exec(ctx, probe); err != nil {
				t.Fatal(err)
			}
			br := p.SendBatch(ctx, &pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: probe}}})
			if _, err := br.Exec(); err != nil {
				t.Fatal(err)
			}
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}
			if st := p.RefetchStats(); st.Refused != 1 {
				t.Fatalf("stats %+v after more queries", st)
			}
		})
	}
}
