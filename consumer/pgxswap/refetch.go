package pgxswap

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nebula-credential/nebula-credential/consumer"
)

// A login the server refuses for the credential itself (SQLSTATE 28P01, bad
// password; 28000, the role may not log in, which is what a retired
// alternating user gives) usually means the pool holds a version that moved
// on before the pool heard of it. Every method of Pool that may open a
// connection then refetches the current version past the Source's cache and,
// when it differs from the refused one, retries once. RefetchStats counts it.

// attemptKey carries an *attempt through the pool to beforeConnect.
type attemptKey struct{}

// attempt records the version the last connect of one call logged in with.
type attempt struct{ version atomic.Int64 }

func noteAttempt(ctx context.Context, version int) {
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		a.version.Store(int64(version))
	}
}

// refused reports whether err is a connect the server refused for the
// credential (not a network error, not a failed query).
func refused(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	return errors.As(err, &ce) && errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
}

// loggedIn reports whether a call that returned err got past the login.
func loggedIn(err error) bool {
	var ce *pgconn.ConnectError
	return err == nil || !errors.As(err, &ce)
}

// withRefetch runs f and, if a login it made was refused while the current
// version moved on, runs it once more.
func withRefetch[T any](ctx context.Context, p *Pool, f func(context.Context) (T, error)) (T, error) {
	a := &attempt{}
	out, err := f(context.WithValue(ctx, attemptKey{}, a))
	if err == nil || !refused(err) || ctx.Err() != nil {
		return out, err
	}
	p.refetch.Refused()
	c, rerr := consumer.Refetch(ctx, p.src, p.id)
	if rerr != nil {
		p.log.Warn("refetching the credential after a refused login", "credential", p.id, "err", rerr)
		return out, err
	}
	if c.Version == int(a.version.Load()) {
		return out, err // the server refused the current version: nothing newer to try
	}
	p.log.Info("login refused; retrying with the refetched current version", "credential", p.id, "refused", a.version.Load(), "current", c.Version)
	out, err = f(ctx)
	p.refetch.Retried(loggedIn(err))
	return out, err
}

// RefetchStats reports how often a login was refused for the credential, and
// how often a refetched version was retried and logged in.
func (p *Pool) RefetchStats() consumer.RefetchStats { return p.refetch.Stats() }

// Acquire is pgxpool.Pool.Acquire with one retry after a refused login.
func (p *Pool) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	return withRefetch(ctx, p, p.Pool.Acquire)
}

// AcquireFunc is pgxpool.Pool.AcquireFunc with one retry after a refused login.
func (p *Pool) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// Exec is pgxpool.Pool.Exec with one retry after a refused login.
func (p *Pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return withRefetch(ctx, p, func(ctx context.Context) (pgconn.CommandTag, error) { return p.Pool.Exec(ctx, sql, args...) })
}

// Query is pgxpool.Pool.Query with one retry after a refused login.
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return withRefetch(ctx, p, func(ctx context.Context) (pgx.Rows, error) { return p.Pool.Query(ctx, sql, args...) })
}

// QueryRow is pgxpool.Pool.QueryRow with one retry after a refused login.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &poolRow{c: c, row: c.QueryRow(ctx, sql, args...)}
}

// SendBatch is pgxpool.Pool.SendBatch with one retry after a refused login.
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errBatch{err: err}
	}
	return &poolBatch{c: c, br: c.SendBatch(ctx, b)}
}

// Begin is pgxpool.Pool.Begin with one retry after a refused login.
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is pgxpool.Pool.BeginTx with one retry after a refused login.
func (p *Pool) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	return withRefetch(ctx, p, func(ctx context.Context) (pgx.Tx, error) { return p.Pool.BeginTx(ctx, opts) })
}

// CopyFrom is pgxpool.Pool.CopyFrom with one retry after a refused login.
func (p *Pool) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	return withRefetch(ctx, p, func(ctx context.Context) (int64, error) { return p.Pool.CopyFrom(ctx, table, columns, src) })
}

// Ping is pgxpool.Pool.Ping with one retry after a refused login.
func (p *Pool) Ping(ctx context.Context) error {
	_, err := withRefetch(ctx, p, func(ctx context.Context) (struct{}, error) { return struct{}{}, p.Pool.Ping(ctx) })
	return err
}

// poolRow releases its connection after Scan, like pgxpool's.
type poolRow struct {
	c   *pgxpool.Conn
	row pgx.Row
}

func (r *poolRow) Scan(dest ...any) error {
	defer r.c.Release()
	return r.row.Scan(dest...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// poolBatch releases its connection at Close, like pgxpool's.
type poolBatch struct {
	c  *pgxpool.Conn
	br pgx.BatchResults
}

func (b *poolBatch) Exec() (pgconn.CommandTag, error) { return b.br.Exec() }
func (b *poolBatch) Query() (pgx.Rows, error)         { return b.br.Query() }
func (b *poolBatch) QueryRow() pgx.Row                { return b.br.QueryRow() }
func (b *poolBatch) Tx() pgx.Tx                       { return b.br.Tx() }

func (b *poolBatch) Close() error {
	err := b.br.Close()
	if b.c != nil {
		b.c.Release()
		b.c = nil
	}
	return err
}

// errBatch is a batch that could not start. It embeds the interface only so
// that methods pgx adds later compile; every current method is defined.
type errBatch struct {
	pgx.BatchResults
	err error
}

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return errRows{err: b.err}, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow{b.err} }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }

// errRows: see errBatch.
type errRows struct {
	pgx.Rows
	err error
}

func (errRows) Close()                                       {}
func (r errRows) Err() error                                 { return r.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                          { return r.err }
func (r errRows) Values() ([]any, error)                     { return nil, r.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }
func (errRows) TypeMap() *pgtype.Map                         { return nil }
