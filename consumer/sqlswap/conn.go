package sqlswap

import (
	"context"
	"database/sql/driver"
	"net"
	"sync"
)

// conn wraps a driver connection: it refuses to be reused once its version is
// no longer current, and forwards everything else.
//
// It also knows whether database/sql holds it idle: IsValid true means it was
// released into the idle pool, and database/sql calls ResetSession before it
// hands a released connection out again. Between the two, closing its network
// connection cannot break a query.
type conn struct {
	inner driver.Conn
	c     *Connector
	nc    net.Conn // nil if the driver did not dial through DialFunc

	mu   sync.Mutex
	idle bool
	dead bool // network connection closed by us
}

// kill closes the network connection (force-close, even while in use).
func (w *conn) kill() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dead = true
	if w.nc != nil {
		w.nc.Close()
	}
}

// closeIfIdle closes the network connection if database/sql holds w idle, and
// reports whether it did.
func (w *conn) closeIfIdle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.idle || w.dead || w.nc == nil {
		return false
	}
	w.dead = true
	w.nc.Close()
	return true
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
)

// ResetSession is called by database/sql before an idle connection is reused:
// a connection on an old version answers driver.ErrBadConn, so database/sql
// closes it and takes another.
func (w *conn) ResetSession(ctx context.Context) error {
	w.mu.Lock()
	w.idle = false
	dead := w.dead
	w.mu.Unlock()
	if dead || !w.c.tr.Usable(w) {
		return driver.ErrBadConn
	}
	if r, ok := w.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

// IsValid is called by database/sql when a connection is released: one on an
// old version is closed instead of going back to the idle pool.
func (w *conn) IsValid() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := !w.dead && w.c.tr.Usable(w)
	if v, isV := w.inner.(driver.Validator); ok && isV {
		ok = v.IsValid()
	}
	w.idle = ok
	return ok
}

func (w *conn) Close() error {
	w.c.tr.Close(w)
	return w.inner.Close()
}

func (w *conn) Prepare(query string) (driver.Stmt, error) { return w.inner.Prepare(query) }

func (w *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := w.inner.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return w.inner.Prepare(query)
}

// Begin implements driver.Conn.
func (w *conn) Begin() (driver.Tx, error) {
	//lint:ignore SA1019 driver.Conn requires Begin
	return w.inner.Begin()
}

func (w *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := w.inner.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	if opts.ReadOnly || opts.Isolation != 0 {
		return nil, errNoTxOptions
	}
	//lint:ignore SA1019 the driver has no BeginTx
	return w.inner.Begin()
}

func (w *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := w.inner.(driver.ExecerContext); ok {
		return e.ExecContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (w *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := w.inner.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (w *conn) Ping(ctx context.Context) error {
	if p, ok := w.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (w *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if c, ok := w.inner.(driver.NamedValueChecker); ok {
		return c.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type txOptionsError struct{}

func (txOptionsError) Error() string {
	return "sqlswap: the driver does not support transaction options"
}

var errNoTxOptions error = txOptionsError{}
