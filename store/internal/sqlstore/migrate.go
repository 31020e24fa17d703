package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one step of a backend's schema.
type Migration struct {
	Version int
	Name    string // file name, for errors
	SQL     string // one or more statements
}

// LoadMigrations reads the files NNNN_description.sql in dir of fsys, ordered
// by number. Numbers are positive and unique; they may have gaps (numbers are
// handed out to features before they land, and one backend may skip a number
// the other needs).
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", name)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s have the same number", ms[i-1].Name, ms[i].Name)
		}
	}
	return ms, nil
}

// Migrate applies, in one transaction and in order of number, every migration
// of ms that the table schema_version does not list yet, and records it there.
// It is idempotent. A migration number that lands later than a higher one
// (because numbers were handed out ahead) is still applied. A schema with a
// version ms does not know (written by a newer binary) is refused. lock, if not empty, is
// run first in the transaction to serialize concurrent migrators (SQLite
// needs none: its write transactions are IMMEDIATE).
func Migrate(ctx context.Context, pool *sql.DB, d *Dialect, ms []Migration, lock string) (err error) {
	q := func(s string) string {
		if d.Numbered {
			return numbered(s)
		}
		return s
	}
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: migrate: begin: %w", d.Name, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return fmt.Errorf("%s: migrate: lock: %w", d.Name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY)`); err != nil {
		return fmt.Errorf("%s: migrate: create schema_version: %w", d.Name, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_version`)
	if err != nil {
		return fmt.Errorf("%s: migrate: read schema_version: %w", d.Name, err)
	}
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("%s: migrate: read schema_version: %w", d.Name, err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: migrate: read schema_version: %w", d.Name, err)
	}
	known := map[int]bool{}
	latest := 0
	for _, m := range ms {
		known[m.Version] = true
		latest = max(latest, m.Version)
	}
	for v := range applied {
		if v > latest {
			return fmt.Errorf("%s: store schema version %d is newer than this binary supports (%d): upgrade nebula-credential", d.Name, v, latest)
		}
		if !known[v] {
			return fmt.Errorf("%s: store schema version %d is not known to this binary (it was written by another build): use the build that wrote it", d.Name, v)
		}
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("%s: migrate: apply %s: %w", d.Name, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, q(`INSERT INTO schema_version (version) VALUES (?)`), m.Version); err != nil {
			return fmt.Errorf("%s: migrate: record %s: %w", d.Name, m.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: migrate: commit: %w", d.Name, err)
	}
	return nil
}
