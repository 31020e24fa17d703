package testenv

import (
	"context"
	"net/url"
	"os"
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

// PGStoreDB creates an empty database of its own for t on the store server,
// dropped (connections and all) when t ends, and returns a postgres:// DSN for
// it. Without a server the test skips, or fails under CI=true.
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
	return withDatabase(StoreServerDSN(), name)
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
