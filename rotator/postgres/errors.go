package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// classify turns a driver error into a *rotator.Error by SQLSTATE or by error
// type, never by message text. priv names the privilege a 42501 means for op.
func classify(op, priv string, err error) error { return dbrot.Classify(classOf, op, priv, err) }

// classOf classifies a pgx error; a login refused for the credential itself
// (28P01, 28000) is ClassAuth.
func classOf(err error) rotator.Class {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return classOfCode(pe.Code)
	}
	// A connect error wrapping neither a server error nor a network error:
	// TLS negotiation, DNS. Retrying may help.
	// ErrConnClosed: the server went away mid-statement (a restart), or the
	// connection was closed under a statement.
	var ce *pgconn.ConnectError
	if dbrot.Transient(err) || pgconn.Timeout(err) || errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) {
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

// dead reports an error that means the connection is gone (dbrot.Driver.Dead):
// a network error other than a timeout, a closed connection, or the server
// ending the session (57P01 admin_shutdown, 57P02 crash_shutdown: always
// FATAL; pg_terminate_backend, a restart). A statement the server refused is
// not.
func dead(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02"
	}
	return !pgconn.Timeout(err) && (dbrot.Broken(err) || errors.Is(err, pgconn.ErrConnClosed))
}

// classOfCode maps SQLSTATE codes (PostgreSQL Appendix A).
func classOfCode(code string) rotator.Class {
	switch code {
	case "28P01", "28000": // invalid_password, invalid_authorization_specification
		return rotator.ClassAuth
	case "42501": // insufficient_privilege
		return rotator.ClassPermission
	case "53300", // too_many_connections
		"53000", "53100", "53200", "53400", // insufficient resources
		"57P01", "57P02", "57P03", // admin/crash shutdown, cannot_connect_now
		"57014",          // query_canceled (statement_timeout)
		"40001", "40P01", // serialization failure, deadlock
		"55P03": // lock_not_available
		return rotator.ClassTransient
	case "3D000", "42704", "22023": // no such database, no such role, invalid parameter
		return rotator.ClassConfig
	}
	if strings.HasPrefix(code, "08") { // connection exception
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

// redactStatementError returns err with the server's message dropped when it
// may quote the statement (syntax errors, bad literals): the statement held a
// verifier. The SQLSTATE is kept, so classification still works.
func redactStatementError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	if strings.HasPrefix(pe.Code, "42601") || strings.HasPrefix(pe.Code, "22") {
		return &pgconn.PgError{Severity: pe.Severity, Code: pe.Code, Message: "statement refused (message withheld: it may quote a secret)"}
	}
	return err
}

// scrub replaces every password in vals, and the quoted forms a driver or
// server may echo, by [REDACTED] (see dbrot.Scrub).
func scrub(err error, vals ...secret.Value) error { return dbrot.Scrub(err, dbrot.SQLForms, vals...) }
