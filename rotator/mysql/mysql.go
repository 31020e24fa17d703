// Package mysql rotates MySQL and MariaDB account passwords. Register
// New(Config{}) for the credential type "mysql".
//
// Strategies, best first:
//
//   - Dual: one account, old and new password valid together. MariaDB 10.4+:
//     ALTER USER ... IDENTIFIED VIA mysql_native_password USING <new> OR
//     mysql_native_password USING <old>; Retire leaves only the new one.
//     MySQL 8.0.14+: RETAIN CURRENT PASSWORD, then DISCARD OLD PASSWORD.
//   - Alternating: two accounts (strategy_users) take turns; Retire locks the
//     old account (ACCOUNT LOCK) and replaces its password with a random one
//     nobody stores; sessions already open are not killed.
//   - InPlace: the account's password is replaced. Without an admin the
//     account changes its own (MariaDB: SET PASSWORD, which replaces only the
//     first of several OR'ed methods).
//
// Account changes go through admin_credential when set (it needs CREATE
// USER), otherwise through the account's own login (which then needs CREATE
// USER for dual/alternating on MariaDB; APPLICATION_PASSWORD_ADMIN for dual on
// MySQL). The dialect comes from SELECT VERSION(). On MariaDB passwords are
// sent as mysql_native_password hashes, never as plaintext (falling back to
// PASSWORD(?) when --strict-password-validation refuses hashes). Every
// literal, account names included ('user'@'host'), is inlined by the driver's
// own escaping, which honours NO_BACKSLASH_ESCAPES.
//
// Fields: host, port (number or string), database, username, user_host
// (default %), tls (false, true, skip-verify, preferred), probe (default
// SELECT 1), strategy_users, admin_credential, password_policy. Secret: password.
package mysql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Config configures a Rotator. The zero value means the defaults.
type Config struct {
	// ConnectTimeout bounds each login. Default 10s.
	ConnectTimeout time.Duration
	// QueryTimeout bounds each read or write on a connection. Default 30s.
	QueryTimeout time.Duration
	// AdminIdle bounds the admin connections kept logged in between steps:
	// 0 means 8, negative keeps none. An admin connection is taken only
	// after the engine has resolved the admin (and so applied the binding
	// rule) for that step.
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
	if c.ConnectTimeout < 0 || c.QueryTimeout < 0 {
		return errors.New("mysql: negative timeout")
	}
	return nil
}

func (c Config) connectTimeout() time.Duration { return cmp.Or(c.ConnectTimeout, 10*time.Second) }

func (c Config) queryTimeout() time.Duration { return cmp.Or(c.QueryTimeout, 30*time.Second) }

// Rotator rotates MySQL/MariaDB passwords. It is safe for concurrent use.
// The only connections it keeps between calls are idle admin connections
// (Config.AdminIdle); Close closes them.
type Rotator struct {
	cfg  Config
	pool dbrot.Pool[*session]
}

var _ rotator.Rotator = (*Rotator)(nil)

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

// Capabilities: dual, alternating, in place.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace}}
}

// checkConfig is the check every step starts with.
func (r *Rotator) checkConfig(op string) error {
	return rotator.Wrap(rotator.ClassConfig, op, r.cfg.Validate())
}

func (r *Rotator) unsupported(op string, s rotator.Strategy) error {
	return dbrot.Unsupported(op, "mysql", s, r.Capabilities().Strategies)
}

// Stage generates the next password from password_policy; for Alternating the
// pending version's username is the other strategy user. Nothing on the
// server changes.
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
	case rotator.Dual, rotator.InPlace:
	default:
		return rotator.StageResponse{}, r.unsupported(op, req.Strategy)
	}
	return cur.StagePassword(op, fields)
}

// checkPair validates the usernames of two versions for a strategy.
func (r *Rotator) checkPair(op string, st rotator.Strategy, cur, other target) error {
	switch st {
	case rotator.Alternating:
		want, err := cur.other(op)
		if err != nil {
			return err
		}
		if other.Username != want {
			return rotator.Errorf(rotator.ClassConfig, op, "%q is not the other strategy user %q", other.Username, want)
		}
	case rotator.Dual, rotator.InPlace:
		if other.Username != cur.Username {
			return rotator.Errorf(rotator.ClassConfig, op, "%s cannot change the username (%q, %q)", st, cur.Username, other.Username)
		}
	default:
		return r.unsupported(op, st)
	}
	return nil
}

// Apply makes the server accept req.Pending; for Dual and Alternating the
// current password keeps working. If the pending password already logs in it
// changes nothing and reports Skipped: this is what makes a repeated Dual
// Apply safe on MySQL, where a second RETAIN would push the old password out.
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
	if err := r.checkPair(op, req.Strategy, cur, pend); err != nil {
		return resp, err
	}
	if pend.Password.IsZero() {
		return resp, rotator.Errorf(rotator.ClassConfig, op, "pending version has no password")
	}
	ok := false // a fresh secret cannot work yet: skip the login that checks
	if !req.FirstAttempt {
		if ok, err = r.db().LogsIn(ctx, pend, op+": check pending"); err != nil {
			return resp, err
		}
	}
	if ok {
		return rotator.ApplyResponse{Skipped: true}, nil
	}
	m, err := r.manager(ctx, req.Resolver, cur, op, cur)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	switch req.Strategy {
	case rotator.Dual:
		if !m.dialect.dual() {
			return resp, rotator.Errorf(rotator.ClassConfig, op, "dual needs MariaDB 10.4+ or MySQL 8.0.14+ (server is %s): use alternating", m.dialect.version)
		}
		return resp, m.setTwo(ctx, op, pend.Username, pend.UserHost, pend.Password, cur.Password)
	case rotator.Alternating:
		return resp, m.setOne(ctx, op, pend.Username, pend.UserHost, pend.Password, " ACCOUNT UNLOCK")
	default: // InPlace
		if m.admin {
			return resp, m.setOne(ctx, op, pend.Username, pend.UserHost, pend.Password, "")
		}
		return resp, m.setOwn(ctx, op, pend.Password, cur.Password)
	}
}

// Verify logs in with req.Credential on a fresh connection and runs its
// probe. A refused login is ClassRejected.
func (r *Rotator) Verify(ctx context.Context, req rotator.VerifyRequest) (resp rotator.VerifyResponse, err error) {
	const op = "verify"
	t, err := dbrot.Version(op, r.checkConfig, parse, req.Credential)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, t.Password) }()
	priv := ""
	if t.Database != "" {
		priv = "access to database " + t.Database
	}
	s, err := r.db().VerifyLogin(ctx, t, priv)
	if err != nil {
		return resp, err
	}
	defer s.Close()
	rows, err := s.conn.QueryContext(ctx, t.Probe)
	if err == nil {
		for rows.Next() {
		}
		err = rows.Err()
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return resp, classify("verify probe", "privileges the probe query needs", err)
	}
	return rotator.VerifyResponse{Detail: fmt.Sprintf("logged in as %s, probe ok", t.Username)}, nil
}

// Retire makes the server refuse req.Old. Dual: the account keeps only the
// current password (MariaDB: set it alone; MySQL: set it as primary, then
// DISCARD OLD PASSWORD, which is right whichever of the two was primary).
// Alternating: the current account is unlocked and checked, then the old one
// is locked with a random password. InPlace: nothing is left to do. Idempotent.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RetireResponse, error) {
		return r.retire(ctx, req)
	})
}

func (r *Rotator) retire(ctx context.Context, req rotator.RetireRequest) (resp rotator.RetireResponse, err error) {
	const op = "retire"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	old, cur, err := dbrot.Versions(op, r.checkConfig, parse, req.Old, req.Current)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, old.Password, cur.Password) }()
	if err := r.checkPair(op, req.Strategy, cur, old); err != nil {
		return resp, err
	}
	if req.Strategy == rotator.InPlace {
		return resp, nil
	}
	m, err := r.manager(ctx, req.Resolver, cur, op, cur, old)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	if req.Strategy == rotator.Dual {
		if m.dialect.mariaDB {
			return resp, m.setOne(ctx, op, cur.Username, cur.UserHost, cur.Password, "")
		}
		if err := m.setOne(ctx, op, cur.Username, cur.UserHost, cur.Password, ""); err != nil {
			return resp, err
		}
		return resp, m.exec(ctx, op, m.privilege(), "ALTER USER ?@? DISCARD OLD PASSWORD", cur.Username, cur.UserHost)
	}
	if err := m.exec(ctx, op, "CREATE USER", "ALTER USER ?@? ACCOUNT UNLOCK", cur.Username, cur.UserHost); err != nil {
		return resp, err
	}
	if err := r.db().CheckCurrent(ctx, op, cur, old); err != nil {
		return resp, err
	}
	return resp, m.lock(ctx, op, old.Username, old.UserHost)
}

// Revert undoes Apply: the server accepts req.Current again and refuses
// req.Pending. Idempotent, and safe when Apply never ran.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RevertResponse, error) {
		return r.revert(ctx, req)
	})
}

func (r *Rotator) revert(ctx context.Context, req rotator.RevertRequest) (resp rotator.RevertResponse, err error) {
	const op = "revert"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	cur, pend, err := dbrot.Versions(op, r.checkConfig, parse, req.Current, req.Pending)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, cur.Password, pend.Password) }()
	if err := r.checkPair(op, req.Strategy, cur, pend); err != nil {
		return resp, err
	}
	if req.Strategy != rotator.Alternating {
		curOK, err := r.db().LogsIn(ctx, cur, op+": check current")
		if err != nil {
			return resp, err
		}
		if curOK && req.Strategy == rotator.InPlace {
			return resp, nil // one password per account: pending cannot work too
		}
		if curOK {
			pendOK, err := r.db().LogsIn(ctx, pend, op+": check pending")
			if err != nil || !pendOK {
				return resp, err
			}
		}
	}
	m, err := r.manager(ctx, req.Resolver, cur, op, cur, pend)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	switch req.Strategy {
	case rotator.Alternating:
		if err := m.exec(ctx, op, "CREATE USER", "ALTER USER ?@? ACCOUNT UNLOCK", cur.Username, cur.UserHost); err != nil {
			return resp, err
		}
		return resp, m.lock(ctx, op, pend.Username, pend.UserHost)
	case rotator.Dual:
		if err := m.setOne(ctx, op, cur.Username, cur.UserHost, cur.Password, ""); err != nil {
			return resp, err
		}
		if m.dialect.mariaDB {
			return resp, nil
		}
		return resp, m.exec(ctx, op, m.privilege(), "ALTER USER ?@? DISCARD OLD PASSWORD", cur.Username, cur.UserHost)
	default: // InPlace
		if m.admin {
			return resp, m.setOne(ctx, op, cur.Username, cur.UserHost, cur.Password, "")
		}
		return resp, m.setOwn(ctx, op, cur.Password, pend.Password)
	}
}

// privilege is what an account change needs on this connection.
func (m *manager) privilege() string {
	if !m.admin && !m.dialect.mariaDB {
		return "APPLICATION_PASSWORD_ADMIN or CREATE USER"
	}
	return "CREATE USER"
}

// setOne makes pw the account's only password. suffix is a constant lock
// clause ("", " ACCOUNT UNLOCK", " ACCOUNT LOCK").
func (m *manager) setOne(ctx context.Context, op, user, host string, pw secret.Value, suffix string) error {
	if !m.dialect.mariaDB {
		return m.exec(ctx, op, "CREATE USER", "ALTER USER ?@? IDENTIFIED BY ?"+suffix, user, host, pw.Reveal())
	}
	err := m.exec(ctx, op, "CREATE USER", "ALTER USER ?@? IDENTIFIED VIA mysql_native_password USING ?"+suffix, user, host, nativeHash(pw.Reveal()))
	if errNumber(err) == erOptionPrevents { // --strict-password-validation: the plugin must see plaintext
		err = m.exec(ctx, op, "CREATE USER", "ALTER USER ?@? IDENTIFIED VIA mysql_native_password USING PASSWORD(?)"+suffix, user, host, pw.Reveal())
	}
	return err
}

// setTwo makes the account accept both passwords.
func (m *manager) setTwo(ctx context.Context, op, user, host string, newPW, oldPW secret.Value) error {
	if !m.dialect.mariaDB {
		return m.exec(ctx, op, m.privilege(), "ALTER USER ?@? IDENTIFIED BY ? RETAIN CURRENT PASSWORD", user, host, newPW.Reveal())
	}
	err := m.exec(ctx, op, "CREATE USER",
		"ALTER USER ?@? IDENTIFIED VIA mysql_native_password USING ? OR mysql_native_password USING ?",
		user, host, nativeHash(newPW.Reveal()), nativeHash(oldPW.Reveal()))
	if errNumber(err) == erOptionPrevents {
		err = m.exec(ctx, op, "CREATE USER",
			"ALTER USER ?@? IDENTIFIED VIA mysql_native_password USING PASSWORD(?) OR mysql_native_password USING PASSWORD(?)",
			user, host, newPW.Reveal(), oldPW.Reveal())
	}
	return err
}

// setOwn changes the logged-in account's own password (no privilege needed).
func (m *manager) setOwn(ctx context.Context, op string, newPW, oldPW secret.Value) error {
	if !m.dialect.mariaDB {
		return m.exec(ctx, op, "", "ALTER USER CURRENT_USER() IDENTIFIED BY ? REPLACE ?", newPW.Reveal(), oldPW.Reveal())
	}
	err := m.exec(ctx, op, "", "SET PASSWORD = ?", nativeHash(newPW.Reveal()))
	if errNumber(err) == erOptionPrevents {
		err = m.exec(ctx, op, "", "SET PASSWORD = PASSWORD(?)", newPW.Reveal())
	}
	return err
}

// lock locks the account and gives it a random password nobody stores.
func (m *manager) lock(ctx context.Context, op, user, host string) error {
	return m.setOne(ctx, op, user, host, secret.Token(24), " ACCOUNT LOCK")
}
