package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/store/internal/sqlstore"
)

// TestMigrationNumbersWithGaps: numbers are handed out to features ahead of
// time, so a binary may know 1, 2 and 7; a later one that also knows 6
// applies 6 to a store that already has 7. A version the binary does not
// know is refused, and so are two files with one number.
func TestMigrationNumbersWithGaps(t *testing.T) {
	ctx := t.Context()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := func(v int, table string) sqlstore.Migration {
		return sqlstore.Migration{Version: v, Name: table, SQL: "CREATE TABLE " + table + " (x INTEGER)"}
	}
	tables := func() string {
		var names []string
		rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 't%' ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		return strings.Join(names, ",")
	}
	if err := sqlstore.Migrate(ctx, db, dialect, []sqlstore.Migration{m(1, "t1"), m(2, "t2"), m(7, "t7")}, ""); err != nil {
		t.Fatal(err)
	}
	if got := tables(); got != "t1,t2,t7" {
		t.Fatalf("tables after 1,2,7: %s", got)
	}
	all := []sqlstore.Migration{m(1, "t1"), m(2, "t2"), m(6, "t6"), m(7, "t7")}
	for range 2 { // idempotent
		if err := sqlstore.Migrate(ctx, db, dialect, all, ""); err != nil {
			t.Fatal(err)
		}
		if got := tables(); got != "t1,t2,t6,t7" {
			t.Fatalf("tables after 1,2,6,7: %s", got)
		}
	}
	if err := sqlstore.Migrate(ctx, db, dialect, []sqlstore.Migration{m(1, "t1"), m(2, "t2"), m(7, "t7")}, ""); err == nil || !strings.Contains(err.Error(), "version 6 is not known") {
		t.Fatalf("a binary without 6 on a store with 6: %v", err)
	}
	if err := sqlstore.Migrate(ctx, db, dialect, []sqlstore.Migration{m(1, "t1"), m(2, "t2"), m(6, "t6")}, ""); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a binary without 7 on a store with 7: %v", err)
	}
}

func TestEmbeddedMigrationsInOrder(t *testing.T) {
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ms); i++ {
		if ms[i].Version <= ms[i-1].Version {
			t.Fatalf("migrations out of order: %s after %s", ms[i].Name, ms[i-1].Name)
		}
	}
}
