package sqlswap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/consumer/sqlswap"
)

// A connector whose Source still serves a version a zero-grace rotation
// retired: the refused login (MariaDB 1045 for a dropped dual password;
// PostgreSQL 28P01/28000 for a retired alternating user) refetches past the
// cache and retries once with the new version. Without a Refresher nothing
// newer is found and the query fails.
func TestRefetchOnRefusedLogin(t *testing.T) {
	m := consumertest.Manager(t)
	ctx := context.Background()
	my := consumertest.MySQLCredential(t, m)
	pg := consumertest.PostgresCredential(t, m, consumertest.PGOptions{})
	targets := []struct {
		name, id, probe string
		drv             sqlswap.Driver
		want            func(error) bool
	}{
		{"mariadb", my.ID, "SELECT count(*) FROM `" + my.Database + "`.`" + my.Table + "`", sqlswap.MySQL(nil), func(err error) bool {
			var me *mysql.MySQLError
			return errors.As(err, &me) && me.Number == 1045
		}},
		{"postgres", pg.ID, "SELECT count(*) FROM " + pgx.Identifier{pg.Table}.Sanitize(), sqlswap.Postgres(""), func(err error) bool {
			var pe *pgconn.PgError
			return errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
		}},
	}
	src := consumer.FromManager(m)
	defer src.Close()
	for _, tg := range targets {
		for _, refresh := range []bool{true, false} {
			name := tg.name
			if !refresh {
				name += "/no refresher"
			}
			t.Run(name, func(t *testing.T) {
				stale := &consumertest.Stale{Inner: src}
				var s consumer.Source = stale
				if !refresh {
					s = consumertest.NoRefresh{S: stale}
				}
				db, c := open(t, s, tg.id, tg.drv, time.Minute, newDrains())
				v := consumertest.Rotate(t, m, tg.id, 0)
				var n int
				err := db.QueryRowContext(ctx, tg.probe).Scan(&n)
				st := c.RefetchStats()
				if !refresh {
					if !tg.want(err) {
						t.Fatalf("query with a retired version: %v, want the login refused", err)
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
				if c.Version() != v || c.Stats()[v] != 1 {
					t.Fatalf("connector on version %d (want %d), stats %v", c.Version(), v, c.Stats())
				}
			})
		}
	}
}
