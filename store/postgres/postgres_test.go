package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/storetest"
)

// The tests talk to a real server: NEBULA_TEST_POSTGRES_DSN, or the local
// one (trust auth, database test). Each test gets a fresh schema, dropped
// afterwards. Without a server the tests skip, except under CI=true, where
// a missing server fails.

const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func testDSN() string {
	if dsn := os.Getenv("NEBULA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return defaultDSN
}

var (
	adminOnce sync.Once
	adminDB   *sql.DB
	adminErr  error
)

// admin returns a connection to the test server, skipping (or, under CI,
// failing) the test if there is none.
func admin(t testing.TB) *sql.DB {
	t.Helper()
	adminOnce.Do(func() {
		cfg, err := pgx.ParseConfig(testDSN())
		if err != nil {
			adminErr = err
			return
		}
		cfg.ConnectTimeout = 3 * time.Second
		db := stdlib.OpenDB(*cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			adminErr = err
			return
		}
		adminDB = db
	})
	if adminErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL test server unreachable (CI=true): %v", adminErr)
		}
		t.Skipf("PostgreSQL test server unreachable (with CI=true this fails): %v", adminErr)
	}
	return adminDB
}

// withSearchPath returns dsn with search_path set to schema.
func withSearchPath(t testing.TB, dsn, schema string) string {
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN: %v", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// newSchema creates an empty schema, dropped when t ends, and returns a DSN
// that uses it.
func newSchema(t testing.TB) string {
	t.Helper()
	db := admin(t)
	schema := "nebula_test_" + strings.ToLower(rand.Text()[:12])
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return withSearchPath(t, testDSN(), schema)
}

func openDSN(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openDSN(t, newSchema(t)) })
}

// rotationOpenFlag reads credentials.rotation_open in the store at dsn.
func rotationOpenFlag(t *testing.T, dsn string) storetest.Flag {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	return func(t *testing.T, id string) bool {
		t.Helper()
		var open bool
		if err := db.QueryRowContext(t.Context(), `SELECT rotation_open FROM credentials WHERE id = $1`, id).Scan(&open); err != nil {
			t.Fatalf("read rotation_open of %s: %v", id, err)
		}
		return open
	}
}

func TestRotationOpenFlag(t *testing.T) {
	dsn := newSchema(t)
	storetest.RunRotationOpenFlag(t, openDSN(t, dsn), rotationOpenFlag(t, dsn))
}

// TestUpgradeRotationOpen: migration 8 sets the open-rotation flag of a
// store written by a binary before it.
func TestUpgradeRotationOpen(t *testing.T) {
	dsn := newSchema(t)
	flag := rotationOpenFlag(t, dsn)
	storetest.RunUpgrade(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}, func(t *testing.T) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		db := stdlib.OpenDB(*cfg)
		defer db.Close()
		if _, err := db.ExecContext(t.Context(), `
			DROP TRIGGER rotations_open_insert ON rotations;
			DROP TRIGGER rotations_open_update ON rotations;
			DROP TRIGGER rotations_open_delete ON rotations;
			DROP TRIGGER credentials_rotation_open ON credentials;
			DROP FUNCTION nebula_rotation_open();
			DROP FUNCTION nebula_credential_rotation_open();
			DROP FUNCTION nebula_set_rotation_open(TEXT);
			ALTER TABLE credentials DROP COLUMN rotation_open;
			DELETE FROM schema_version WHERE version = 8`); err != nil {
			t.Fatalf("downgrade: %v", err)
		}
	}, flag)
}

// TestReopen checks that committed data survives reopening and that
// migrating twice, also concurrently, is harmless.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	dsn := newSchema(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			s, err := Open(ctx, dsn)
			if err != nil {
				t.Errorf("concurrent Open: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	s := openDSN(t, dsn)
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openDSN(t, dsn)
	if err := s.View(ctx, func(tx store.Tx) error {
		v, err := tx.GetMeta(ctx, "k")
		if err == nil && string(v) != "v" {
			err = fmt.Errorf("got %q", v)
		}
		return err
	}); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := t.Context()
	dsn := newSchema(t)
	s := openDSN(t, dsn)
	if _, err := s.pool.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (999)`); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, dsn)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
	t.Log(err)
}

func TestMissingSchema(t *testing.T) {
	admin(t)
	_, err := Open(t.Context(), withSearchPath(t, testDSN(), "nebula_no_such_schema"))
	if err == nil {
		t.Fatal("Open with a missing schema succeeded")
	}
	t.Log(err)
}

// TestQueryPlans checks that the generic plans (the ones prepared statements
// settle on) of the queries that select by key or by due time walk an index
// and do not sort. The planner prefers sequential and bitmap scans on tiny
// tables, so those are switched off.
func TestQueryPlans(t *testing.T) {
	ctx := t.Context()
	s := openDSN(t, newSchema(t))
	conn, err := s.pool.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, set := range []string{"enable_seqscan = off", "enable_bitmapscan = off", "plan_cache_mode = force_generic_plan"} {
		if _, err := conn.ExecContext(ctx, "SET "+set); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		"GetVersion":                 "versions_pkey",
		"ListCredentialsRange":       "credentials_pkey",
		"GetCredentialState":         "credentials_pkey",
		"GetCredentialStateByNumber": "credentials_pkey",
		"DueCredentials":             "credentials_due",
		"ListVersionKeys":            "versions_pkey",
		"VersionNumbers":             "versions_pkey",
		"CountVersionsByKEK":         "versions_kek",
		"OpenRotation":               "rotations_one_open",
		"ListRotationsByCredential":  "rotations_credential",
		"DueRotations":               "rotations_due",
		"ListHistory":                "history_credential",
		"ListAudit":                  "audit_pkey",
		"ListEvents":                 "events_pkey",
		"GetTokenByHash":             "tokens_hash_key",
	}
	queries := s.db.PlannedQueries()
	if len(queries) != len(want) {
		t.Errorf("%d planned queries, %d expected plans", len(queries), len(want))
	}
	for name, q := range queries {
		stmt := "plan_" + strings.ToLower(name)
		if _, err := conn.ExecContext(ctx, "PREPARE "+stmt+" AS "+q); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nulls := strings.TrimSuffix(strings.Repeat("NULL, ", strings.Count(q, "$")), ", ")
		rows, err := conn.QueryContext(ctx, "EXPLAIN EXECUTE "+stmt+"("+nulls+")")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		rows.Close()
		p := plan.String()
		if !strings.Contains(p, want[name]) || strings.Contains(p, "Seq Scan") || strings.Contains(p, "Sort") {
			t.Errorf("%s: plan\n%s\nwant an index scan on %s and no sort", name, p, want[name])
		}
	}
}

// TestPoolMaxConns: pool_max_conns in the connection string sizes the pool
// and never reaches PostgreSQL (which would refuse an unknown parameter); a
// bad value is refused with what to write instead.
func TestPoolMaxConns(t *testing.T) {
	dsn := newSchema(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	s := openDSN(t, dsn+sep+"pool_max_conns=3")
	if got := s.pool.Stats().MaxOpenConnections; got != 3 {
		t.Fatalf("MaxOpenConnections = %d, want 3", got)
	}
	if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.SetMeta(t.Context(), "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if got := openDSN(t, dsn).pool.Stats().MaxOpenConnections; got != DefaultMaxConns {
		t.Fatalf("default MaxOpenConnections = %d, want %d", got, DefaultMaxConns)
	}
	for _, bad := range []string{"0", "x", "1"} {
		_, err := Open(t.Context(), dsn+sep+"pool_max_conns="+bad)
		if err == nil || !strings.Contains(err.Error(), "pool_max_conns") || !strings.Contains(err.Error(), "at least 2") {
			t.Errorf("pool_max_conns=%s: %v, want a clear refusal", bad, err)
		}
	}
}
