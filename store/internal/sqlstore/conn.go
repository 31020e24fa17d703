package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"
)

// runner runs the statements of one transaction: on a database/sql
// transaction (sqlRunner), or directly on a driver connection (driverRunner,
// the fast path for SQLite reads).
type runner interface {
	// exec runs q and returns the number of rows it affected.
	exec(ctx context.Context, q query, args []any) (int64, error)
	query(ctx context.Context, q query, args []any) (rowSet, error)
}

// rowSet is the part of *sql.Rows the Tx uses.
type rowSet interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// row is the result of a query expected to return at most one row.
type row struct {
	rs  rowSet
	err error
}

// Scan scans the first row and closes the rows; sql.ErrNoRows if there is none.
func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rs.Close()
	if !r.rs.Next() {
		if err := r.rs.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := r.rs.Scan(dest...); err != nil {
		return err
	}
	return r.rs.Close()
}

// sqlRunner runs statements on a database/sql transaction, with the DB's
// prepared statements if it has them.
type sqlRunner struct {
	tx      *sql.Tx
	stmts   []*sql.Stmt // nil: run the query text
	queries *[numQueries]string
	// detach runs statements without the caller's cancellation: in a shared
	// (group-committed) transaction an interrupted statement could roll back
	// the writes of every member, not only the caller's.
	detach bool
}

func (r *sqlRunner) exec(ctx context.Context, q query, args []any) (int64, error) {
	if r.detach {
		ctx = context.WithoutCancel(ctx)
	}
	var (
		res sql.Result
		err error
	)
	if r.stmts != nil {
		res, err = r.tx.StmtContext(ctx, r.stmts[q]).ExecContext(ctx, args...)
	} else {
		res, err = r.tx.ExecContext(ctx, r.queries[q], args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (r *sqlRunner) query(ctx context.Context, q query, args []any) (rowSet, error) {
	if r.detach {
		ctx = context.WithoutCancel(ctx)
	}
	if r.stmts != nil {
		return r.tx.StmtContext(ctx, r.stmts[q]).QueryContext(ctx, args...)
	}
	return r.tx.QueryContext(ctx, r.queries[q], args...)
}

// readPool is a pool of read-only driver connections, each with its
// statements prepared on first use. It serves View without database/sql,
// whose per-transaction and per-statement bookkeeping (a goroutine for each
// transaction and each result set among it) costs more than SQLite itself
// takes to answer a lookup by key.
type readPool struct {
	connector driver.Connector
	queries   *[numQueries]string
	slots     chan struct{} // one per connection in use

	mu     sync.Mutex
	idle   []*readConn
	closed bool
}

func newReadPool(c driver.Connector, queries *[numQueries]string, max int) *readPool {
	return &readPool{connector: c, queries: queries, slots: make(chan struct{}, max)}
}

var errPoolClosed = errors.New("store closed")

func (p *readPool) get(ctx context.Context) (*readConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, errPoolClosed
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	dc, err := p.connector.Connect(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	c := &readConn{conn: dc, queries: p.queries}
	return c, nil
}

// put returns c to the pool, or closes it if it is broken or the pool is closed.
func (p *readPool) put(c *readConn, broken bool) {
	p.mu.Lock()
	if broken || p.closed {
		p.mu.Unlock()
		c.close()
	} else {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	}
	<-p.slots
}

func (p *readPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// readConn is one driver connection and its prepared statements.
type readConn struct {
	conn            driver.Conn
	queries         *[numQueries]string
	stmts           [numQueries]driver.Stmt
	begin, rollback driver.Stmt
	args            []driver.NamedValue // reused for every statement
}

func (c *readConn) close() {
	for _, s := range c.stmts {
		if s != nil {
			s.Close()
		}
	}
	for _, s := range []driver.Stmt{c.begin, c.rollback} {
		if s != nil {
			s.Close()
		}
	}
	c.conn.Close()
}

func (c *readConn) prepare(ctx context.Context, p *driver.Stmt, text string) (driver.Stmt, error) {
	if *p != nil {
		return *p, nil
	}
	var (
		s   driver.Stmt
		err error
	)
	if cp, ok := c.conn.(driver.ConnPrepareContext); ok {
		s, err = cp.PrepareContext(ctx, text)
	} else {
		s, err = c.conn.Prepare(text)
	}
	if err != nil {
		return nil, err
	}
	*p = s
	return s, nil
}

// run executes a statement without arguments and without results.
func (c *readConn) run(ctx context.Context, p *driver.Stmt, text string) error {
	s, err := c.prepare(ctx, p, text)
	if err != nil {
		return err
	}
	_, err = s.(driver.StmtExecContext).ExecContext(ctx, nil)
	return err
}

func (c *readConn) bind(args []any) ([]driver.NamedValue, error) {
	c.args = c.args[:0]
	for i, a := range args {
		var v driver.Value
		switch a := a.(type) {
		case nil, int64, bool, string, []byte:
			v = a
		case int:
			v = int64(a)
		default:
			var err error
			if v, err = driver.DefaultParameterConverter.ConvertValue(a); err != nil {
				return nil, fmt.Errorf("argument %d: %w", i+1, err)
			}
		}
		c.args = append(c.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	return c.args, nil
}

// driverRunner runs the statements of a View on a readConn.
type driverRunner struct{ c *readConn }

func (r driverRunner) exec(ctx context.Context, q query, args []any) (int64, error) {
	return 0, errReadOnly // not reached: write methods check first
}

func (r driverRunner) query(ctx context.Context, q query, args []any) (rowSet, error) {
	rs := new(driverRows)
	if err := r.queryInto(ctx, q, args, rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// queryInto runs q and sets rs to its rows.
func (r driverRunner) queryInto(ctx context.Context, q query, args []any, rs *driverRows) error {
	s, err := r.c.prepare(ctx, &r.c.stmts[q], r.c.queries[q])
	if err != nil {
		return err
	}
	nv, err := r.c.bind(args)
	if err != nil {
		return err
	}
	dr, err := s.(driver.StmtQueryContext).QueryContext(ctx, nv)
	if err != nil {
		return err
	}
	*rs = driverRows{rows: dr}
	return nil
}

// driverRows adapts driver.Rows to rowSet, converting values as database/sql
// would for the destination types the Tx uses.
type driverRows struct {
	rows   driver.Rows
	vals   []driver.Value
	buf    [16]driver.Value // vals of up to 16 columns
	err    error
	closed bool
}

func (r *driverRows) Next() bool {
	if r.closed || r.err != nil {
		return false
	}
	if r.vals == nil {
		if n := len(r.rows.Columns()); n <= len(r.buf) {
			r.vals = r.buf[:n]
		} else {
			r.vals = make([]driver.Value, n)
		}
	}
	if err := r.rows.Next(r.vals); err != nil {
		if err != io.EOF {
			r.err = err
		}
		r.Close()
		return false
	}
	return true
}

func (r *driverRows) Err() error { return r.err }

func (r *driverRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.rows.Close()
}

func (r *driverRows) Scan(dest ...any) error {
	if len(dest) != len(r.vals) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(r.vals))
	}
	for i, d := range dest {
		if err := assign(d, r.vals[i]); err != nil {
			return fmt.Errorf("scan column %d: %w", i, err)
		}
	}
	return nil
}

// assign stores src in dest, for the destination types the Tx scans into.
// A []byte is stored as it is, without the copy database/sql makes: the
// SQLite driver copies every TEXT and BLOB value out of SQLite into memory
// of its own for each row, and a value in vals is only ever replaced, by the
// next row's, never written to.
func assign(dest any, src driver.Value) error {
	switch d := dest.(type) {
	case *sql.NullString: // as its Scan would, without its reflection
		switch s := src.(type) {
		case nil:
			*d = sql.NullString{}
			return nil
		case string:
			*d = sql.NullString{String: s, Valid: true}
			return nil
		}
		return d.Scan(src)
	case *sql.NullInt64:
		switch s := src.(type) {
		case nil:
			*d = sql.NullInt64{}
			return nil
		case int64:
			*d = sql.NullInt64{Int64: s, Valid: true}
			return nil
		}
		return d.Scan(src)
	case sql.Scanner:
		return d.Scan(src)
	case *[]byte:
		switch s := src.(type) {
		case []byte:
			*d = s
			return nil
		case string:
			*d = []byte(s)
			return nil
		case nil:
			*d = nil
			return nil
		}
	case *string:
		switch s := src.(type) {
		case string:
			*d = s
			return nil
		case []byte:
			*d = string(s)
			return nil
		}
	case *int64:
		if s, ok := src.(int64); ok {
			*d = s
			return nil
		}
	case *int:
		if s, ok := src.(int64); ok {
			*d = int(s)
			return nil
		}
	case *bool:
		switch s := src.(type) {
		case int64:
			*d = s != 0
			return nil
		case bool:
			*d = s
			return nil
		}
	}
	return fmt.Errorf("cannot store %T in %T", src, dest)
}
