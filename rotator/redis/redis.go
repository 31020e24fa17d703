// Package redis rotates Redis ACL user passwords. Register New(Config{}) for
// the credential type "redis".
//
// The one strategy is Dual: an ACL user holds several passwords at once.
// Apply adds the new one (ACL SETUSER u #<sha256>), Retire removes the old one
// (ACL SETUSER u !<sha256>), Revert removes the new one. Passwords travel as
// SHA-256 hashes, so the plaintext never reaches the server. After every
// change the ACL is saved (ACL SAVE) when the server has an ACL file; without
// one a restart silently undoes every rotation, which Check reports. Open
// connections survive password removal.
//
// Changes go through admin_credential when set, otherwise through the user's
// own login; that login needs ACL GETUSER, ACL SETUSER, ACL SAVE and CONFIG
// GET (e.g. +acl|getuser +acl|setuser +acl|save +config|get).
//
// Fields: host, port (number or string), username (required, an ACL user;
// "default" must be named explicitly), probe (default PING; a command, split on
// spaces), admin_credential, password_policy. Secret: password.
package redis

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// Config configures a Rotator. The zero value means the defaults.
type Config struct {
	// ConnectTimeout bounds each login. Default 5s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command. Default 10s.
	CommandTimeout time.Duration
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
	if c.ConnectTimeout < 0 || c.CommandTimeout < 0 {
		return errors.New("redis: negative timeout")
	}
	return nil
}

func (c Config) connectTimeout() time.Duration { return cmp.Or(c.ConnectTimeout, 5*time.Second) }

func (c Config) commandTimeout() time.Duration { return cmp.Or(c.CommandTimeout, 10*time.Second) }

// Rotator rotates Redis ACL passwords. It is safe for concurrent use. The
// only connections it keeps between calls are idle admin connections
// (Config.AdminIdle); Close closes them.
type Rotator struct {
	cfg  Config
	pool dbrot.Pool[*redis.Client]
	// files caches each open connection's aclfile setting (a server's
	// aclfile cannot change while it runs); an entry goes when its
	// connection is closed.
	files sync.Map // *redis.Client → string
	// saves coalesces concurrent ACL SAVEs per server and admin login.
	saves sync.Map // string → *saveGroup
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

// Capabilities: dual only.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Dual}}
}

// checkConfig is the check Verify and Check start with.
func (r *Rotator) checkConfig(op string) error {
	return rotator.Wrap(rotator.ClassConfig, op, r.cfg.Validate())
}

// begin returns the check the other steps start with: a valid config, and
// st the one strategy.
func (r *Rotator) begin(st rotator.Strategy) func(op string) error {
	return func(op string) error {
		if err := r.checkConfig(op); err != nil {
			return err
		}
		if st != rotator.Dual {
			return dbrot.Unsupported(op, "redis", st, r.Capabilities().Strategies)
		}
		return nil
	}
}

// hash is the form ACL GETUSER lists and #/! accept: lowercase hex SHA-256.
func hash(pw string) string {
	s := sha256.Sum256([]byte(pw))
	return hex.EncodeToString(s[:])
}

// Stage generates the next password. Nothing on the server changes.
func (r *Rotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	const op = "stage"
	cur, err := dbrot.Version(op, r.begin(req.Strategy), parse, req.Current)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	return cur.StagePassword(op, nil)
}

func samePair(op string, a, b target) error {
	if a.Username != b.Username {
		return rotator.Errorf(rotator.ClassConfig, op, "dual cannot change the username (%q, %q)", a.Username, b.Username)
	}
	return nil
}

// user checks that cur and other name the same user, connects (as the admin,
// or as either version) and reads the user's ACL. The caller releases m.
func (r *Rotator) user(ctx context.Context, res rotator.Resolver, op string, cur, other target) (m *manager, u aclUser, err error) {
	if err := samePair(op, cur, other); err != nil {
		return nil, u, err
	}
	if m, err = r.manager(ctx, res, cur, op, cur, other); err != nil {
		return nil, u, err
	}
	if u, err = m.getUser(ctx, op, cur.Username); err != nil {
		return nil, u, m.release(err)
	}
	return m, u, nil
}

// Apply adds the pending password to the user, keeping the current one. If the
// user already has it, nothing changes (Skipped) but the ACL is still saved, in
// case an earlier Apply died between SETUSER and SAVE.
func (r *Rotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.ApplyResponse, error) {
		req.FirstAttempt = req.FirstAttempt && !again
		return r.apply(ctx, req)
	})
}

func (r *Rotator) apply(ctx context.Context, req rotator.ApplyRequest) (resp rotator.ApplyResponse, err error) {
	const op = "apply"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	cur, pend, err := dbrot.Versions(op, r.begin(req.Strategy), parse, req.Current, req.Pending)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, cur.Password, pend.Password) }()
	if err := samePair(op, cur, pend); err != nil {
		return resp, err
	}
	if pend.Password.IsZero() {
		return resp, rotator.Errorf(rotator.ClassConfig, op, "pending version has no password")
	}
	m, err := r.manager(ctx, req.Resolver, cur, op, cur)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	u, err := m.getUser(ctx, op, cur.Username)
	if err != nil {
		return resp, err
	}
	if slices.Contains(u.passwords, hash(pend.Password.Reveal())) {
		resp.Skipped = true
	} else if err := m.setUser(ctx, op, cur.Username, "#"+hash(pend.Password.Reveal())); err != nil {
		return resp, err
	}
	return resp, m.save(ctx, op)
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
	defer c.Close()
	if err := c.Do(ctx, t.probe...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return resp, classify("verify probe", fmt.Sprint(t.probe[0]), err)
	}
	return rotator.VerifyResponse{Detail: fmt.Sprintf("logged in as %s, %v ok", t.Username, t.probe[0])}, nil
}

// Retire removes the old password, after checking that the user has the
// current one (so a retire can never leave the user with no stored password).
// Idempotent: a password already gone is not removed again.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RetireResponse, error) {
		return r.retire(ctx, req)
	})
}

func (r *Rotator) retire(ctx context.Context, req rotator.RetireRequest) (resp rotator.RetireResponse, err error) {
	const op = "retire"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	old, cur, err := dbrot.Versions(op, r.begin(req.Strategy), parse, req.Old, req.Current)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, old.Password, cur.Password) }()
	m, u, err := r.user(ctx, req.Resolver, op, cur, old)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	if !slices.Contains(u.passwords, hash(cur.Password.Reveal())) {
		return resp, rotator.Errorf(rotator.ClassUnknown, op,
			"refusing to retire: ACL user %q does not have the current version's password (add it back, then retry)", cur.Username)
	}
	if h := hash(old.Password.Reveal()); slices.Contains(u.passwords, h) {
		if err := m.setUser(ctx, op, cur.Username, "!"+h); err != nil {
			return resp, err
		}
	}
	return resp, m.save(ctx, op)
}

// Revert removes the pending password and makes sure the current one is set.
// Idempotent, and safe when Apply never ran.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.RevertResponse, error) {
		return r.revert(ctx, req)
	})
}

func (r *Rotator) revert(ctx context.Context, req rotator.RevertRequest) (resp rotator.RevertResponse, err error) {
	const op = "revert"
	r.pool.Forget(req.Current.ID) // this credential may be an admin of others
	cur, pend, err := dbrot.Versions(op, r.begin(req.Strategy), parse, req.Current, req.Pending)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, cur.Password, pend.Password) }()
	m, u, err := r.user(ctx, req.Resolver, op, cur, pend)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	var rules []any
	if h := hash(cur.Password.Reveal()); !slices.Contains(u.passwords, h) {
		rules = append(rules, "#"+h)
	}
	if h := hash(pend.Password.Reveal()); slices.Contains(u.passwords, h) {
		rules = append(rules, "!"+h)
	}
	if len(rules) > 0 {
		if err := m.setUser(ctx, op, cur.Username, rules...); err != nil {
			return resp, err
		}
	}
	return resp, m.save(ctx, op)
}

// Check warns when a restart would undo rotations (no ACL file), when the user
// does not exist, accepts any password (nopass), is disabled, or holds more
// passwords than the two a rotation needs.
func (r *Rotator) Check(ctx context.Context, req rotator.CheckRequest) (rotator.CheckResponse, error) {
	return dbrot.Redo(ctx, func(ctx context.Context, again bool) (rotator.CheckResponse, error) {
		return r.check(ctx, req)
	})
}

func (r *Rotator) check(ctx context.Context, req rotator.CheckRequest) (resp rotator.CheckResponse, err error) {
	const op = "check"
	t, err := dbrot.Version(op, r.checkConfig, parse, req.Credential)
	if err != nil {
		return resp, err
	}
	defer func() { err = scrub(err, t.Password) }()
	m, err := r.manager(ctx, req.Resolver, t, op, t)
	if err != nil {
		return resp, err
	}
	defer func() { err = m.release(err) }()
	warn := func(format string, args ...any) { resp.Warnings = append(resp.Warnings, fmt.Sprintf(format, args...)) }
	file, err := m.aclFile(ctx, op)
	if err != nil {
		return resp, err
	}
	if file == "" {
		warn("the server has no ACL file: a restart would silently undo a rotation: start redis with --aclfile FILE")
	}
	u, err := m.getUser(ctx, op, t.Username)
	var re *rotator.Error
	if errors.As(err, &re) && re.Class == rotator.ClassConfig {
		warn("ACL user %q does not exist", t.Username)
		return resp, nil
	}
	if err != nil {
		return resp, err
	}
	if slices.Contains(u.flags, "nopass") {
		warn("ACL user %q has nopass: any password logs in; remove it (ACL SETUSER %s resetpass, then rotate)", t.Username, t.Username)
	}
	if !slices.Contains(u.flags, "on") {
		warn("ACL user %q is off: no password logs in", t.Username)
	}
	if len(u.passwords) > 2 {
		warn("ACL user %q has %d passwords: only the current and, during grace, the previous one should remain", t.Username, len(u.passwords))
	}
	return resp, nil
}
