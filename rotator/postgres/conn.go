package postgres

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/nebula-credential/nebula-credential/rotator"
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
	cfg.ConnectTimeout = r.cfg.connectTimeout()
	cfg.RuntimeParams["application_name"] = r.cfg.applicationName()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.connectTimeout())
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// logsIn reports whether t can log in now. A refusal of the credential is
// (false, nil); anything else (unreachable server) is an error.
func (r *Rotator) logsIn(ctx context.Context, t target, op string) (bool, error) {
	c, err := r.connect(ctx, t)
	if err == nil {
		c.Close(context.Background())
		return true, nil
	}
	if isAuthFailure(err) {
		return false, nil
	}
	return false, classify(op, "", err)
}

// manager opens the connection that changes roles: the admin credential when
// base names one, otherwise the first of logins that logs in (the role
// changing itself).
func (r *Rotator) manager(ctx context.Context, res rotator.Resolver, base target, op string, logins ...target) (*pgx.Conn, error) {
	adm, ok, err := admin(ctx, res, base, op)
	if err != nil {
		return nil, err
	}
	if ok {
		c, err := r.connect(ctx, adm)
		if err != nil {
			// The admin's own login refused is ClassAuth: fix the admin credential.
			return nil, classify(op, "", fmt.Errorf("admin login as %q: %w", adm.Username, err))
		}
		return c, nil
	}
	var last error
	for _, l := range logins {
		c, err := r.connect(ctx, l)
		if err == nil {
			return c, nil
		}
		if !isAuthFailure(err) {
			return nil, classify(op, "", err)
		}
		last = err
	}
	return nil, classify(op, "", fmt.Errorf("no admin_credential set and no known password logs in as %q: %w", base.Username, last))
}
