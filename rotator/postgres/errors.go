package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// classify turns a driver error into a *rotator.Error by SQLSTATE or by error
// type, never by message text. priv names the privilege a 42501 means for op.
func classify(op, priv string, err error) error {
	if err == nil {
		return nil
	}
	var re *rotator.Error
	if errors.As(err, &re) {
		return err
	}
	return &rotator.Error{Class: classOf(err), Op: op, Privilege: privilegeFor(err, priv), Err: err}
}

func privilegeFor(err error, priv string) string {
	if classOf(err) == rotator.ClassPermission {
		return priv
	}
	return ""
}

func classOf(err error) rotator.Class {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return classOfCode(pe.Code)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), pgconn.Timeout(err):
		return rotator.ClassTransient
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return rotator.ClassTransient
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return rotator.ClassTransient
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		// A connect error wrapping neither a server error nor a network error:
		// TLS negotiation, DNS. Retrying may help.
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
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

// isAuthFailure reports a login refused for the credential itself (wrong
// password, expired VALID UNTIL, NOLOGIN role).
func isAuthFailure(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && classOfCode(pe.Code) == rotator.ClassAuth
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

// scrub is the rotator's own last line of defence (the registry also wraps
// rotators with rotator.Sanitize): every secret value, and the escaped forms a
// driver or server may echo, is replaced by [REDACTED]. The result keeps the
// class, op and privilege; the chain is dropped only when something was found.
func scrub(err error, vals ...secret.Value) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var forms []string
	for _, v := range vals {
		p := v.Reveal()
		if len(p) < 4 {
			continue
		}
		backslashed := strings.NewReplacer(`\`, `\\`, "'", `\'`, `"`, `\"`).Replace(p)
		forms = append(forms, p, strings.ReplaceAll(p, "'", "''"), strings.ReplaceAll(p, `"`, `""`),
			strings.ReplaceAll(p, "'", `\'`), strings.ReplaceAll(p, `"`, `\"`), backslashed)
	}
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	found := false
	for _, f := range forms {
		if strings.Contains(msg, f) {
			msg = strings.ReplaceAll(msg, f, secret.Redacted)
			found = true
		}
	}
	if !found {
		return err
	}
	out := &rotator.Error{Class: rotator.ClassOf(err)}
	var e *rotator.Error
	if errors.As(err, &e) {
		out.Privilege = e.Privilege
		out.RetryAfter = e.RetryAfter
		if e.Privilege != "" { // Error() appends it again
			msg = strings.TrimSuffix(msg, fmt.Sprintf(" (missing privilege: %s)", e.Privilege))
		}
	}
	out.Err = errors.New(msg)
	return out
}
