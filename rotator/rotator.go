// Package rotator defines the plug-in interface between the rotation engine and
// the systems that issue credentials (databases, API-key services, OAuth2
// providers, certificate authorities).
//
// The engine (package rotation) drives a Rotator through the journaled protocol
// stage → apply → verify → commit → grace → retire, with revert on failure. Every
// method is shaped (ctx, XxxRequest) (XxxResponse, error) so fields can be added
// without breaking implementations, and every method must be idempotent: after a
// crash the engine calls the step again with the same request.
//
// Errors returned by a Rotator should be *Error values carrying a Class; the engine
// decides retries with Retryable, never by matching text. Wrap a Rotator with
// Sanitize so no secret value can leave through an error message.
package rotator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nebula-credential/nebula-credential/secret"
)

// Strategy is how old and new secrets coexist on the target.
type Strategy string

const (
	// Dual: the target accepts old and new at once (MySQL RETAIN CURRENT PASSWORD,
	// MariaDB OR clauses, Redis ACL with two passwords, two live API keys, a random
	// secret whose consumers accept current and previous).
	Dual Strategy = "dual"
	// Alternating: two users take turns; the new secret goes to the inactive one.
	Alternating Strategy = "alternating"
	// InPlace: one user's secret is replaced; there is a short window where
	// clients holding the old secret fail to log in.
	InPlace Strategy = "in_place"
	// Reissue: the provider issues a new secret and the old one stays valid until
	// it expires or is revoked (certificates, OAuth2 refresh).
	Reissue Strategy = "reissue"
)

// Capabilities describe what a Rotator can do.
type Capabilities struct {
	// Strategies supported, best first. The engine picks the first one the
	// credential allows.
	Strategies []Strategy
	// Mints is true when the provider creates the secret during Stage (API keys,
	// OAuth2 tokens, certificates); the engine persists Stage's response before
	// anything else happens.
	Mints bool
	// Cleanup is true when the Rotator implements Cleaner (finds and revokes
	// orphans left by an interrupted Stage).
	Cleanup bool
}

// Credential is one version of a credential as a rotator sees it.
type Credential struct {
	ID      string
	Type    string
	Version int
	// Fields are the non-secret fields: connection details and rotator settings.
	Fields map[string]any
	// Secret holds the secret fields.
	Secret secret.Map
	// ExpiresAt is when the secret stops working, if known.
	ExpiresAt *time.Time
}

// String returns a field as a string ("" if absent or not a string).
func (c Credential) String(name string) string {
	s, _ := c.Fields[name].(string)
	return s
}

// Decode copies the fields into v (a pointer to a struct with json tags).
func (c Credential) Decode(v any) error {
	b, err := json.Marshal(c.Fields)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Class: ClassConfig, Op: "decode fields", Err: err}
	}
	return nil
}

// Resolver gives a rotator access to other stored credentials (an admin
// credential referenced by ID, the current key used to authenticate API calls).
type Resolver interface {
	// Resolve returns the current version of credential id.
	Resolve(ctx context.Context, id string) (Credential, error)
}

// Rotator talks to one kind of target system.
type Rotator interface {
	// Capabilities is constant for a Rotator.
	Capabilities() Capabilities

	// Stage produces the next secret without changing what the target accepts
	// for consumers: a generated password, or a key/token/certificate minted by
	// the provider. The engine stores the response, encrypted, as the pending
	// version before it calls Apply. A minting Stage must be safe to call again
	// with the same RotationID (send it as an idempotency key where the provider
	// supports one). A Stage that does not mint (Capabilities.Mints false) runs
	// inside the engine's planning transaction, so it must be quick and do no
	// I/O beyond resolving other credentials.
	Stage(ctx context.Context, req StageRequest) (StageResponse, error)

	// Apply makes the target accept req.Pending. It must be idempotent: if the
	// pending secret already works it returns success without changing anything.
	// For Dual and Alternating strategies req.Current must keep working.
	Apply(ctx context.Context, req ApplyRequest) (ApplyResponse, error)

	// Verify proves that req.Credential works: a fresh login plus an authorised
	// probe, not just "the ALTER succeeded". It changes nothing.
	Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error)

	// Retire makes the target stop accepting req.Old, which the engine no longer
	// serves. It is idempotent: retiring a secret already gone succeeds.
	Retire(ctx context.Context, req RetireRequest) (RetireResponse, error)

	// Revert undoes Apply: the target accepts req.Current again and, where the
	// strategy allows, stops accepting req.Pending. It is idempotent.
	Revert(ctx context.Context, req RevertRequest) (RevertResponse, error)
}

// Cleaner is implemented by minting rotators that can find secrets they minted
// but the store never recorded (a crash between the provider call and the
// journal write) and revoke them.
type Cleaner interface {
	// Cleanup revokes every secret minted for the credential other than those in
	// req.Keep. It is idempotent.
	Cleanup(ctx context.Context, req CleanupRequest) (CleanupResponse, error)
}

// Preparer is implemented by rotators whose Apply spends CPU on the pending
// secret alone (PostgreSQL: the SCRAM verifier). The engine calls Prepare on a
// goroutine of its own as soon as it has generated the pending secret, while
// the transaction that stores that secret waits for the disk, and hands the
// result to the first Apply as ApplyRequest.Prepared. Prepare must do no I/O
// and change nothing; it returns nil when it has nothing to offer. Its
// result is never logged.
type Preparer interface {
	Prepare(pending Credential) any
}

// StrategyChooser is implemented by rotators whose strategies depend on the
// credential's fields (an API-key spec that mints keys or sets a password).
type StrategyChooser interface {
	// StrategiesFor returns the strategies for c, best first.
	StrategiesFor(c Credential) []Strategy
}

// Checker is implemented by rotators that can inspect the target's setup and
// warn about conditions that would undo a rotation (Redis without an ACL file).
type Checker interface {
	Check(ctx context.Context, req CheckRequest) (CheckResponse, error)
}

// StageRequest asks for the next secret.
type StageRequest struct {
	Current    Credential
	Strategy   Strategy
	RotationID int64 // stable across retries and recovery
	// IdempotencyKey is stable across retries and recovery of this rotation and
	// unique across stores and credentials: send it to providers that accept
	// an idempotency key on create.
	IdempotencyKey string
	Resolver       Resolver
}

// CredentialKey is the idempotency key to use when IdempotencyKey is empty:
// the credential ID and rotation ID, unique within one store.
func (r StageRequest) CredentialKey() string {
	return fmt.Sprintf("%s#%d", r.Current.ID, r.RotationID)
}

// StageResponse is the pending version: its secret and the non-secret fields it
// changes (the active username, a key ID, a certificate's expiry).
type StageResponse struct {
	Secret    secret.Map
	Fields    map[string]any // merged over Current.Fields
	ExpiresAt *time.Time
}

// ApplyRequest sets Pending on the target.
type ApplyRequest struct {
	Current  Credential
	Pending  Credential
	Strategy Strategy
	// GraceEndsAt is when Current stops being needed; targets that can enforce a
	// deadline themselves (PostgreSQL VALID UNTIL) use it.
	GraceEndsAt time.Time
	Resolver    Resolver
	// FirstAttempt is true when the engine knows this is the first Apply of a
	// freshly staged secret (no retry, no recovery, no grace extension): the
	// target cannot accept it yet, so a rotator may skip its "already
	// applied?" login.
	FirstAttempt bool
	// Prepared is what Preparer.Prepare returned for Pending, or nil. Apply
	// must work without it and must not use a value made for another secret.
	Prepared any
}

// ApplyResponse reports the outcome of Apply.
type ApplyResponse struct {
	// Skipped is true when the pending secret already worked.
	Skipped bool
}

// VerifyRequest checks one credential against the target.
type VerifyRequest struct {
	Credential Credential
	Resolver   Resolver
}

// VerifyResponse reports what was checked.
type VerifyResponse struct {
	Detail string // e.g. "logged in as app_b, SELECT 1 ok"; never secret
}

// RetireRequest revokes Old; Current is the version now served.
type RetireRequest struct {
	Old      Credential
	Current  Credential
	Strategy Strategy
	Resolver Resolver
}

// RetireResponse reports the outcome of Retire.
type RetireResponse struct{}

// RevertRequest restores Current after a failed Apply or Verify of Pending.
type RevertRequest struct {
	Current  Credential
	Pending  Credential
	Strategy Strategy
	Resolver Resolver
}

// RevertResponse reports the outcome of Revert.
type RevertResponse struct{}

// CleanupRequest lists the secrets to keep.
type CleanupRequest struct {
	// Current is the credential's current version (its fields configure the
	// provider calls); it is also in Keep.
	Current  Credential
	Keep     []Credential
	Resolver Resolver
}

// CleanupResponse reports how many orphans were revoked.
type CleanupResponse struct {
	Revoked int
}

// CheckRequest inspects the target for one credential.
type CheckRequest struct {
	Credential Credential
	Resolver   Resolver
}

// CheckResponse lists warnings, each one line saying what to do.
type CheckResponse struct {
	Warnings []string
}

// Registry maps credential types to rotators.
type Registry struct {
	m map[string]Rotator
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Rotator{}} }

// Register sets the rotator for a credential type, replacing any earlier one.
// The rotator is wrapped with Sanitize.
func (r *Registry) Register(typ string, rot Rotator) {
	r.m[typ] = Sanitize(rot)
}

// Lookup returns the rotator for typ.
func (r *Registry) Lookup(typ string) (Rotator, error) {
	rot, ok := r.m[typ]
	if !ok {
		return nil, &Error{Class: ClassConfig, Op: "lookup", Err: fmt.Errorf("no rotator registered for type %q", typ)}
	}
	return rot, nil
}

// Close closes the connections the registered rotators keep between calls
// (those that implement io.Closer: the database rotators' idle admin
// connections). The rotators stay usable; a later call opens new ones.
func (r *Registry) Close() error {
	var errs []error
	for _, rot := range r.m {
		if c, ok := Unwrap(rot).(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Types lists the registered types.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.m))
	for t := range r.m {
		out = append(out, t)
	}
	return out
}
