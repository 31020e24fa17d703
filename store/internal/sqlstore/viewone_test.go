package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"testing"

	"github.com/nebula-credential/nebula-credential/store"
)

// ctxConnector is a driver.Connector whose statements answer one row of one
// column ("v") and record whether the context they ran with could end.
type ctxConnector struct{ cancelable []bool }

func (c *ctxConnector) Connect(context.Context) (driver.Conn, error) { return ctxConn{c}, nil }
func (c *ctxConnector) Driver() driver.Driver                        { return nil }

type ctxConn struct{ c *ctxConnector }

func (c ctxConn) Prepare(string) (driver.Stmt, error) { return ctxStmt(c), nil }
func (ctxConn) Close() error                          { return nil }
func (ctxConn) Begin() (driver.Tx, error)             { return nil, errors.New("no transactions") }

type ctxStmt struct{ c *ctxConnector }

func (ctxStmt) Close() error                               { return nil }
func (ctxStmt) NumInput() int                              { return -1 }
func (ctxStmt) Exec([]driver.Value) (driver.Result, error) { return nil, errors.New("read only") }
func (ctxStmt) Query([]driver.Value) (driver.Rows, error)  { return nil, errors.New("use QueryContext") }
func (s ctxStmt) QueryContext(ctx context.Context, _ []driver.NamedValue) (driver.Rows, error) {
	s.c.cancelable = append(s.c.cancelable, ctx.Done() != nil)
	return &oneValue{}, nil
}

type oneValue struct{ done bool }

func (*oneValue) Columns() []string { return []string{"value"} }
func (*oneValue) Close() error      { return nil }
func (r *oneValue) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = []byte("v")
	return nil
}

// TestViewOneStatementNotInterruptible: the one statement of a ViewOne runs
// with a context that cannot end (watching one costs the SQLite driver a
// goroutine per statement), after a check that ctx has not ended yet.
func TestViewOneStatementNotInterruptible(t *testing.T) {
	conn := &ctxConnector{}
	db := &DB{Dialect: &Dialect{Name: "fake"}, ReadConnector: conn, MaxReaders: 1}
	if err := db.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []byte
	err := db.ViewOne(ctx, func(tx store.Tx) error {
		var err error
		got, err = tx.GetMeta(ctx, "k")
		return err
	})
	if err != nil || string(got) != "v" {
		t.Fatalf("ViewOne: %q, %v", got, err)
	}
	if len(conn.cancelable) != 1 || conn.cancelable[0] {
		t.Fatalf("the statement ran with a context that can end (%v)", conn.cancelable)
	}
	// A context that ended before the statement still stops it.
	err = db.ViewOne(ctx, func(tx store.Tx) error {
		cancel()
		_, err := tx.GetMeta(ctx, "k")
		return err
	})
	if !errors.Is(err, context.Canceled) || len(conn.cancelable) != 1 {
		t.Fatalf("ViewOne with an ended context: %v, %d statements", err, len(conn.cancelable))
	}
}
