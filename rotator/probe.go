package rotator

import (
	"context"
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
