package postgres

import (
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// Issue 18: a server that goes away mid-statement (pgx's "conn closed", a
// shutdown SQLSTATE) is transient, so a restart is retried, not rolled back.
func TestConnectionLostIsTransient(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("alter role: %w", pgconn.ErrConnClosed),
		&pgconn.PgError{Code: "57P01"}, &pgconn.PgError{Code: "57P02"}, &pgconn.PgError{Code: "57P03"},
		fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
	} {
		if c := classOf(err); c != rotator.ClassTransient {
			t.Errorf("%v: class %s, want transient", err, c)
		}
	}
	if c := classOf(&pgconn.PgError{Code: "28P01"}); c != rotator.ClassAuth {
		t.Errorf("28P01: class %s, want auth", c)
	}
}
