package postgres

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// connect opens one connection as t. The connection string is built with
// net/url (no hand-made quoting); user and password are set on the parsed
// config so the password never appears in a string that could be echoed.
func (r *Rotator) connect(ctx context.Context, t target) (*pgx.Conn, error) {
	q := url.Values{}
	q.Set("host", t.Host)
	q.Set("port", strconv.Itoa(int(t.Port)))
	q.Set("dbname", t.Database)
	q.Set("sslmode", t.SSLMode)
	cfg, err := pgx.ParseConfig("postgres:///?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	cfg.User = t.Username
	cfg.Password = t.Password.Reveal()
	timeout := rotator.ConnectTimeout(ctx, r.cfg.connectTimeout())
	cfg.ConnectTimeout = timeout
	cfg.RuntimeParams["application_name"] = r.cfg.applicationName()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, dbrot.AtAddr(net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))), err)
	}
	return c, nil
}

// db is how the shared login steps reach PostgreSQL.
func (r *Rotator) db() dbrot.Driver[target, *pgx.Conn] {
	return dbrot.Driver[target, *pgx.Conn]{Connect: r.connect, ClassOf: classOf,
		Close: func(c *pgx.Conn) { c.Close(context.Background()) },
		Pool:  &r.pool, Ping: func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }, Dead: dead,
		LoginKey: func(t target) string {
			return strings.Join([]string{t.Host, strconv.Itoa(int(t.Port)), t.Database, t.SSLMode, t.Username, t.Password.Reveal()}, "\x00")
		}}
}

// manager opens the connection that changes roles: the admin credential when
// base names one, otherwise the first of logins that logs in (the role
// changing itself).
// The caller ends its use with err = release(err), err being the step's
// outcome (see dbrot.Driver.Manager).
func (r *Rotator) manager(ctx context.Context, res rotator.Resolver, base target, op string, logins ...target) (*pgx.Conn, func(error) error, error) {
	adm, ok, err := admin(ctx, res, base, op)
	if err != nil {
		return nil, nil, err
	}
	return r.db().Manager(ctx, op, base, adm, ok, logins)
}
