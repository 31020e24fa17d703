package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// The benchmarks pair a raw database/sql statement with the store call that
// does the same work, so the store's overhead shows:
//
//	BenchmarkRawSelect          vs BenchmarkViewGetVersion
//	BenchmarkRawInsert          vs BenchmarkUpdateInsertVersion
//
// BenchmarkRawSelectPrepared is the floor (a statement prepared once);
// BenchmarkViewManagerGet is the four reads of the manager's Get.
//
// Raw statements run on a connection with the store's pragmas (WAL,
// synchronous=FULL) and the store's schema; inserts commit durably in both.

const selectVersion = `SELECT credential_id, version, fields, kek_id, data_key, ciphertext, created_at, expires_at
	FROM versions WHERE credential_id = ? AND version = ?`

const insertVersion = `INSERT INTO versions (credential_id, version, fields, kek_id, data_key, ciphertext, created_at, expires_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)`

func benchVersion(n int) *store.Version {
	return &store.Version{
		CredentialID: "bench/credential",
		Version:      n,
		Fields:       []byte(`{"username":"app","host":"db.internal"}`),
		KEKID:        "kek-1",
		DataKey:      make([]byte, 60),
		Ciphertext:   make([]byte, 128),
		CreatedAt:    time.Now(),
	}
}

// rawDB creates a store file with the schema and opens it with plain database/sql.
func rawDB(b *testing.B) *sql.DB {
	path := filepath.Join(b.TempDir(), "raw.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.Cleanup(func() { db.Close() })
	return db
}

func rawInsert(db *sql.DB, v *store.Version) error {
	_, err := db.Exec(insertVersion, v.CredentialID, v.Version, v.Fields, v.KEKID, v.DataKey, v.Ciphertext,
		v.CreatedAt.UnixMicro(), nil)
	return err
}

func BenchmarkRawSelect(b *testing.B) {
	db := rawDB(b)
	if err := rawInsert(db, benchVersion(1)); err != nil {
		b.Fatal(err)
	}
	var v store.Version
	var created int64
	var expires sql.NullInt64
	for b.Loop() {
		if err := db.QueryRow(selectVersion, "bench/credential", 1).Scan(&v.CredentialID, &v.Version, &v.Fields,
			&v.KEKID, &v.DataKey, &v.Ciphertext, &created, &expires); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawSelectPrepared(b *testing.B) {
	db := rawDB(b)
	if err := rawInsert(db, benchVersion(1)); err != nil {
		b.Fatal(err)
	}
	stmt, err := db.Prepare(selectVersion)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	var v store.Version
	var created int64
	var expires sql.NullInt64
	for b.Loop() {
		if err := stmt.QueryRow("bench/credential", 1).Scan(&v.CredentialID, &v.Version, &v.Fields,
			&v.KEKID, &v.DataKey, &v.Ciphertext, &created, &expires); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkViewGetVersion(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.InsertVersion(ctx, benchVersion(1)) }); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.View(ctx, func(tx store.Tx) error {
			_, err := tx.GetVersion(ctx, "bench/credential", 1)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkViewGetVersionParallel(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.InsertVersion(ctx, benchVersion(1)) }); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.View(ctx, func(tx store.Tx) error {
				_, err := tx.GetVersion(ctx, "bench/credential", 1)
				return err
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRawInsert(b *testing.B) {
	db := rawDB(b)
	n := 0
	for b.Loop() {
		n++
		if err := rawInsert(db, benchVersion(n)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdateInsertVersion(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	n := 0
	for b.Loop() {
		n++
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.InsertVersion(ctx, benchVersion(n)) }); err != nil {
			b.Fatal(fmt.Errorf("version %d: %w", n, err))
		}
	}
}

// BenchmarkViewManagerGet does the reads of the manager's Get in one View:
// credential, labels, version, open rotation (none).
func BenchmarkViewManagerGet(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	const id = "bench/credential"
	if err := s.Update(ctx, func(tx store.Tx) error {
		now := time.Now()
		if err := tx.PutCredential(ctx, &store.Credential{ID: id, Type: "postgres", CreatedAt: now, UpdatedAt: now}); err != nil {
			return err
		}
		if err := tx.InsertVersion(ctx, benchVersion(1)); err != nil {
			return err
		}
		return tx.SetLabel(ctx, id, "current", 1)
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.View(ctx, func(tx store.Tx) error {
			if _, err := tx.GetCredential(ctx, id); err != nil {
				return err
			}
			labels, err := tx.Labels(ctx, id)
			if err != nil {
				return err
			}
			if _, err := tx.GetVersion(ctx, id, labels["current"]); err != nil {
				return err
			}
			if _, err := tx.OpenRotation(ctx, id); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("OpenRotation: %v", err)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
