package dbrot

import (
	"context"
	"fmt"
	"sync"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// Driver is what the shared login steps need from a rotator: how to log in
// and how to read its client library's errors. L is the rotator's login type
// (its fields and a password), C an open connection. A rotator builds its
// Driver per call, so its zero Rotator keeps working.
type Driver[L Login, C any] struct {
	// Connect logs in as l on a fresh connection.
	Connect func(ctx context.Context, l L) (C, error)
	// Close closes a connection Connect opened.
	Close func(C)
	// ClassOf classifies an error from the client library by server code or
	// error type, never by message text. A login refused for the credential
	// itself (wrong password, locked or expired login) is ClassAuth.
	ClassOf func(error) rotator.Class
	// Pool, if set with Ping and LoginKey, keeps admin connections between
	// steps (Manager). Only admin logins are pooled.
	Pool *Pool[C]
	// Ping checks that an idle pooled connection still answers.
	Ping func(context.Context, C) error
	// LoginKey is everything l logs in with, the password included, as one
	// string: only a keyed hash of it is kept (Pool.Key).
	LoginKey func(L) string
}

func (d Driver[L, C]) classify(op, priv string, err error) error {
	return Classify(d.ClassOf, op, priv, err)
}

// authFailure reports a login refused for the credential itself.
func (d Driver[L, C]) authFailure(err error) bool { return d.ClassOf(err) == rotator.ClassAuth }

// LogsIn reports whether l can log in now. A refusal of the credential is
// (false, nil); anything else (an unreachable server) is an error.
func (d Driver[L, C]) LogsIn(ctx context.Context, l L, op string) (bool, error) {
	c, err := d.Connect(ctx, l)
	if err == nil {
		d.Close(c)
		return true, nil
	}
	if d.authFailure(err) {
		return false, nil
	}
	return false, rotator.NotReached(d.classify(op, "", err))
}

// VerifyLogin logs in as l for Verify. A refused login is ClassRejected (the
// version under test does not work); priv names what a permission error at
// login means. The caller closes the connection.
func (d Driver[L, C]) VerifyLogin(ctx context.Context, l L, priv string) (C, error) {
	c, err := d.Connect(ctx, l)
	if err != nil {
		var zero C
		if d.authFailure(err) {
			return zero, &rotator.Error{Class: rotator.ClassRejected, Op: "verify login", Err: err}
		}
		return zero, d.classify("verify login", priv, err)
	}
	return c, nil
}

// Manager opens the connection that changes logins: as adm when hasAdmin (the
// admin resolved from base's admin_credential; its own login refused is
// ClassAuth, to be fixed in the admin credential), otherwise as the first of
// logins that logs in (base changing itself). The caller ends its use with
// release(err), err being the step's outcome: an admin connection that saw no
// error goes back to the pool (if there is one), any other is closed.
//
// The admin was resolved by the caller just before, through the engine's
// resolver, which applies the binding rule at every resolve: the pool is
// reached only after that check.
func (d Driver[L, C]) Manager(ctx context.Context, op string, base, adm L, hasAdmin bool, logins []L) (conn C, release func(error), err error) {
	var zero C
	if hasAdmin {
		pooled := d.Pool != nil && d.Ping != nil && d.LoginKey != nil && d.Pool.maxIdle() > 0
		var key PoolKey
		var gen uint64
		if pooled {
			id, version := adm.adminRef()
			key = d.Pool.Key(id, version, d.LoginKey(adm))
			gen = d.Pool.generation(id)
			if c, ok := d.Pool.checkout(ctx, key, d.Ping, d.Close); ok {
				return c, d.releaser(key, gen, c), nil
			}
		}
		c, err := d.Connect(ctx, adm)
		if err != nil {
			return zero, nil, rotator.NotReached(d.classify(op, "", fmt.Errorf("admin login as %q: %w", adm.username(), err)))
		}
		if pooled {
			return c, d.releaser(key, gen, c), nil
		}
		return c, func(error) { d.Close(c) }, nil
	}
	var last error
	for _, l := range logins {
		c, err := d.Connect(ctx, l)
		if err == nil {
			return c, func(error) { d.Close(c) }, nil
		}
		if !d.authFailure(err) {
			return zero, nil, rotator.NotReached(d.classify(op, "", err))
		}
		last = err
	}
	return zero, nil, rotator.NotReached(d.classify(op, "", fmt.Errorf("no admin_credential set and no known password logs in as %q: %w", base.username(), last)))
}

// releaser returns c to the pool under key after a step without error, and
// closes it after any other.
func (d Driver[L, C]) releaser(key PoolKey, gen uint64, c C) func(error) {
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			if err != nil {
				d.Close(c)
				return
			}
			for _, x := range d.Pool.put(key, gen, c, d.Close) {
				d.Close(x)
			}
		})
	}
}

// CheckCurrent makes sure cur logs in before old is retired, so a retire never
// leaves the credential without a working version.
func (d Driver[L, C]) CheckCurrent(ctx context.Context, op string, cur, old L) error {
	ok, err := d.LogsIn(ctx, cur, op+": check current")
	if err != nil {
		return err
	}
	if !ok {
		return rotator.Errorf(rotator.ClassUnknown, op,
			"refusing to retire %q: the current version does not log in as %q (set its password from the stored current version, then retry)", old.username(), cur.username())
	}
	return nil
}
