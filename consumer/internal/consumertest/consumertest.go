// Package consumertest sets up what the consumer tests share: an in-process
// Manager with the real PostgreSQL and MySQL rotators, credentials on the
// test servers of internal/testenv, and rotations driven to retirement.
package consumertest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// Manager opens a Manager on a fresh SQLite store with the postgres and mysql
// rotators registered; it is closed at the end of the test.
func Manager(t testing.TB) *credential.Manager {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), postgres.New(postgres.Config{}))
	reg.Register(string(credential.MySQL), mysql.New(mysql.Config{}))
	m, err := credential.Open(context.Background(), credential.Config{Store: st, CloseStore: true,
		KeyFile: filepath.Join(dir, "creds.key"), Create: true, Rotators: reg})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// PG is an alternating-users PostgreSQL credential stored in a Manager.
type PG struct {
	ID      string
	Server  *testenv.PG
	Owner   string    // NOLOGIN role owning Table
	Users   [2]string // the strategy users
	Table   string    // one row; members of Owner may read it
	AdminID string
}

// PGOptions tune PostgresCredential.
type PGOptions struct {
	// Server is where the roles are made; nil means the scram-sha-256 test
	// cluster of testenv.Postgres.
	Server *testenv.PG
	// SecondUserWithoutAccess leaves the second strategy user out of the owner
	// role: it logs in (so the rotator's SELECT 1 probe passes) but cannot
	// read Table. Blue-green tests use it as a bad new version.
	SecondUserWithoutAccess bool
}

// LocalPostgres is the machine's PostgreSQL on 127.0.0.1:5432 (user postgres,
// database test), which trusts local logins: passwords are not checked, but a
// NOLOGIN role still cannot log in, so alternating users stay meaningful.
// Without it the test is skipped, or fails with CI=true.
func LocalPostgres(t testing.TB) *testenv.PG {
	t.Helper()
	pg := &testenv.PG{Host: "127.0.0.1", Port: 5432, User: "postgres", Database: "test"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		msg := "no PostgreSQL at 127.0.0.1:5432 (user postgres, database test): " + err.Error()
		if testenv.CI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c.Close(ctx)
	return pg
}

// PostgresCredential creates, on the test cluster (scram-sha-256), an admin
// role with CREATEROLE, an owner role, two strategy users and a probe table,
// stores the admin and the application credential in m, and returns them.
// Everything is dropped at the end of the test.
func PostgresCredential(t testing.TB, m *credential.Manager, opts PGOptions) *PG {
	t.Helper()
	pg := opts.Server
	if pg == nil {
		pg = testenv.Postgres(t)
	}
	ctx := context.Background()
	p := &PG{Server: pg}
	adminPW := testenv.UniqueName("admin-pw-")
	admin := pg.CreateRole(t, testenv.UniqueName("nc_admin_"), adminPW, "LOGIN CREATEROLE")
	p.Owner = pg.CreateRole(t, testenv.UniqueName("nc_own_"), "", "NOLOGIN")
	pw := testenv.UniqueName("pw-")
	p.Users[0] = pg.CreateRole(t, testenv.UniqueName("nc_a_"), pw, "LOGIN IN ROLE "+pgx.Identifier{p.Owner}.Sanitize())
	in := " IN ROLE " + pgx.Identifier{p.Owner}.Sanitize()
	if opts.SecondUserWithoutAccess {
		in = ""
	}
	p.Users[1] = pg.CreateRole(t, testenv.UniqueName("nc_b_"), "", "NOLOGIN"+in)
	p.Table = testenv.UniqueName("probe_")
	tbl := pgx.Identifier{p.Table}.Sanitize()
	pg.Exec(t, "CREATE TABLE "+tbl+" (id int PRIMARY KEY); INSERT INTO "+tbl+" VALUES (1); ALTER TABLE "+tbl+" OWNER TO "+pgx.Identifier{p.Owner}.Sanitize())
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, pg.DSN())
		if err == nil {
			c.Exec(ctx, "DROP TABLE IF EXISTS "+tbl)
			c.Close(ctx)
		}
	})
	p.AdminID = "admin/" + testenv.UniqueName("pg-")
	if _, err := m.Put(ctx, p.AdminID, credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": pg.Host, "port": pg.Port, "username": admin, "manages": []any{p.Users[0], p.Users[1]}},
		Secret: secret.Map{"password": secret.New(adminPW)}}); err != nil {
		t.Fatal(err)
	}
	p.ID = "app/" + testenv.UniqueName("pg-")
	if _, err := m.Put(ctx, p.ID, credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": pg.Host, "port": pg.Port, "database": pg.Database, "username": p.Users[0],
			"strategy_users": []any{p.Users[0], p.Users[1]}, "owner_role": p.Owner, "admin_credential": p.AdminID},
		Secret:   secret.Map{"password": secret.New(pw)},
		Settings: &credential.Settings{Strategy: rotator.Alternating}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// MySQL is a dual-password MariaDB credential stored in a Manager.
type MySQL struct {
	ID       string
	Server   *testenv.MariaDBServer
	User     string
	Database string
	Table    string // one row; User may read it
}

// MySQLCredential creates, on the machine's MariaDB, an admin account with
// CREATE USER, an application account, a database with a probe table it may
// read, stores both credentials in m (dual strategy) and returns them.
func MySQLCredential(t testing.TB, m *credential.Manager) *MySQL {
	t.Helper()
	db := testenv.MariaDB(t)
	ctx := context.Background()
	my := &MySQL{Server: db}
	admin, adminPW := testenv.UniqueName("nc_admin_"), testenv.UniqueName("admin-pw-")
	db.CreateUser(t, admin, "%", adminPW, "GRANT CREATE USER ON *.* TO ?@?")
	my.Database = db.CreateDatabase(t)
	my.Table = testenv.UniqueName("probe_")
	db.Exec(t, "CREATE TABLE `"+my.Database+"`.`"+my.Table+"` (id int PRIMARY KEY)")
	db.Exec(t, "INSERT INTO `"+my.Database+"`.`"+my.Table+"` VALUES (1)")
	pw := testenv.UniqueName("pw-")
	my.User = testenv.UniqueName("nc_u_")
	db.CreateUser(t, my.User, "%", pw, "GRANT SELECT ON `"+my.Database+"`.* TO ?@?")
	adminID := "admin/" + testenv.UniqueName("my-")
	if _, err := m.Put(ctx, adminID, credential.PutRequest{Type: credential.MySQL,
		Fields: map[string]any{"host": db.Host, "port": db.Port, "username": admin, "manages": []any{my.User}},
		Secret: secret.Map{"password": secret.New(adminPW)}}); err != nil {
		t.Fatal(err)
	}
	my.ID = "app/" + testenv.UniqueName("my-")
	if _, err := m.Put(ctx, my.ID, credential.PutRequest{Type: credential.MySQL,
		Fields: map[string]any{"host": db.Host, "port": db.Port, "database": my.Database, "username": my.User,
			"user_host": "%", "admin_credential": adminID},
		Secret:   secret.Map{"password": secret.New(pw)},
		Settings: &credential.Settings{Strategy: rotator.Dual}}); err != nil {
		t.Fatal(err)
	}
	return my
}

// Rotate rotates id with the given grace and, once grace has passed, drives
// the retire step through the engine's scheduler. It returns the new version.
func Rotate(t testing.TB, m *credential.Manager, id string, grace time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := m.Rotate(ctx, id, credential.RotateOptions{Grace: &grace, Reason: "consumer test"})
	if err != nil {
		t.Fatalf("rotate %s: %v", id, err)
	}
	Retire(t, m, id)
	return r.ToVersion
}

// Retire waits for the open rotation of id to end, running the scheduler.
func Retire(t testing.TB, m *credential.Manager, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		open, err := m.Rotations(ctx, id, true, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(open) == 0 {
			return
		}
		if d := time.Until(open[0].DueAt); d > 0 {
			time.Sleep(d)
		}
		if _, err := m.Engine().Tick(ctx); err != nil {
			t.Fatalf("scheduler tick: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("rotation of %s still open: step %s, last error %s", id, open[0].Step, open[0].LastError)
		}
	}
}

// Stale is a Source that keeps serving the version it first read and never
// announces a change, like a consumer whose notification has not arrived yet.
// Refresh (consumer.Refresher) reads past it and serves the result from then
// on. Wrap it in NoRefresh to hide Refresh.
type Stale struct {
	Inner consumer.Source

	mu        sync.Mutex
	pinned    map[string]consumer.Credential
	refreshes int
}

var _ consumer.Refresher = (*Stale)(nil)

// Current implements consumer.Source.
func (s *Stale) Current(ctx context.Context, id string) (consumer.Credential, error) {
	s.mu.Lock()
	c, ok := s.pinned[id]
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := s.Inner.Current(ctx, id)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	if s.pinned == nil {
		s.pinned = map[string]consumer.Credential{}
	}
	s.pinned[id] = c
	s.mu.Unlock()
	return c, nil
}

// Refresh implements consumer.Refresher.
func (s *Stale) Refresh(ctx context.Context, id string) (consumer.Credential, error) {
	c, err := consumer.Refetch(ctx, s.Inner, id)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	s.pinned[id] = c
	s.refreshes++
	s.mu.Unlock()
	return c, nil
}

// Refreshes counts Refresh calls.
func (s *Stale) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// Watch implements consumer.Source: no change is ever delivered.
func (s *Stale) Watch(ctx context.Context, id string) (<-chan consumer.Change, error) {
	ch := make(chan consumer.Change)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

// NoRefresh hides a Stale's Refresh: the Source has only Current and Watch.
type NoRefresh struct{ S *Stale }

// Current implements consumer.Source.
func (n NoRefresh) Current(ctx context.Context, id string) (consumer.Credential, error) {
	return n.S.Current(ctx, id)
}

// Watch implements consumer.Source.
func (n NoRefresh) Watch(ctx context.Context, id string) (<-chan consumer.Change, error) {
	return n.S.Watch(ctx, id)
}
