package mysql_test

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

// The helpers all database rotators' tests share, under the names used here.
var (
	ctx   = dbrottest.Ctx
	stage = dbrottest.Stage
	// No error may show a password, nor the mysql_native_password hash
	// MariaDB is sent in its place.
	errs      = dbrottest.Errors{Derived: func(p string) []string { return []string{nativeHashForTest(p)} }}
	wantClass = errs.WantClass
)

type env struct {
	db      *testenv.MariaDBServer
	res     dbrottest.Resolver
	adminID string
	admin   string
	adminPW string
}

// newEnv creates an admin account holding only CREATE USER.
func newEnv(t testing.TB) *env {
	db := testenv.MariaDB(t)
	e := &env{db: db, res: dbrottest.Resolver{}, adminID: "admin/" + testenv.UniqueName(""),
		admin: testenv.UniqueName("nc_admin_"), adminPW: testenv.UniqueName("admin-pw-")}
	db.CreateUser(t, e.admin, "%", e.adminPW, "GRANT CREATE USER ON *.* TO ?@?")
	e.res[e.adminID] = rotator.Credential{ID: e.adminID, Type: "mysql",
		Fields: map[string]any{"host": db.Host, "port": db.Port, "username": e.admin},
		Secret: secret.Map{"password": secret.New(e.adminPW)}}
	return e
}

func (e *env) cred(user, pw string, f map[string]any) rotator.Credential {
	fields := map[string]any{"host": e.db.Host, "port": fmt.Sprint(e.db.Port), "username": user, "user_host": "%"}
	for k, v := range f {
		fields[k] = v
	}
	return rotator.Credential{ID: "db/" + user, Type: "mysql", Version: 1, Fields: fields, Secret: secret.Map{"password": secret.New(pw)}}
}

// single creates one account; withAdmin routes changes through the admin.
// name is prefix + a unique part, ending in a backslash too when prefix does.
func name(prefix, kind string) string {
	n := prefix + testenv.UniqueName(kind)
	if strings.HasSuffix(prefix, `\`) {
		n += `\`
	}
	return n
}

func (e *env) single(t testing.TB, prefix string, withAdmin bool) rotator.Credential {
	u, pw := name(prefix, "u_"), testenv.UniqueName("pw-")
	e.db.CreateUser(t, u, "%", pw)
	f := map[string]any{}
	if withAdmin {
		f["admin_credential"] = e.adminID
	}
	return e.cred(u, pw, f)
}

// pair creates accounts a (active) and b (locked) for alternating.
func (e *env) pair(t testing.TB, prefix string) rotator.Credential {
	a, b, pw := name(prefix, "a_"), name(prefix, "b_"), testenv.UniqueName("pw-")
	e.db.CreateUser(t, a, "%", pw)
	e.db.CreateUser(t, b, "%", testenv.UniqueName("unused-"), "ALTER USER ?@? ACCOUNT LOCK")
	return e.cred(a, pw, map[string]any{"strategy_users": []any{a, b}, "admin_credential": e.adminID})
}

func open(c rotator.Credential) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = fmt.Sprintf("%v:%v", c.Fields["host"], c.Fields["port"])
	cfg.User = c.String("username")
	cfg.Passwd = c.Secret["password"].Reveal()
	if d := c.String("database"); d != "" {
		cfg.DBName = d
	}
	cfg.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// login opens one fresh connection as c, without the rotator.
func login(ctx context.Context, c rotator.Credential) (*sql.Conn, func(), error) {
	db, err := open(c)
	if err != nil {
		return nil, nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return conn, func() { conn.Close(); db.Close() }, nil
}

func authenticates(t *testing.T, c rotator.Credential) bool {
	t.Helper()
	_, done, err := login(context.Background(), c)
	if err == nil {
		done()
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1045 || me.Number == 4151 || me.Number == 3118) {
		return false
	}
	t.Fatalf("login as %q: %v", c.String("username"), err)
	return false
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	run := func(name string, st rotator.Strategy, newCred func(t *testing.T) rotator.Credential) {
		t.Run(name, func(t *testing.T) {
			rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
				Strategies: []rotator.Strategy{st}, NewCredential: newCred})
		})
	}
	run("dual_admin", rotator.Dual, func(t *testing.T) rotator.Credential { return e.single(t, "", true) })
	run("alternating", rotator.Alternating, func(t *testing.T) rotator.Credential { return e.pair(t, "") })
	run("in_place_self", rotator.InPlace, func(t *testing.T) rotator.Credential { return e.single(t, "", false) })
	run("in_place_admin", rotator.InPlace, func(t *testing.T) rotator.Credential { return e.single(t, "", true) })
	// Without an admin the account changes itself, which MariaDB allows with CREATE USER.
	run("dual_self", rotator.Dual, func(t *testing.T) rotator.Credential {
		c := e.single(t, "", false)
		e.db.Exec(t, "GRANT CREATE USER ON *.* TO ?@?", c.String("username"), "%")
		return c
	})
	t.Run("sanitized", func(t *testing.T) {
		rotatortest.Run(t, rotatortest.Harness{Rotator: rotator.Sanitize(rot), Resolver: e.res, Authenticates: authenticates,
			Strategies: []rotator.Strategy{rotator.Dual}, NewCredential: func(t *testing.T) rotator.Credential { return e.single(t, "", true) }})
	})
}

// Account names with quotes, backslashes, spaces and injection attempts work
// and inject nothing: the victim account survives.
func TestHostileUserNames(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	victim := testenv.UniqueName("victim_")
	e.db.CreateUser(t, victim, "%", testenv.UniqueName("pw-"))
	for _, prefix := range []string{
		`it's "q" \ `,
		`"; DROP USER ` + victim + `; --`,
		`'); DROP USER '` + victim + `'@'%'; -- `,
		`\' OR 1=1 `,
		`tail\`,
	} {
		t.Run(prefix, func(t *testing.T) {
			rotatortest.Run(t, rotatortest.Harness{Rotator: rot, Resolver: e.res, Authenticates: authenticates,
				NewCredential: func(t *testing.T) rotator.Credential {
					switch {
					case strings.Contains(t.Name(), "alternating"):
						return e.pair(t, prefix)
					case strings.Contains(t.Name(), "dual"):
						return e.single(t, prefix, true)
					}
					return e.single(t, prefix, false)
				}})
		})
	}
	var n int
	if err := e.db.DB(t).QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = ?", victim).Scan(&n); err != nil || n != 1 {
		t.Fatalf("victim account gone (count %d, err %v): injection", n, err)
	}
}

// The plaintext never reaches the server on MariaDB: the account stores the
// hash we sent, and SHOW CREATE USER lists both during dual grace.
func TestDualOnMariaDBListsBothHashes(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	cur := e.single(t, "", true)
	pend := stage(t, rot, e.res, cur, rotator.Dual)
	if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
	var stmt string
	if err := e.db.DB(t).QueryRow("SHOW CREATE USER ?@?", cur.String("username"), "%").Scan(&stmt); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stmt, nativeHashForTest(pend.Secret["password"].Reveal())) {
		t.Fatalf("the stored hash is not the one computed client-side: %s", stmt)
	}
	if strings.Count(stmt, "mysql_native_password") != 2 {
		t.Fatalf("want two native methods during grace: %s", stmt)
	}
	if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual, Resolver: e.res}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.DB(t).QueryRow("SHOW CREATE USER ?@?", cur.String("username"), "%").Scan(&stmt); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stmt, " OR ") {
		t.Fatalf("old method left after retire: %s", stmt)
	}
}

func nativeHashForTest(pw string) string {
	h1 := sha1.Sum([]byte(pw))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}

func TestStageValidates(t *testing.T) {
	rot := myrot.New(myrot.Config{})
	dbrottest.StageRefuses(t, rot, map[string]any{"username": "u"}, rotator.Dual, map[string]map[string]any{
		"short":      {"password_policy": map[string]any{"length": 4}},
		"non-ascii":  {"password_policy": map[string]any{"alphabet": "abcdefghijé"}},
		"bad tls":    {"tls": "maybe"},
		"bad port":   {"port": -1},
		"one user":   {"strategy_users": []any{"u"}},
		"no user":    {"username": ""},
		"wrong pair": {"strategy_users": []any{"a", "b"}},
	})
}
