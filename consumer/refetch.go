package consumer

import (
	"context"
	"sync/atomic"
)

// Refresher is optionally implemented by a Source: Refresh reads the current
// version of id from its origin, past any cache, and caches the result.
// The pool swaps call it when the target refuses a login with the version
// they hold (a change they have not heard of yet). Errors are those of
// Source.Current.
type Refresher interface {
	Refresh(ctx context.Context, id string) (Credential, error)
}

// Refetch reads the current version of id past src's cache when src is a
// Refresher, and through src.Current otherwise.
func Refetch(ctx context.Context, src Source, id string) (Credential, error) {
	if r, ok := src.(Refresher); ok {
		return r.Refresh(ctx, id)
	}
	return src.Current(ctx, id)
}

// RefetchStats counts what a pool did when the target refused a login for
// the credential itself (PostgreSQL SQLSTATE 28P01 or 28000, MySQL error
// 1045): it refetches the current version and, when that version differs
// from the refused one, retries the login once.
type RefetchStats struct {
	// Refused counts logins refused for the credential.
	Refused int64 `json:"refused"`
	// Retried counts refused logins retried with a refetched, newer version.
	Retried int64 `json:"retried"`
	// Recovered counts retries that logged in.
	Recovered int64 `json:"recovered"`
}

// RefetchCounter accumulates RefetchStats; the zero value is ready. It is
// safe for concurrent use.
type RefetchCounter struct {
	refused, retried, recovered atomic.Int64
}

// Refused counts a refused login.
func (c *RefetchCounter) Refused() { c.refused.Add(1) }

// Retried counts a retry and whether it logged in.
func (c *RefetchCounter) Retried(ok bool) {
	c.retried.Add(1)
	if ok {
		c.recovered.Add(1)
	}
}

// Stats returns the counts so far.
func (c *RefetchCounter) Stats() RefetchStats {
	return RefetchStats{Refused: c.refused.Load(), Retried: c.retried.Load(), Recovered: c.recovered.Load()}
}
