package testenv

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// StoreServerDSN is the PostgreSQL server that holds test stores: the
// machine's server at 127.0.0.1:5432 with trust authentication
// ($NEBULA_TEST_POSTGRES_DSN overrides; its database is only used to create
// and drop others).
func StoreServerDSN() string {
	if dsn := os.Getenv("NEBULA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// StorePoolMaxConns is the pool size of a test store opened on PGStoreDB's
// DSN. Every package's tests, and on a busy machine a second copy of the
// suite, share the one server and its max_connections (100 by default): with
// the store's default of 16 (plus its listener), two copies of a concurrency
// test with two instances each took 68 of them at once and the rest of the
// suite was refused with 53300 "too many clients". Requests beyond the pool
// wait for a connection, which is what these tests exercise anyway.
const StorePoolMaxConns = 6

// PGStoreDB creates an empty database of its own for t on the store server,
// dropped (connections and all) when t ends, and returns a postgres:// DSN for
// it, with pool_max_conns=StorePoolMaxConns (WithPoolMaxConns changes it).
// Without a server the test skips, or fails under CI=true.
func PGStoreDB(t testing.TB) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(StoreServerDSN())
	if err != nil {
		t.Fatalf("testenv: NEBULA_TEST_POSTGRES_DSN: %v", err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	db := stdlib.OpenDB(*cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		unavailable(t, "no PostgreSQL server for stores at %s: %v", redactDSN(StoreServerDSN()), err)
	}
	name := UniqueName("nebula_store_")
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		db.Close()
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	return WithPoolMaxConns(withDatabase(StoreServerDSN(), name), StorePoolMaxConns)
}

// WithPoolMaxConns sets (or replaces) the store's pool_max_conns in a
// postgres:// URL or a key=value DSN.
func WithPoolMaxConns(dsn string, n int) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		q := u.Query()
		q.Set("pool_max_conns", strconv.Itoa(n))
		u.RawQuery = q.Encode()
		return u.String()
	}
	// A key=value DSN: pgx takes the last of a repeated key.
	return dsn + " pool_max_conns=" + strconv.Itoa(n)
}

func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}

func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(key=value DSN)"
}
