package rotator

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

type probeKey struct{}

type probe struct {
	timeout time.Duration
	used    atomic.Bool
}

// WithFirstProbe returns ctx marked so that the first connection a rotator
// opens under it gets at most timeout to connect and log in (see
// ConnectTimeout). The engine marks every attempt of a step: a target that is
// down or frozen then costs an attempt seconds, not the client's full connect
// timeout, and once it answered the rest of the attempt uses the normal one.
func WithFirstProbe(ctx context.Context, timeout time.Duration) context.Context {
	if timeout <= 0 {
		return ctx
	}
	return context.WithValue(ctx, probeKey{}, &probe{timeout: timeout})
}

// ConnectTimeout returns how long a rotator may take to open a connection
// under ctx: def, or the shorter probe timeout for the first connection of an
// attempt marked with WithFirstProbe.
func ConnectTimeout(ctx context.Context, def time.Duration) time.Duration {
	p, ok := ctx.Value(probeKey{}).(*probe)
	if !ok || p.used.Swap(true) || p.timeout >= def {
		return def
	}
	return p.timeout
}

// NotReached marks err as a failure that happened before the call changed
// anything on the target: it never connected, or the login that precedes a
// change was refused. The engine has nothing to revert after such an apply.
func NotReached(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		c := *e
		c.BeforeChange = true
		return &c
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Class: e.Class, Privilege: e.Privilege, RetryAfter: e.RetryAfter, Urgent: e.Urgent, Err: err, BeforeChange: true}
	}
	return &Error{Class: ClassUnknown, Err: err, BeforeChange: true}
}

// BeforeChange reports whether err is marked with NotReached.
func BeforeChange(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.BeforeChange
}
