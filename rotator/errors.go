package rotator

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Class says what kind of failure an error is; it decides retry and rollback.
type Class string

const (
	// ClassTransient: the target could not be reached or was overloaded
	// (connection refused, timeout, too many connections, 429, 5xx). Retryable.
	ClassTransient Class = "transient"
	// ClassRejected: the target refused the secret itself (a password policy, a
	// bad password on verify). Not retryable with the same secret: regenerate.
	ClassRejected Class = "rejected"
	// ClassAuth: the credentials used to talk to the target are wrong. Not retryable.
	ClassAuth Class = "auth"
	// ClassPermission: the account lacks a privilege; Error.Privilege names it.
	ClassPermission Class = "permission"
	// ClassConfig: the credential's fields are wrong or incomplete.
	ClassConfig Class = "config"
	// ClassInvalidGrant: an OAuth2 refresh token was rejected; a person must
	// re-authorise.
	ClassInvalidGrant Class = "invalid_grant"
	// ClassUnknown: anything else. Not retryable.
	ClassUnknown Class = "unknown"
)

// Error is the typed error every rotator returns.
type Error struct {
	Class Class
	// Op is the short step name ("alter role", "verify login").
	Op string
	// Privilege names the missing privilege for ClassPermission.
	Privilege string
	// RetryAfter is the delay the target asked for (HTTP Retry-After), if any.
	RetryAfter time.Duration
	// Urgent marks a failure a person must fix soon (a certificate that
	// expires within days); it survives Sanitize.
	Urgent bool
	// BeforeChange marks a failure before anything changed on the target (see
	// NotReached); it survives Sanitize.
	BeforeChange bool
	Err          error
}

func (e *Error) Error() string {
	msg := e.Op
	if e.Err != nil {
		if msg != "" {
			msg += ": "
		}
		msg += e.Err.Error()
	}
	// A wrapped *Error naming the same privilege has said it already.
	if p := fmt.Sprintf(" (missing privilege: %s)", e.Privilege); e.Privilege != "" && !strings.Contains(msg, p) {
		msg += p
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of class c.
func Errorf(c Class, op, format string, args ...any) error {
	return &Error{Class: c, Op: op, Err: fmt.Errorf(format, args...)}
}

// Wrap returns err as an *Error of class c, unless err is nil.
func Wrap(c Class, op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: c, Op: op, Err: err}
}

// ClassOf returns the class of the first *Error in err's chain, ClassUnknown if none.
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ClassUnknown
}

// Retryable reports whether repeating the same step may succeed.
func Retryable(err error) bool { return ClassOf(err) == ClassTransient }

// RetryAfter returns the delay a target asked for, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// PrivilegeOf returns the missing privilege named by err, or "".
func PrivilegeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Privilege
	}
	return ""
}

// IsUrgent reports whether err is marked urgent.
func IsUrgent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Urgent
}
