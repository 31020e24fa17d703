package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// classify turns a client error into a *rotator.Error by the server's error
// prefix (NOPERM, WRONGPASS, LOADING, ...) through go-redis's predicates, or
// by error type. priv names the command a NOPERM refused.
func classify(op, priv string, err error) error {
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

func classOf(err error) rotator.Class {
	var se redis.Error
	if errors.As(err, &se) { // a reply from the server
		switch {
		case redis.IsAuthError(err): // WRONGPASS, NOAUTH
			return rotator.ClassAuth
		case redis.IsPermissionError(err): // NOPERM
			return rotator.ClassPermission
		case redis.IsLoadingError(err), redis.IsTryAgainError(err), redis.IsMasterDownError(err),
			redis.IsClusterDownError(err), redis.IsMaxClientsError(err), redis.HasErrorPrefix(err, "BUSY"):
			return rotator.ClassTransient
		}
		return rotator.ClassUnknown
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return rotator.ClassTransient
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

// isAuthFailure reports a login refused for the credential itself.
func isAuthFailure(err error) bool {
	var se redis.Error
	return errors.As(err, &se) && redis.IsAuthError(err)
}

// scrub is the rotator's own last line of defence (the registry also wraps
// rotators with rotator.Sanitize): every secret value, and the escaped forms a
// client or server may echo, is replaced by [REDACTED]. The result keeps the
// class and privilege; the chain is dropped only when something was found.
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
		forms = append(forms, p, strings.ReplaceAll(p, `"`, `\"`), strings.ReplaceAll(p, "'", `\'`), hash(p))
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
