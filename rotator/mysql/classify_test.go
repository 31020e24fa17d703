package mysql

import (
	"database/sql/driver"
	"fmt"
	"io"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// Issue 18: a server that goes away mid-statement or shuts down is transient.
func TestConnectionLostIsTransient(t *testing.T) {
	for _, err := range []error{
		driver.ErrBadConn, mysql.ErrInvalidConn, fmt.Errorf("query: %w", io.EOF),
		&mysql.MySQLError{Number: erServerShutdown}, &mysql.MySQLError{Number: erForcingClose},
		&mysql.MySQLError{Number: erNormalShutdown}, &mysql.MySQLError{Number: erConnectionKilled},
	} {
		if c := classOf(err); c != rotator.ClassTransient {
			t.Errorf("%v: class %s, want transient", err, c)
		}
	}
}
