package dbrot

import (
	"context"
	"errors"
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
	// Recheck, if set, is run on a pooled connection handed out without a
	// ping: a local check with no round trip (the MySQL session hands its
	// connection back to database/sql, whose liveness check replaces a dead
	// one). An error closes it and the next is tried.
	Recheck func(context.Context, C) error
	// Dead reports an error that means the connection itself is gone: reset,
	// closed, an early EOF, the session ended by the server. Never a
	// timeout (the server may only be slow) nor a statement the server
	// refused. A step that fails with it on a pooled connection handed out
	// without a ping is redone once on a fresh login (Redo). Nil: Broken.
	Dead func(error) bool
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
// err = release(err), err being the step's outcome: an admin connection that
// saw no error goes back to the pool (if there is one), any other is closed.
// release returns err, marked for Redo when the connection came from the pool
// without a ping and err says it was dead (Dead): the step may be redone on a
// fresh login. Under a context from Redo's second run the pool is not used.
//
// The admin was resolved by the caller just before, through the engine's
// resolver, which applies the binding rule at every resolve: the pool is
// reached only after that check.
func (d Driver[L, C]) Manager(ctx context.Context, op string, base, adm L, hasAdmin bool, logins []L) (conn C, release func(error) error, err error) {
	var zero C
	if hasAdmin {
		pooled := d.Pool != nil && d.Ping != nil && d.LoginKey != nil && d.Pool.maxIdle() > 0
		var key PoolKey
		var gen uint64
		if pooled {
			id, version := adm.adminRef()
			key = d.Pool.Key(id, version, d.LoginKey(adm))
			gen = d.Pool.generation(id)
			if ctx.Value(freshKey{}) == nil {
				if c, ok, unpinged := d.Pool.checkout(ctx, key, d.Ping, d.Recheck, d.Close); ok {
					return c, d.releaser(key, gen, c, unpinged), nil
				}
			}
		}
		c, err := d.Connect(ctx, adm)
		if err != nil {
			return zero, nil, rotator.NotReached(d.classify(op, "", fmt.Errorf("admin login as %q: %w", adm.username(), err)))
		}
		if pooled {
			return c, d.releaser(key, gen, c, false), nil
		}
		return c, d.closer(c), nil
	}
	var last error
	for _, l := range logins {
		c, err := d.Connect(ctx, l)
		if err == nil {
			return c, d.closer(c), nil
		}
		if !d.authFailure(err) {
			return zero, nil, rotator.NotReached(d.classify(op, "", err))
		}
		last = err
	}
	return zero, nil, rotator.NotReached(d.classify(op, "", fmt.Errorf("no admin_credential set and no known password logs in as %q: %w", base.username(), last)))
}

// closer closes c at the end of a step that did not take it from the pool.
func (d Driver[L, C]) closer(c C) func(error) error {
	var once sync.Once
	return func(err error) error {
		once.Do(func() { d.Close(c) })
		return err
	}
}

// releaser returns c to the pool under key after a step without error, and
// closes it after any other. If c was handed out without a ping (unpinged)
// and the error says it was dead, the other idle connections of key are
// closed too and the error is marked for Redo.
func (d Driver[L, C]) releaser(key PoolKey, gen uint64, c C, unpinged bool) func(error) error {
	var once sync.Once
	return func(err error) error {
		once.Do(func() {
			if err == nil {
				for _, x := range d.Pool.put(key, gen, c, d.Close) {
					d.Close(x)
				}
				return
			}
			d.Close(c)
			dead := d.Dead
			if dead == nil {
				dead = Broken
			}
			if unpinged && dead(err) {
				d.Pool.dropKey(key)
				err = &deadConnError{err}
			}
		})
		return err
	}
}

// deadConnError marks a step's error that came from a pooled connection
// handed out without a ping and found dead: Redo runs the step again.
type deadConnError struct{ err error }

func (e *deadConnError) Error() string { return e.err.Error() }
func (e *deadConnError) Unwrap() error { return e.err }

// freshKey marks the context of Redo's second run: Manager logs in afresh.
type freshKey struct{}

// Redo runs step, and runs it once more, with again set, when it failed
// because the pooled admin connection it was handed without a ping was dead
// (Manager's release marked the error): the second run logs in afresh and
// takes nothing from the pool. A step may be redone only if it is safe to run
// twice whatever the first run changed before the connection died: every
// database rotator step is idempotent (the engine repeats them after a crash
// too), and with again set a step must not skip the checks a repeated attempt
// makes (Apply: the "already applied?" login, since FirstAttempt no longer
// holds). An error that stays unmarked is returned as it was: the engine's
// retry and journal handle it.
func Redo[R any](ctx context.Context, step func(ctx context.Context, again bool) (R, error)) (R, error) {
	resp, err := step(ctx, false)
	var dc *deadConnError
	if err == nil || !errors.As(err, &dc) {
		return resp, err
	}
	if ctx.Err() != nil {
		return resp, unmark(err)
	}
	resp, err = step(context.WithValue(ctx, freshKey{}, true), true)
	return resp, unmark(err)
}

// unmark drops a deadConnError at the top of err's chain.
func unmark(err error) error {
	if dc, ok := err.(*deadConnError); ok {
		return dc.err
	}
	return err
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
