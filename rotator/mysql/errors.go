package mysql

import (
	"database/sql/driver"
	"errors"
	"net"

	"github.com/go-sql-driver/mysql"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// classify turns a driver error into a *rotator.Error by server error number
// or error type, never by message text. priv names the privilege a permission
// error means for op.
func classify(op, priv string, err error) error { return dbrot.Classify(classOf, op, priv, err) }

// classOf classifies a driver error; a login refused for the credential
// itself (bad password, locked account, expired password) is ClassAuth.
func classOf(err error) rotator.Class {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return classOfNumber(me.Number)
	}
	if dbrot.Transient(err) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, driver.ErrBadConn) {
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

// dead reports an error that means the connection is gone (dbrot.Driver.Dead):
// the server killed the session or is shutting down, the driver found the
// connection bad before sending (driver.ErrBadConn), or a network error other
// than a timeout. Not mysql.ErrInvalidConn: the driver returns it after a read
// timeout too, when the statement may still be running on the server.
func dead(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case erConnectionKilled, erServerShutdown, erForcingClose, erNormalShutdown:
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, driver.ErrBadConn) || dbrot.Broken(err)
}

// Server error numbers (MariaDB and MySQL share the low ones).
const (
	erAccessDenied          = 1045 // bad user or password at login
	erAccessDeniedNoPass    = 1698
	erAccountLockedMySQL    = 3118
	erAccountLockedMariaDB  = 4151
	erMustChangePassword    = 1820
	erMustChangePasswordLog = 1862
	erDBAccessDenied        = 1044
	erTableAccessDenied     = 1142
	erColumnAccessDenied    = 1143
	erSpecificAccessDenied  = 1227 // "you need (at least one of) the X privilege(s)"
	erPasswordNotAllowed    = 1132 // changing others' passwords needs UPDATE on mysql.*
	erProcAccessDenied      = 1370
	erConCount              = 1040 // too many connections
	erTooManyUserConns      = 1203
	erUserLimitReached      = 1226
	erLockWaitTimeout       = 1205
	erLockDeadlock          = 1213
	erServerShutdown        = 1053
	erQueryInterrupted      = 1317
	erConnectionKilled      = 1927
	erForcingClose          = 1080 // the server closes connections as it shuts down
	erNormalShutdown        = 1077
	erStatementTimeout      = 1969 // MariaDB max_statement_time
	erQueryTimeoutMySQL     = 3024
	erBadDB                 = 1049
	erCannotUser            = 1396 // ALTER USER on a user that does not exist
	erParse                 = 1064
	erNotValidPassword      = 1819 // password validation plugin
	erPasswordHistory       = 3638 // MySQL password history
	erOptionPrevents        = 1290 // e.g. --strict-password-validation refuses a hash
)

func classOfNumber(n uint16) rotator.Class {
	switch n {
	case erAccessDenied, erAccessDeniedNoPass, erAccountLockedMySQL, erAccountLockedMariaDB,
		erMustChangePassword, erMustChangePasswordLog:
		return rotator.ClassAuth
	case erDBAccessDenied, erTableAccessDenied, erColumnAccessDenied, erSpecificAccessDenied,
		erPasswordNotAllowed, erProcAccessDenied:
		return rotator.ClassPermission
	case erConCount, erTooManyUserConns, erUserLimitReached, erLockWaitTimeout, erLockDeadlock,
		erServerShutdown, erForcingClose, erNormalShutdown, erQueryInterrupted, erConnectionKilled, erStatementTimeout, erQueryTimeoutMySQL:
		return rotator.ClassTransient
	case erBadDB, erCannotUser, erParse:
		return rotator.ClassConfig
	case erNotValidPassword, erPasswordHistory:
		return rotator.ClassRejected
	}
	if n >= 1152 && n <= 1161 { // network read/write errors reported by the server
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

func errNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// redactStatementError drops the server's message for a parse error: it quotes
// the statement ("near '...'"), which carried a password or hash.
func redactStatementError(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == erParse {
		return &mysql.MySQLError{Number: me.Number, SQLState: me.SQLState, Message: "statement refused (message withheld: it may quote a secret)"}
	}
	return err
}

// scrub replaces every password in vals, and the quoted forms a driver or
// server may echo, by [REDACTED] (see dbrot.Scrub).
func scrub(err error, vals ...secret.Value) error { return dbrot.Scrub(err, dbrot.SQLForms, vals...) }
