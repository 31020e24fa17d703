package credential_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// Get and Put through the Manager beside the raw SQLite statement that reads or
// writes the same row, on the same file and pragmas, in the same run:
//
//	go test -run '^$' -bench 'Get|Put|RawSQLite' -benchtime 2000x .
//
// Goal: Get <= 3x RawSQLiteSelect, Put <= 1.5x RawSQLiteInsert.

func benchManager(b *testing.B) (*credential.Manager, string) {
	dir := b.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := credential.Open(context.Background(), credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "k"), Create: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m, filepath.Join(dir, "creds.db")
}

func rawDB(b *testing.B, path string) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.Cleanup(func() { db.Close() })
	return db
}

func pgReq(i int) credential.PutRequest {
	return credential.PutRequest{Type: credential.Postgres, Fields: map[string]any{"host": "db.internal", "port": 5432, "username": "app"}, Secret: secret.Map{"password": secret.New(fmt.Sprintf("0123456789abcdef0123456789abc%03d", i%1000))}}
}

func BenchmarkGet(b *testing.B) {
	m, _ := benchManager(b)
	ctx := context.Background()
	m.Put(ctx, "prod/db/orders", pgReq(0))
	for b.Loop() {
		if _, err := m.Get(ctx, "prod/db/orders", credential.GetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetRequestContext is BenchmarkGet with a context that can be
// canceled, as the API's requests have.
func BenchmarkGetRequestContext(b *testing.B) {
	m, _ := benchManager(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.Put(ctx, "prod/db/orders", pgReq(0))
	for b.Loop() {
		if _, err := m.Get(ctx, "prod/db/orders", credential.GetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawSQLiteSelect(b *testing.B) {
	m, path := benchManager(b)
	ctx := context.Background()
	m.Put(ctx, "prod/db/orders", pgReq(0))
	db := rawDB(b, path)
	stmt, err := db.Prepare(`SELECT fields, kek_id, data_key, ciphertext, created_at FROM versions WHERE credential_id = ? AND version = ?`)
	if err != nil {
		b.Fatal(err)
	}
	var f, k, dk, ct []byte
	var at int64
	for b.Loop() {
		if err := stmt.QueryRow("prod/db/orders", 1).Scan(&f, &k, &dk, &ct, &at); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	m, _ := benchManager(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := m.Put(ctx, fmt.Sprintf("prod/db/%d", i), pgReq(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkRawSQLiteInsert(b *testing.B) {
	_, path := benchManager(b)
	db := rawDB(b, path)
	stmt, err := db.Prepare(`INSERT INTO versions (credential_id, version, fields, kek_id, data_key, ciphertext, created_at) VALUES (?, 1, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	fields := []byte(`{"host":"db.internal","port":5432,"username":"app"}`)
	dk, ct := make([]byte, 60), make([]byte, 80)
	i := 0
	for b.Loop() {
		if _, err := stmt.Exec(fmt.Sprintf("prod/db/%d", i), fields, "kek", dk, ct, time.Now().UnixMicro()); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRawSQLitePutEquivalent writes, in raw SQL and one durable
// transaction, the same rows a Put writes (credential, version, version
// counter, two labels, history, watch event, audit entry): the cost of the
// data model itself, to set Put's figure against.
func BenchmarkRawSQLitePutEquivalent(b *testing.B) {
	_, path := benchManager(b)
	db := rawDB(b, path)
	fields := []byte(`{"host":"db.internal","port":5432,"username":"app"}`)
	dk, ct, h := make([]byte, 60), make([]byte, 80), make([]byte, 32)
	payload := []byte(`{"at":"2026-01-01T00:00:00Z","actor":"bench","action":"put","credential_id":"prod/db/0","to_version":1,"outcome":"ok"}`)
	stmts := []string{
		`INSERT INTO credentials (id, type, settings, created_at, updated_at) VALUES (?1, 'postgres', x'7b7d', ?2, ?2)`,
		`INSERT INTO versions (credential_id, version, fields, kek_id, data_key, ciphertext, created_at) VALUES (?1, 1, ?3, 'kek', ?4, ?5, ?2)`,
		`INSERT INTO version_counters (credential_id, max_version) VALUES (?1, 1)`,
		`INSERT INTO labels (credential_id, label, version) VALUES (?1, 'current', 1)`,
		`INSERT INTO history (credential_id, at, action, actor, reason, from_version, to_version, rotation_id, outcome, detail, duration_ms) VALUES (?1, ?2, 'put', 'bench', '', 0, 1, 0, 'ok', '', 0)`,
		`INSERT INTO events (seq, at, kind, credential_id, version, detail) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?2, 'current_changed', ?1, 1, x'')`,
		`INSERT INTO audit (seq, at, payload, prev_hash, hash) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM audit), ?2, ?6, ?7, ?7)`,
	}
	i := 0
	for b.Loop() {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("prod/db/%d", i)
		for _, q := range stmts {
			if _, err := tx.Exec(q, id, time.Now().UnixMicro(), fields, dk, ct, payload, h); err != nil {
				b.Fatal(q, err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRotation is the engine's whole per-rotation cost (plan, stage,
// apply, verify, commit, grace, retire: journal writes included) against the
// in-memory fake target, beside one durable Put in the same run.
func BenchmarkRotation(b *testing.B) {
	dir := b.TempDir()
	st, _ := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	tg := rotatortest.NewTarget("")
	reg := rotator.NewRegistry()
	reg.Register(string(fakeType), tg.Rotator())
	m, err := credential.Open(context.Background(), credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "k"), Create: true, Rotators: reg})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	sec := secret.Map{"password": secret.New("initial-password-123")}
	m.Put(ctx, "a", credential.PutRequest{Type: fakeType, Fields: map[string]any{"host": "h", "username": "a"}, Secret: sec})
	tg.AddUser("a", sec)
	zero := time.Duration(0)
	for b.Loop() {
		r, err := m.Rotate(ctx, "a", credential.RotateOptions{Grace: &zero})
		if err != nil || r.Step != rotation.StepRetired {
			b.Fatal(err)
		}
	}
}

// BenchmarkTickIdle: a scheduler tick with nothing due costs about the same at
// 1,000 and at 100,000 credentials (it reads only due rows, by index).
//
//	go test -run '^$' -bench TickIdle -benchtime 200x .
func BenchmarkTickIdle(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dir := b.TempDir()
			st, _ := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
			m, err := credential.Open(context.Background(), credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "k"), Create: true})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			now := time.Now().UTC()
			for start := 0; start < n; start += 5000 {
				err := st.Update(ctx, func(tx store.Tx) error {
					for i := start; i < min(start+5000, n); i++ {
						due := now.Add(time.Duration(1+i%1000) * time.Hour)
						if err := tx.PutCredential(ctx, &store.Credential{ID: fmt.Sprintf("c/%07d", i), Type: "generic", Settings: []byte("{}"), CreatedAt: now, UpdatedAt: now, NextDueAt: &due}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if k, err := m.Engine().Tick(ctx); err != nil || k != 0 {
					b.Fatal(k, err)
				}
			}
			b.StopTimer()
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heapB/cred")
		})
	}
}
