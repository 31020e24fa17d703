package dbrot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"syscall"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Classify turns a client library's error into a *rotator.Error of the class
// classOf gives it (by server code or error type, never by message text). priv
// names the privilege a ClassPermission error means for op. An error that is
// already a *rotator.Error is returned as it is.
func Classify(classOf func(error) rotator.Class, op, priv string, err error) error {
	if err == nil {
		return nil
	}
	var re *rotator.Error
	if errors.As(err, &re) {
		return err
	}
	c := classOf(err)
	e := &rotator.Error{Class: c, Op: op, Err: err}
	if c == rotator.ClassPermission {
		e.Privilege = priv
	}
	return e
}

// Transient reports the errors, common to every client library, that mean the
// server could not be reached or stopped answering: a deadline or a
// cancellation, a refused, reset or closed connection, a broken pipe, an early
// EOF, any net.Error. Retrying may help.
func Transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// Broken reports the errors, common to every client library, that mean a
// connection is gone: reset, aborted, a broken pipe, an early EOF, a closed
// connection. Unlike Transient it leaves out timeouts and cancellations (the
// server may only be slow, and the statement may still run) and refused
// connects (not an open connection).
func Broken(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// Scrub is a rotator's own last line of defence (the registry also wraps
// rotators with rotator.Sanitize): every form that forms gives for each value
// in vals (the value itself, and the escaped or hashed forms a driver or
// server may echo) is replaced by [REDACTED]; values shorter than 4 bytes are
// left alone. The result keeps the class, privilege and retry delay; the chain
// is dropped only when something was found.
func Scrub(err error, forms func(value string) []string, vals ...secret.Value) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var all []string
	for _, v := range vals {
		p := v.Reveal()
		if len(p) < 4 {
			continue
		}
		all = append(all, forms(p)...)
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	found := false
	for _, f := range all {
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
		out.BeforeChange = e.BeforeChange
		if e.Privilege != "" { // Error() appends it again
			msg = strings.TrimSuffix(msg, fmt.Sprintf(" (missing privilege: %s)", e.Privilege))
		}
	}
	out.Err = errors.New(msg)
	return out
}

// SQLForms are the forms of p an SQL driver or server may echo for Scrub: p,
// p with its quotes doubled, with its single or double quotes
// backslash-escaped, and with every quote and backslash escaped.
func SQLForms(p string) []string {
	backslashed := strings.NewReplacer(`\`, `\\`, "'", `\'`, `"`, `\"`).Replace(p)
	return []string{p, strings.ReplaceAll(p, "'", "''"), strings.ReplaceAll(p, `"`, `""`),
		strings.ReplaceAll(p, "'", `\'`), strings.ReplaceAll(p, `"`, `\"`), backslashed}
}

// AtAddr makes err name the server address it came from (host:port), unless
// its text does already: a timeout or a reset otherwise says nothing about
// which target was away.
func AtAddr(addr string, err error) error {
	if err == nil || strings.Contains(err.Error(), addr) {
		return err
	}
	return fmt.Errorf("%s: %w", addr, err)
}
