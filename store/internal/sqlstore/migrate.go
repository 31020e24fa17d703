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
// by number. Numbers start at 1 and have no gaps.
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
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: expected number %d", m.Name, i+1)
		}
	}
	return ms, nil
}

// Migrate brings the schema of pool up to the last of ms in one transaction,
// recording each step in the table schema_version. It is idempotent. A schema
// newer than ms (written by a newer binary) is refused. lock, if not empty, is
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
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
		return fmt.Errorf("%s: migrate: read schema_version: %w", d.Name, err)
	}
	if latest := len(ms); cur > latest {
		return fmt.Errorf("%s: store schema version %d is newer than this binary supports (%d): upgrade nebula-credential", d.Name, cur, latest)
	}
	for _, m := range ms[cur:] {
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
