package redis

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
	"github.com/nebula-credential/nebula-credential/secret"
)

// classify turns a client error into a *rotator.Error by the server's error
// prefix (NOPERM, WRONGPASS, LOADING, ...) through go-redis's predicates, or
// by error type. priv names the command a NOPERM refused.
func classify(op, priv string, err error) error { return dbrot.Classify(classOf, op, priv, err) }

// classOf classifies a client error; a login refused for the credential
// itself (WRONGPASS, NOAUTH) is ClassAuth.
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
	if dbrot.Transient(err) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) {
		return rotator.ClassTransient
	}
	return rotator.ClassUnknown
}

// scrub replaces every password in vals, the escaped forms a client or server
// may echo, and the SHA-256 hash ACL rules carry, by [REDACTED] (see
// dbrot.Scrub).
func scrub(err error, vals ...secret.Value) error {
	return dbrot.Scrub(err, func(p string) []string {
		return []string{p, strings.ReplaceAll(p, `"`, `\"`), strings.ReplaceAll(p, "'", `\'`), hash(p)}
	}, vals...)
}
