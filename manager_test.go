package credential_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func openAt(t testing.TB, dir string, create bool, tweak func(*credential.Config)) *credential.Manager {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: create}
	if tweak != nil {
		tweak(&cfg)
	}
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func gen(v string) credential.PutRequest {
	return credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"value": secret.New(v)}}
}

func TestValidateID(t *testing.T) {
	ok := []string{"a", "prod/db/orders", "a.b_c-d/0", strings.Repeat("a", 256)}
	bad := []string{"", "/a", "a/", "a//b", "A", "a b", "a/../b", ".", "..", "a/./b", "a\x00", "ü", strings.Repeat("a", 257), "a\\b"}
	for _, id := range ok {
		if err := credential.ValidateID(id); err != nil {
			t.Errorf("%q rejected: %v", id, err)
		}
	}
	for _, id := range bad {
		if err := credential.ValidateID(id); !errors.Is(err, credential.ErrInvalid) {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestTypeSchemas(t *testing.T) {
	s := func(kv ...string) secret.Map {
		m := secret.Map{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = secret.New(kv[i+1])
		}
		return m
	}
	tests := []struct {
		typ    credential.Type
		fields map[string]any
		sec    secret.Map
		ok     bool
	}{
		{credential.Postgres, map[string]any{"host": "h", "username": "u"}, s("password", "p"), true},
		{credential.Postgres, map[string]any{"host": "h"}, s("password", "p"), false},
		{credential.Postgres, map[string]any{"host": "h", "username": "u"}, s(), false},
		{credential.Postgres, map[string]any{"host": "h", "username": "u", "password": "p"}, s("password", "p"), false},
		{credential.Postgres, map[string]any{"host": "h", "username": "u"}, s("password", "p", "token", "t"), false},
		{credential.MySQL, map[string]any{"host": "h", "username": "u"}, s("password", "p"), true},
		{credential.Redis, map[string]any{"host": "h"}, s("password", "p"), true},
		{credential.APIKey, nil, s("key", "k"), true},
		{credential.APIKey, nil, s("password", "k"), false},
		{credential.OAuth2, map[string]any{"token_url": "u", "client_id": "c"}, s("refresh_token", "r", "access_token", "a"), true},
		{credential.OAuth2, map[string]any{"token_url": "u"}, s("refresh_token", "r"), false},
		{credential.Certificate, map[string]any{"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}, s("private_key", "k"), true},
		{credential.Certificate, map[string]any{"certificate": "PEM"}, s("private_key", "k"), false},
		{credential.Certificate, map[string]any{"certificate": "-----BEGIN CERTIFICATE-----\nCHANGE-ME (PEM of the current certificate)\n-----END CERTIFICATE-----\n"}, s("private_key", "k"), false},
		{credential.Certificate, map[string]any{}, s("private_key", "k"), false},
		{credential.Generic, nil, s("anything", "x"), true},
		{credential.Generic, nil, s(), false},
		{credential.Generic, nil, s("Bad Name", "x"), false},
		{"nosuch", nil, s("x", "y"), false},
	}
	for i, tt := range tests {
		err := credential.ValidateValues(tt.typ, tt.fields, tt.sec)
		if (err == nil) != tt.ok {
			t.Errorf("%d (%s): err = %v, want ok=%v", i, tt.typ, err, tt.ok)
		}
		if err != nil && !errors.Is(err, credential.ErrInvalid) {
			t.Errorf("%d: not ErrInvalid: %v", i, err)
		}
		if err != nil && strings.Contains(err.Error(), "\"p\"") {
			t.Errorf("%d: error quotes a value: %v", i, err)
		}
	}
}

func TestRetentionKeepsLabelled(t *testing.T) {
	m := openAt(t, t.TempDir(), true, nil)
	ctx := context.Background()
	req := gen("v0")
	req.Settings = &credential.Settings{Retention: 3}
	m.Put(ctx, "a", req)
	for i := 1; i < 8; i++ {
		if _, err := m.Put(ctx, "a", gen(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	vs, _ := m.Versions(ctx, "a")
	if len(vs) != 3 || vs[0].Version != 8 || vs[2].Version != 6 {
		t.Fatalf("versions: %+v", vs)
	}
	if vs[0].Labels[0] != "current" || vs[1].Labels[0] != "previous" {
		t.Fatalf("labels: %+v", vs)
	}
	if _, err := m.Get(ctx, "a", credential.GetOptions{Version: 1}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("pruned version readable: %v", err)
	}
}

func TestListPagingAndFilters(t *testing.T) {
	m := openAt(t, t.TempDir(), true, nil)
	ctx := context.Background()
	for i := range 25 {
		m.Put(ctx, fmt.Sprintf("team/%02d", i), gen("x"))
	}
	m.Put(ctx, "teamx/a", gen("x"))
	m.Put(ctx, "other/db", credential.PutRequest{Type: credential.Redis, Fields: map[string]any{"host": "h"}, Secret: secret.Map{"password": secret.New("p")}})
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		items, next, err := m.List(ctx, credential.ListOptions{Prefix: "team/", Limit: 10, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			all = append(all, it.ID)
		}
		if next == "" {
			if pages != 2 {
				t.Fatalf("pages %d", pages)
			}
			break
		}
		after = next
	}
	if len(all) != 25 || all[0] != "team/00" || all[24] != "team/24" {
		t.Fatalf("paged list: %v", all)
	}
	items, _, _ := m.List(ctx, credential.ListOptions{Type: credential.Redis})
	if len(items) != 1 || items[0].ID != "other/db" || items[0].Current != 1 {
		t.Fatalf("type filter: %+v", items)
	}
}

func TestDeleteAndPurge(t *testing.T) {
	m := openAt(t, t.TempDir(), true, nil)
	ctx := context.Background()
	m.Put(ctx, "a", gen("one"))
	if err := m.Delete(ctx, "a", "me"); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "a", "me"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := m.Get(ctx, "a", credential.GetOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatal("deleted credential served")
	}
	if _, err := m.Rotate(ctx, "a", credential.RotateOptions{}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("deleted credential rotated: %v", err)
	}
	// put restores it as a new version.
	c, err := m.Put(ctx, "a", gen("two"))
	if err != nil || c.Version != 2 {
		t.Fatalf("restore by put: %v %+v", err, c)
	}
	if err := m.Purge(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.History(ctx, "a", 10); !errors.Is(err, credential.ErrNotFound) {
		t.Fatal("purged credential has history")
	}
	if err := m.Purge(ctx, "a"); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("purge of missing: %v", err)
	}
}

func TestWrongKeyAndPassphrase(t *testing.T) {
	dir := t.TempDir()
	m := openAt(t, dir, true, nil)
	m.Put(context.Background(), "a", gen("x"))
	m.Close()
	other := filepath.Join(dir, "other.key")
	keyring.CreateKeyFile(other)
	st, _ := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	defer st.Close()
	_, err := credential.Open(context.Background(), credential.Config{Store: st, KeyFile: other})
	if !errors.Is(err, credential.ErrWrongKey) {
		t.Fatalf("wrong key file: %v", err)
	}

	pdir := t.TempDir()
	weak := keyring.NewArgon2Params()
	weak.MemoryKiB = 8 * 1024
	pm := openAt(t, pdir, true, func(c *credential.Config) {
		c.Passphrase = secret.New("correct horse")
		c.Argon2 = &weak
		c.KeyFile = ""
	})
	pm.Put(context.Background(), "a", gen("x"))
	pm.Close()
	if _, err := os.Stat(filepath.Join(pdir, "creds.key")); err == nil {
		t.Fatal("passphrase mode wrote a key file")
	}
	pst, _ := sqlite.Open(context.Background(), filepath.Join(pdir, "creds.db"))
	defer pst.Close()
	for _, pass := range []string{"wrong horse", ""} {
		_, err = credential.Open(context.Background(), credential.Config{Store: pst, Passphrase: secret.New(pass)})
		if !errors.Is(err, credential.ErrWrongKey) {
			t.Fatalf("passphrase %q: %v", pass, err)
		}
	}
	good, err := credential.Open(context.Background(), credential.Config{Store: pst, Passphrase: secret.New("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := good.Get(context.Background(), "a", credential.GetOptions{})
	if err != nil || c.Secret["value"].Reveal() != "x" {
		t.Fatalf("passphrase store: %v", err)
	}
	good.Close()
}

// The plaintext of a stored secret never appears in the SQLite file, its WAL
// or a backup file.
func TestNoPlaintextAtRest(t *testing.T) {
	dir := t.TempDir()
	m := openAt(t, dir, true, nil)
	ctx := context.Background()
	plain := "PLAINTEXT-MARKER-" + secret.Token(12).Reveal()
	m.Put(ctx, "a", credential.PutRequest{Type: credential.Postgres, Fields: map[string]any{"host": "h", "username": "u"}, Secret: secret.Map{"password": secret.New(plain)}})
	m.Rotate(ctx, "a", credential.RotateOptions{}) // no postgres rotator: fails, still nothing leaks
	var buf bytes.Buffer
	if _, err := m.Backup(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "backup.ncb"), buf.Bytes(), 0o600)
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	checked := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(plain)) || bytes.Contains(b, []byte(plain[:20])) {
			t.Fatalf("plaintext found in %s", f)
		}
		if strings.HasSuffix(f, "-wal") || strings.HasSuffix(f, ".db") || strings.HasSuffix(f, ".ncb") {
			checked++
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d of db, wal and backup: %v", checked, files)
	}
}

func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	m := openAt(t, src, true, nil)
	for i := range 5 {
		m.Put(ctx, fmt.Sprintf("b/%d", i), gen(fmt.Sprintf("first-%d", i)))
		m.Put(ctx, fmt.Sprintf("b/%d", i), gen(fmt.Sprintf("second-%d", i)))
	}
	var buf bytes.Buffer
	info, err := m.Backup(ctx, &buf, nil)
	if err != nil || info.Credentials != 5 || info.Versions != 10 {
		t.Fatalf("backup: %v %+v", err, info)
	}
	backup := buf.Bytes()

	// Into a new store elsewhere, initialised with the same key file.
	dst := t.TempDir()
	key, _ := os.ReadFile(filepath.Join(src, "creds.key"))
	os.WriteFile(filepath.Join(dst, "creds.key"), key, 0o600)
	n := openAt(t, dst, true, nil)
	if _, err := n.Restore(ctx, bytes.NewReader(backup), credential.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := n.Get(ctx, "b/3", credential.GetOptions{})
	if err != nil || c.Version != 2 || c.Secret["value"].Reveal() != "second-3" {
		t.Fatalf("restored: %v %+v", err, c)
	}
	if p, _ := n.Get(ctx, "b/3", credential.GetOptions{Label: "previous"}); p == nil || p.Secret["value"].Reveal() != "first-3" {
		t.Fatal("previous not restored")
	}

	// --only one credential, after it changed.
	m.Put(ctx, "b/1", gen("third-1"))
	m.Put(ctx, "b/2", gen("third-2"))
	if _, err := m.Restore(ctx, bytes.NewReader(backup), credential.RestoreOptions{Only: "b/1"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := m.Get(ctx, "b/1", credential.GetOptions{}); c.Secret["value"].Reveal() != "second-1" {
		t.Fatal("--only did not restore b/1")
	}
	if c, _ := m.Get(ctx, "b/2", credential.GetOptions{}); c.Secret["value"].Reveal() != "third-2" {
		t.Fatal("--only touched b/2")
	}
	if _, err := m.Restore(ctx, bytes.NewReader(backup), credential.RestoreOptions{Only: "b/none"}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("--only missing: %v", err)
	}

	// Truncated or altered files are refused and nothing changes.
	before, _ := m.Get(ctx, "b/2", credential.GetOptions{})
	bad := map[string][]byte{
		"truncated":      backup[:len(backup)-7],
		"header only":    backup[:40],
		"flipped body":   flip(backup, len(backup)-100),
		"flipped header": flip(backup, 35),
		"empty":          nil,
		"not a backup":   []byte("hello\n"),
	}
	for name, b := range bad {
		_, err := m.Restore(ctx, bytes.NewReader(b), credential.RestoreOptions{})
		if !errors.Is(err, credential.ErrBadBackup) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if after, _ := m.Get(ctx, "b/2", credential.GetOptions{}); after.Version != before.Version {
		t.Fatal("a refused restore changed the store")
	}

	// A store with another key cannot read it.
	o := openAt(t, t.TempDir(), true, nil)
	if _, err := o.Restore(ctx, bytes.NewReader(backup), credential.RestoreOptions{}); !errors.Is(err, credential.ErrWrongKey) {
		t.Fatalf("other key: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

func TestKeyRotateWhileReading(t *testing.T) {
	dir := t.TempDir()
	m := openAt(t, dir, true, nil)
	ctx := context.Background()
	for i := range 500 {
		m.Put(ctx, fmt.Sprintf("k/%03d", i), gen(fmt.Sprintf("v%d", i)))
	}
	// A second process-like manager that loaded only the old KEK keeps reading.
	reader := openAt(t, dir, false, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	var once sync.Once
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("k/%03d", (i*7+w)%500)
				c, err := reader.Get(ctx, id, credential.GetOptions{})
				if err != nil || c.Secret["value"].Reveal() != "v"+strings.TrimLeft(id[2:], "0") && id != "k/000" {
					once.Do(func() { readErr = fmt.Errorf("%s: %v", id, err) })
				}
			}
		}()
	}
	var calls int
	res, err := m.RotateKEK(ctx, func(done, total int) { calls++ })
	close(stop)
	wg.Wait()
	if err != nil || readErr != nil {
		t.Fatalf("rotate: %v; reader: %v", err, readErr)
	}
	if res.Rewrapped != 500 || len(res.Dropped) != 1 || calls == 0 {
		t.Fatalf("result %+v, progress calls %d", res, calls)
	}
	ks, _ := m.Keys(ctx)
	if len(ks) != 1 || ks[0].ID != res.NewKEK || ks[0].DataKeys != 500 {
		t.Fatalf("keys: %+v", ks)
	}
}

func TestAuditChainOfOperations(t *testing.T) {
	dir := t.TempDir()
	m := openAt(t, dir, true, nil)
	ctx := audit.WithActor(context.Background(), "tester", "req-1")
	plain := "audit-secret-" + secret.Token(8).Reveal()
	m.Put(ctx, "a", credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"v": secret.New(plain)}})
	m.Rotate(ctx, "a", credential.RotateOptions{})
	m.Rollback(ctx, "a", credential.RollbackOptions{})
	n, err := audit.Verify(ctx, m.Store(), nil)
	if err != nil || n < 5 {
		t.Fatalf("verify: %d %v", n, err)
	}
	recs, _ := audit.List(ctx, m.Store(), 0, 100)
	var all strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&all, "%+v\n", r)
		if r.Actor != "tester" || r.RequestID != "req-1" {
			t.Fatalf("entry without actor/request: %+v", r)
		}
	}
	if strings.Contains(all.String(), plain) {
		t.Fatal("audit entry holds a secret")
	}
	// Tamper with the file directly.
	m.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit SET payload = CAST(replace(CAST(payload AS TEXT), 'tester', 'mallory') AS BLOB) WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	m2 := openAt(t, dir, false, nil)
	_, err = audit.Verify(ctx, m2.Store(), nil)
	var p *audit.Problem
	if !errors.As(err, &p) || p.Seq != 3 {
		t.Fatalf("edit not detected at 3: %v", err)
	}
}
