package consumer_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/consumertest"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// BenchmarkRotationFailures measures what applications see during rotations:
// W workers each read the current version from a consumer.Source (the
// in-process ManagerSource, which hears every change at once), open a new
// connection with it, run SELECT 1 and close; a rotation starts every 2 s.
// It reports failed logins per rotation for each strategy: in_place and
// alternating on a scram-sha-256 PostgreSQL cluster, dual on MariaDB. Each
// runs twice: "plain" workers give up on a refused login, "refetch" workers
// refetch past the cache and retry once, as consumer/pgxswap and sqlswap do.
//
//	go test -run '^$' -bench RotationFailures -benchtime 10x ./consumer/
//
// b.N is the number of rotations per case.
func BenchmarkRotationFailures(b *testing.B) {
	const workers = 8
	const every = 2 * time.Second
	for _, st := range []rotator.Strategy{rotator.InPlace, rotator.Alternating, rotator.Dual} {
		for _, refetch := range []bool{false, true} {
			mode := "plain"
			if refetch {
				mode = "refetch"
			}
			b.Run(fmt.Sprintf("%s/%s", st, mode), func(b *testing.B) {
				m := consumertest.Manager(b)
				id, connect := windowCredential(b, m, st)
				src := consumer.FromManager(m)
				defer src.Close()
				var queries, failures, retried atomic.Int64
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				var firstErr atomic.Value
				for range workers {
					wg.Go(func() {
						for ctx.Err() == nil {
							c, err := src.Current(ctx, id)
							if err == nil {
								err = connect(ctx, c)
								if err != nil && refetch && refusedLogin(err) && ctx.Err() == nil {
									if n, rerr := consumer.Refetch(ctx, src, id); rerr == nil && n.Version != c.Version {
										retried.Add(1)
										err = connect(ctx, n)
									}
								}
							}
							if ctx.Err() != nil {
								return
							}
							queries.Add(1)
							if err != nil {
								failures.Add(1)
								firstErr.CompareAndSwap(nil, err.Error())
							}
						}
					})
				}
				time.Sleep(500 * time.Millisecond)
				base := failures.Load()
				// The rotation every 2 s is given a short grace so that it ends
				// (and is retired) before the next one starts.
				grace := 500 * time.Millisecond
				if st == rotator.InPlace {
					grace = 0
				}
				rotations := 0
				start := time.Now()
				for b.Loop() {
					next := time.Now().Add(every)
					if _, err := m.Rotate(ctx, id, credential.RotateOptions{Grace: &grace, Reason: "bench"}); err != nil {
						b.Fatalf("rotation %d: %v", rotations+1, err)
					}
					consumertest.Retire(b, m, id)
					rotations++
					time.Sleep(time.Until(next))
				}
				elapsed := time.Since(start)
				time.Sleep(200 * time.Millisecond)
				cancel()
				wg.Wait()
				f := failures.Load() - base
				b.ReportMetric(float64(f)/float64(rotations), "failures/rotation")
				b.ReportMetric(float64(retried.Load())/float64(rotations), "retries/rotation")
				b.ReportMetric(float64(queries.Load())/elapsed.Seconds(), "logins/s")
				if e, ok := firstErr.Load().(string); ok {
					b.Logf("first failure: %s", e)
				}
			})
		}
	}
}

// refusedLogin reports a login refused for the credential itself.
func refusedLogin(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "28P01" || pe.Code == "28000"
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1045
}

// windowCredential stores a credential rotated with strategy st and returns
// its ID and a function that opens a new connection with a version, runs
// SELECT 1 and closes.
func windowCredential(b *testing.B, m *credential.Manager, st rotator.Strategy) (string, func(context.Context, consumer.Credential) error) {
	ctx := context.Background()
	switch st {
	case rotator.Dual:
		my := consumertest.MySQLCredential(b, m)
		return my.ID, func(ctx context.Context, c consumer.Credential) error {
			cfg := mysql.NewConfig()
			cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(c.Field("host"), c.Field("port"))
			cfg.User, cfg.Passwd, cfg.DBName = c.Field("username"), c.Secret["password"].Reveal(), c.Field("database")
			conn, err := mysql.NewConnector(cfg)
			if err != nil {
				return err
			}
			db := sql.OpenDB(conn)
			defer db.Close()
			var n int
			return db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
		}
	case rotator.Alternating:
		pg := consumertest.PostgresCredential(b, m, consumertest.PGOptions{})
		return pg.ID, pgConnect
	default: // in_place: a role that changes its own password
		pg := testenv.Postgres(b)
		pw := testenv.UniqueName("pw-")
		role := pg.CreateRole(b, testenv.UniqueName("nc_inplace_"), pw, "LOGIN")
		id := "app/" + testenv.UniqueName("inplace-")
		if _, err := m.Put(ctx, id, credential.PutRequest{Type: credential.Postgres,
			Fields:   map[string]any{"host": pg.Host, "port": pg.Port, "database": pg.Database, "username": role},
			Secret:   secret.Map{"password": secret.New(pw)},
			Settings: &credential.Settings{Strategy: rotator.InPlace}}); err != nil {
			b.Fatal(err)
		}
		return id, pgConnect
	}
}

func pgConnect(ctx context.Context, c consumer.Credential) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=%s sslmode=disable", c.Field("host"), c.Field("port"), c.Field("database")))
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = c.Field("username"), c.Secret["password"].Reveal()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&n)
}
