package acl

import "context"

// Principal is who asks for an operation and what they hold: the actor name
// recorded in audit entries and bindings ("token:abc123") and its grants.
type Principal struct {
	Actor  string
	Grants []Grant
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p. The server sets it once per request,
// after authentication, so every layer below can check a grant the handler
// did not think of (binding a credential to an admin needs Use on the admin).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalOf returns the principal of ctx. ok is false outside an API
// request: the caller is the local operator, who holds the store's keys and
// so every permission.
func PrincipalOf(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(principalKey{}).(Principal)
	return p, ok
}
