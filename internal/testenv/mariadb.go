package testenv

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDBServer is the machine's MariaDB (or MySQL) server reached as an
// administrator.
type MariaDBServer struct {
	Host     string
	Port     int
	User     string
	Password string
}

// MariaDB returns the running server at 127.0.0.1:3306 as root with an empty
// password ($NEBULA_TEST_MYSQL_ADDR, _USER, _PASSWORD override). Tests create
// throwaway users and databases with unique names through it.
func MariaDB(t testing.TB) *MariaDBServer {
	t.Helper()
	m := &MariaDBServer{Host: "127.0.0.1", Port: 3306, User: "root"}
	if a := os.Getenv("NEBULA_TEST_MYSQL_ADDR"); a != "" {
		host, port, err := splitHostPort(a)
		if err != nil {
			t.Fatalf("testenv: NEBULA_TEST_MYSQL_ADDR: %v", err)
		}
		m.Host, m.Port = host, port
	}
	if u := os.Getenv("NEBULA_TEST_MYSQL_USER"); u != "" {
		m.User = u
	}
	m.Password = os.Getenv("NEBULA_TEST_MYSQL_PASSWORD")
	db := m.open(m.User, m.Password)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		unavailable(t, "no MariaDB/MySQL server at %s:%d as %s: %v (start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd)", m.Host, m.Port, m.User, err)
	}
	return m
}

func (m *MariaDBServer) open(user, password string) *sql.DB {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = joinHostPort(m.Host, m.Port)
	cfg.User = user
	cfg.Passwd = password
	cfg.InterpolateParams = true // ALTER/CREATE USER cannot be prepared
	cfg.Timeout = 10 * time.Second
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		panic(err) // only on an invalid static config
	}
	return sql.OpenDB(c)
}

// DB returns an administrator connection pool closed at the end of the test.
func (m *MariaDBServer) DB(t testing.TB) *sql.DB {
	db := m.open(m.User, m.Password)
	t.Cleanup(func() { db.Close() })
	return db
}

// Exec runs query with args (interpolated client-side by the driver) as the administrator.
func (m *MariaDBServer) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	db := m.open(m.User, m.Password)
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("testenv: %s: %v", query, err)
	}
}

// CreateUser creates 'name'@'host' with password and drops it at the end of
// the test. Grants are statements with two placeholders for user and host,
// e.g. "GRANT CREATE USER ON *.* TO ?@?".
func (m *MariaDBServer) CreateUser(t testing.TB, name, host, password string, grants ...string) {
	t.Helper()
	m.Exec(t, "CREATE USER ?@? IDENTIFIED BY ?", name, host, password)
	t.Cleanup(func() {
		db := m.open(m.User, m.Password)
		defer db.Close()
		if _, err := db.Exec("DROP USER IF EXISTS ?@?", name, host); err != nil {
			t.Logf("testenv: drop user %q: %v", name, err)
		}
	})
	for _, g := range grants {
		m.Exec(t, g, name, host)
	}
}

// CreateDatabase creates a database with a unique name and drops it at the end
// of the test.
func (m *MariaDBServer) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := UniqueName("nctest_")
	m.Exec(t, "CREATE DATABASE `"+name+"`") // name is [a-z0-9_] only
	t.Cleanup(func() {
		db := m.open(m.User, m.Password)
		defer db.Close()
		db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
	})
	return name
}
