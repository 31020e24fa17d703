package mysql

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// session is one server connection.
type session struct {
	conn    *sql.Conn
	db      *sql.DB
	version string // SELECT VERSION(), once read
}

// recheck hands the connection back to the session's database/sql pool and
// takes it again: database/sql then runs the driver's liveness check (a
// non-blocking read of the socket, no round trip) and replaces a connection
// the server closed with a new login of the same account.
func (s *session) recheck(ctx context.Context) error {
	s.conn.Close()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	s.conn = c
	return nil
}

func (s *session) Close() {
	s.conn.Close()
	s.db.Close()
}

// connect opens one connection as t. InterpolateParams makes the driver inline
// arguments client-side with its own escaping, which follows the server's
// NO_BACKSLASH_ESCAPES status flag: ALTER USER cannot be prepared (error 1064).
func (r *Rotator) connect(ctx context.Context, t target) (*session, error) {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
	cfg.User = t.Username
	cfg.Passwd = t.Password.Reveal()
	cfg.DBName = t.Database
	cfg.TLSConfig = t.TLS
	cfg.InterpolateParams = true
	timeout := rotator.ConnectTimeout(ctx, r.cfg.connectTimeout())
	cfg.Timeout = timeout
	cfg.ReadTimeout = r.cfg.queryTimeout()
	cfg.WriteTimeout = r.cfg.queryTimeout()
	cfg.Logger = nopLogger{} // the driver logs to stderr by default
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, rotator.Wrap(rotator.ClassConfig, "connection settings", err)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, dbrot.AtAddr(cfg.Addr, err)
	}
	return &session{conn: conn, db: db}, nil
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

// db is how the shared login steps reach the server.
func (r *Rotator) db() dbrot.Driver[target, *session] {
	return dbrot.Driver[target, *session]{Connect: r.connect, Close: (*session).Close, ClassOf: classOf,
		Pool: &r.pool, Ping: func(ctx context.Context, s *session) error { return s.conn.PingContext(ctx) }, Dead: dead,
		Recheck: func(ctx context.Context, s *session) error { return s.recheck(ctx) },
		LoginKey: func(t target) string {
			return strings.Join([]string{t.Host, strconv.Itoa(int(t.Port)), t.Database, t.TLS, t.Username, t.Password.Reveal()}, "\x00")
		}}
}

// manager is the connection that changes accounts, and what it knows.
type manager struct {
	*session
	admin   bool // logged in as admin_credential, not as the account itself
	dialect dialect
	release func(error) error // err = m.release(err) ends the step's use of the connection
}

// manager opens the connection that changes accounts: admin_credential when
// base names one, otherwise the first of logins that logs in.
func (r *Rotator) manager(ctx context.Context, res rotator.Resolver, base target, op string, logins ...target) (*manager, error) {
	adm, ok, err := admin(ctx, res, base, op)
	if err != nil {
		return nil, err
	}
	logins = slices.Clone(logins)
	for i := range logins {
		logins[i].Database = "" // as for the admin: account changes need no database
	}
	s, release, err := r.db().Manager(ctx, op, base, adm, ok, logins)
	if err != nil {
		return nil, err
	}
	if s.version == "" {
		if err := s.conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.version); err != nil {
			err = classify(op, "", fmt.Errorf("server version: %w", err))
			return nil, release(err)
		}
	}
	return &manager{session: s, admin: ok, dialect: parseVersion(s.version), release: release}, nil
}

// exec runs one account statement. Arguments are inlined by the driver.
func (m *manager) exec(ctx context.Context, op, priv, query string, args ...any) error {
	_, err := m.conn.ExecContext(ctx, query, args...)
	if err == nil {
		return nil
	}
	return classify(op, priv, redactStatementError(err))
}

// dialect is what SELECT VERSION() says about the server.
type dialect struct {
	mariaDB             bool
	major, minor, patch int
	version             string
}

func parseVersion(v string) dialect {
	d := dialect{mariaDB: strings.Contains(strings.ToLower(v), "mariadb"), version: v}
	num := v
	if d.mariaDB { // MariaDB may report "5.5.5-<real version>" for old replication clients
		num = strings.TrimPrefix(num, "5.5.5-")
	}
	if i := strings.IndexFunc(num, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		num = num[:i]
	}
	parts := strings.SplitN(num, ".", 3)
	for i, p := range parts {
		n, _ := strconv.Atoi(p)
		switch i {
		case 0:
			d.major = n
		case 1:
			d.minor = n
		case 2:
			d.patch = n
		}
	}
	return d
}

func (d dialect) atLeast(major, minor, patch int) bool {
	if d.major != major {
		return d.major > major
	}
	if d.minor != minor {
		return d.minor > minor
	}
	return d.patch >= patch
}

// dual reports whether the server keeps two passwords for one account:
// MariaDB 10.4+ (IDENTIFIED VIA ... OR ...), MySQL 8.0.14+ (RETAIN CURRENT PASSWORD).
func (d dialect) dual() bool {
	if d.mariaDB {
		return d.atLeast(10, 4, 0)
	}
	return d.atLeast(8, 0, 14)
}

// nativeHash is the mysql_native_password hash, "*" + HEX(SHA1(SHA1(pw))): what
// MariaDB stores, so sending it keeps the plaintext out of server logs.
func nativeHash(pw string) string {
	h1 := sha1.Sum([]byte(pw))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}
