// Package postgres rotates PostgreSQL passwords. Register New(Config{}) for the
// credential type "postgres".
//
// Strategies, best first:
//
//   - Alternating: two LOGIN roles (field strategy_users) that are members of
//     one NOLOGIN owner role (owner_role) take turns. Apply gives the inactive
//     role the new password and LOGIN, and sets VALID UNTIL = grace end on the
//     role being retired, so PostgreSQL itself ends it even if the engine dies.
//     Retire removes the old role's login (NOLOGIN, PASSWORD NULL); sessions
//     already open are not terminated.
//   - InPlace: the role changes its own password (connected with the current
//     password; Revert connects with the new one and sets the old one back).
//     Clients holding the old password cannot log in from Apply until they get
//     the new one.
//
// Role changes go through the admin credential named by admin_credential when
// there is one (it needs CREATEROLE), otherwise through the credential's own
// login. Passwords are sent as SCRAM-SHA-256 verifiers computed client-side, so
// the plaintext never reaches the server or its logs; roles are quoted with
// pgx.Identifier and literals with the connection's own escaping.
//
// Fields: host, port (number or string), database, username, sslmode (default
// disable), probe (default SELECT 1), strategy_users, owner_role,
// admin_credential, password_policy. Secret: password.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// Config configures a Rotator. The zero value means the defaults.
type Config struct {
	// ConnectTimeout bounds each login. Default 10s.
	ConnectTimeout time.Duration
	// ApplicationName is sent as application_name. Default "nebula-credential".
	ApplicationName string
	// AdminIdle bounds the admin connections kept logged in between steps,
	// so a rotation does not pay a new admin login (a backend fork and a
	// SCRAM exchange) at every step: 0 means 8, negative keeps none. An
	// admin connection is taken only after the engine has resolved the admin
	// (and so applied the binding rule) for that step.
	AdminIdle int
	// AdminIdleTimeout closes an admin connection unused this long. Default
	// 30s.
	AdminIdleTimeout time.Duration
	// AdminPingIdle is how long an admin connection may have been idle
	// before it is pinged on reuse: 0 means 1s, negative pings it at every
	// reuse. A step that finds an unpinged connection dead is redone once
	// on a fresh admin login.
	AdminPingIdle time.Duration
}

// Validate reports a Config that cannot be used.
func (c Config) Validate() error {
	if c.ConnectTimeout < 0 {
		return errors.New("postgres: negative ConnectTimeout")
	}
	return nil
}

func (c Config) connectTimeout() time.Duration { return cmp.Or(c.ConnectTimeout, 10*time.Second) }

func (c Config) applicationName() string { return cmp.Or(c.ApplicationName, "nebula-credential") }

// Rotator rotates PostgreSQL role passwords. It is safe for concurrent use.
// The only connections it keeps between calls are idle admin connections
// (Config.AdminIdle); Close closes them.
type Rotator struct {
	cfg  Config
	pool dbrot.Pool[*pgx.Conn]
}

var (
	_ rotator.Rotator = (*Rotator)(nil)
	_ rotator.Checker = (*Rotator)(nil)
)

// New returns a Rotator. An invalid cfg makes every call fail with ClassConfig.
func New(cfg Config) *Rotator {
	r := &Rotator{cfg: cfg}
	r.pool.MaxIdle, r.pool.IdleTimeout, r.pool.PingIdle = cfg.AdminIdle, cfg.AdminIdleTimeout, cfg.AdminPingIdle
	return r
}

// Close closes the idle admin connections. The Rotator stays usable.
func (r *Rotator) Close() error {
	r.pool.Close()
	return nil
}

// Capabilities: alternating users, then in place.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Alternating, rotator.InPlace}}
}

// checkConfig is the check every step starts with.
func (r *Rotator) checkConfig(op string) error {
	return rotator.Wrap(rotator.ClassConfig, op, r.cfg.Validate())
}

func (r *Rotator) unsupported(op string, s rotator.Strategy) error {
	return dbrot.Unsupported(op, "postgres", s, r.Capabilities().Strategies)
}

// Stage generates the next password from password_policy. For Alternating the
// pending version's username is the inactive strategy user. It changes nothing
// on the server.
func (r *Rotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	const op = "stage"
	cur, err := dbrot.Version(op, r.checkConfig, parse, req.Current)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	var fields map[string]any
	switch req.Strategy {
	case rotator.Alternating:
		other, err := cur.other(op)
		if err != nil {
			return rotator.StageResponse{}, err
		}
		fields = map[string]any{"username": other}
	case rotator.InPlace:
	default:
		return rotator.StageResponse{}, r.unsupported(op, req.Strategy)
	}
	return cur.StagePassword(op, fields)
}

// Apply makes the server accept req.Pending. If the pending password already
// logs in it changes no password and reports Skipped (for Alternating it still
// sets VALID UNTIL on the retiring role, so a repeated Apply can move the
// deadline). The Alternating change is one implicit transaction: the new
// role's password and LOGIN, and the old role's deadline, land together.
func (r *Rotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.ApplyResponse, error) {
		req.FirstAttempt = req.FirstAttempt && !again
		return r.apply(ctx, req)
	})
}

func (r *Rotator) apply(ctx context.Context, req rotator.ApplyRequest) (resp rotator.ApplyResponse, err error) {
	const op = "apply"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	cur, pend, err := dbrot.Versions(op, r.checkConfig, parse, req.Current, req.Pending)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, cur.Password, pend.Password) }()
	if pend.Password.IsZero() {
		return resp, rotator.Errorf(rotator.ClassConfig, op, "pending version has no password")
	}
	switch req.Strategy {
	case rotator.Alternating:
		other, err := cur.other(op)
		if err != nil {
			return resp, err
		}
		if pend.Username != other {
			return resp, rotator.Errorf(rotator.ClassConfig, op, "pending username %q is not the inactive strategy user %q", pend.Username, other)
		}
	case rotator.InPlace:
		if pend.Username != cur.Username {
			return resp, rotator.Errorf(rotator.ClassConfig, op, "in_place cannot change the username (%q to %q)", cur.Username, pend.Username)
		}
	default:
		return resp, r.unsupported(op, req.Strategy)
	}

	ok := false // a fresh secret cannot work yet: skip the login that checks
	if !req.FirstAttempt {
		if ok, err = r.db().LogsIn(ctx, pend, op+": check pending"); err != nil {
			return resp, err
		}
	}
	if ok && req.Strategy == rotator.InPlace {
		return rotator.ApplyResponse{Skipped: true}, nil
	}
	conn, release, err := r.manager(ctx, req.Resolver, cur, op, cur)
	if err != nil {
		return resp, err
	}
	defer func() { err = release(err) }()

	var stmt string
	if !ok {
		v, err := verifierFor(req.Prepared, pend.Password)
		if err != nil {
			return resp, rotator.Wrap(rotator.ClassUnknown, op, err)
		}
		lit, err := literal(conn, v)
		if err != nil {
			return resp, rotator.Wrap(rotator.ClassUnknown, op, err)
		}
		if req.Strategy == rotator.InPlace {
			stmt = "ALTER ROLE " + ident(pend.Username) + " WITH PASSWORD " + lit
		} else {
			stmt = "ALTER ROLE " + ident(pend.Username) + " WITH LOGIN PASSWORD " + lit + " VALID UNTIL 'infinity'"
		}
	}
	if req.Strategy == rotator.Alternating && !req.GraceEndsAt.IsZero() {
		until, err := literal(conn, timestamp(req.GraceEndsAt))
		if err != nil {
			return resp, rotator.Wrap(rotator.ClassUnknown, op, err)
		}
		if stmt != "" {
			stmt += "; "
		}
		stmt += "ALTER ROLE " + ident(cur.Username) + " VALID UNTIL " + until
	}
	if stmt != "" {
		if err := alter(ctx, conn, op, stmt); err != nil {
			return resp, err
		}
	}
	return rotator.ApplyResponse{Skipped: ok}, nil
}

// Verify logs in with req.Credential on a fresh connection and runs its probe.
// A refused login is ClassRejected.
func (r *Rotator) Verify(ctx context.Context, req rotator.VerifyRequest) (resp rotator.VerifyResponse, err error) {
	const op = "verify"
	t, err := dbrot.Version(op, r.checkConfig, parse, req.Credential)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, t.Password) }()
	c, err := r.db().VerifyLogin(ctx, t, "")
	if err != nil {
		return resp, err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, t.Probe); err != nil {
		return resp, classify("verify probe", "privileges the probe query needs", err)
	}
	return rotator.VerifyResponse{Detail: fmt.Sprintf("logged in as %s, probe ok", t.Username)}, nil
}

// Retire makes the server refuse req.Old. InPlace: nothing is left to do (Apply
// replaced the password). Alternating: the current role gets LOGIN and no
// deadline (this also serves a rollback, where the restored role had one), its
// login is checked, and only then does the old role lose LOGIN and its
// password. Idempotent.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RetireResponse, error) {
		return r.retire(ctx, req)
	})
}

func (r *Rotator) retire(ctx context.Context, req rotator.RetireRequest) (resp rotator.RetireResponse, err error) {
	const op = "retire"
	r.pool.Forget(req.Current.ID)
	old, cur, err := dbrot.Versions(op, r.checkConfig, parse, req.Old, req.Current)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, old.Password, cur.Password) }()
	switch req.Strategy {
	case rotator.InPlace:
		return resp, nil
	case rotator.Alternating:
	default:
		return resp, r.unsupported(op, req.Strategy)
	}
	other, err := cur.other(op)
	if err != nil {
		return resp, err
	}
	if old.Username != other {
		return resp, rotator.Errorf(rotator.ClassConfig, op, "refusing to retire %q: it is not the other strategy user %q", old.Username, other)
	}
	conn, release, err := r.manager(ctx, req.Resolver, cur, op, cur, old)
	if err != nil {
		return resp, err
	}
	defer func() { err = release(err) }()
	if err := alter(ctx, conn, op, "ALTER ROLE "+ident(cur.Username)+" WITH LOGIN VALID UNTIL 'infinity'"); err != nil {
		return resp, err
	}
	if err := r.db().CheckCurrent(ctx, op, cur, old); err != nil {
		return resp, err
	}
	return resp, alter(ctx, conn, op, "ALTER ROLE "+ident(old.Username)+" WITH NOLOGIN PASSWORD NULL")
}

// Revert undoes Apply. InPlace: if the current password logs in there is
// nothing to do; otherwise the role (logged in with the pending password, or
// the admin) sets the current one back. Alternating: in one transaction the
// current role gets LOGIN and no deadline, and the pending role loses LOGIN and
// its password. Idempotent, and safe when Apply never ran.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RevertResponse, error) {
		return r.revert(ctx, req)
	})
}

func (r *Rotator) revert(ctx context.Context, req rotator.RevertRequest) (resp rotator.RevertResponse, err error) {
	const op = "revert"
	r.pool.Forget(req.Current.ID)
	cur, pend, err := dbrot.Versions(op, r.checkConfig, parse, req.Current, req.Pending)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, cur.Password, pend.Password) }()
	switch req.Strategy {
	case rotator.InPlace:
		if pend.Username != cur.Username {
			return resp, rotator.Errorf(rotator.ClassConfig, op, "in_place cannot change the username (%q to %q)", cur.Username, pend.Username)
		}
		ok, lerr := r.db().LogsIn(ctx, cur, op+": check current")
		if lerr != nil || ok {
			return resp, lerr
		}
		conn, release, err := r.manager(ctx, req.Resolver, cur, op, pend)
		if err != nil {
			return resp, err
		}
		defer func() { err = release(err) }()
		v, err := scramVerifier(cur.Password.Reveal())
		if err != nil {
			return resp, rotator.Wrap(rotator.ClassUnknown, op, err)
		}
		lit, err := literal(conn, v)
		if err != nil {
			return resp, rotator.Wrap(rotator.ClassUnknown, op, err)
		}
		return resp, alter(ctx, conn, op, "ALTER ROLE "+ident(cur.Username)+" WITH PASSWORD "+lit)
	case rotator.Alternating:
		other, err := cur.other(op)
		if err != nil {
			return resp, err
		}
		if pend.Username != other {
			return resp, rotator.Errorf(rotator.ClassConfig, op, "refusing to revert %q: it is not the other strategy user %q", pend.Username, other)
		}
		conn, release, err := r.manager(ctx, req.Resolver, cur, op, cur, pend)
		if err != nil {
			return resp, err
		}
		defer func() { err = release(err) }()
		return resp, alter(ctx, conn, op, "ALTER ROLE "+ident(cur.Username)+" WITH LOGIN VALID UNTIL 'infinity'; "+
			"ALTER ROLE "+ident(pend.Username)+" WITH NOLOGIN PASSWORD NULL")
	default:
		return resp, r.unsupported(op, req.Strategy)
	}
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes s as an SQL string literal with the connection's own escaping.
func literal(c *pgx.Conn, s string) (string, error) {
	e, err := c.PgConn().EscapeString(s)
	if err != nil {
		return "", err
	}
	return "'" + e + "'", nil
}

// timestamp formats t for VALID UNTIL (microseconds, UTC).
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000") + "+00" }

// alter runs role statements (simple protocol: several statements form one
// implicit transaction). A permission error names CREATEROLE.
func alter(ctx context.Context, c *pgx.Conn, op, stmt string) error {
	_, err := c.Exec(ctx, stmt)
	if err == nil {
		return nil
	}
	err = redactStatementError(err)
	if classOf(err) == rotator.ClassPermission {
		err = fmt.Errorf("%w (the managing role needs CREATEROLE; on PostgreSQL 16+ also ADMIN OPTION on the role)", err)
	}
	return classify(op+": alter role", "CREATEROLE", err)
}
