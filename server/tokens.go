package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// TokenPrefix starts every bearer token, so that a leaked one is easy to grep
// for and to recognise in secret scanners.
const TokenPrefix = "nct_"

// Token describes an API token. The token value itself is never stored: only
// its SHA-256 hash.
type Token struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Grants    []acl.Grant `json:"-"`
	CreatedAt time.Time   `json:"created_at"`
	ExpiresAt *time.Time  `json:"expires_at,omitempty"`

	actor string // Actor, made once for a token looked up from the store
}

// GrantStrings returns the grants in "perm:prefix" form.
func (t *Token) GrantStrings() []string {
	out := make([]string, 0, len(t.Grants))
	for _, g := range t.Grants {
		out = append(out, g.String())
	}
	return out
}

// Actor is the audit actor of requests made with the token.
func (t *Token) Actor() string {
	if len(t.actor) == len("token:")+len(t.ID) && t.actor[len("token:"):] == t.ID {
		return t.actor
	}
	return "token:" + t.ID
}

// TokenRequest asks for a new token.
type TokenRequest struct {
	Name   string
	Grants []acl.Grant
	// TTL, when positive, makes the token expire that long after creation.
	TTL time.Duration
	// Now is the creation time; zero means time.Now.
	Now time.Time
}

// ErrTokenInvalid: the bearer token is unknown, revoked, expired or malformed.
var ErrTokenInvalid = errors.New("invalid API token")

// HashToken is the stored form of a token value.
func HashToken(value string) []byte {
	h := sha256.Sum256([]byte(value))
	return h[:]
}

func validateTokenName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: token name must be 1 to 64 characters", credential.ErrInvalid)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: token name may only contain printable characters", credential.ErrInvalid)
		}
	}
	return nil
}

// CreateToken stores a new token and returns it with its value, which is
// shown this once and never again. The creation is audited in the same
// transaction (actor from ctx, see audit.WithActor).
func CreateToken(ctx context.Context, st store.Store, req TokenRequest) (*Token, secret.Value, error) {
	if err := validateTokenName(req.Name); err != nil {
		return nil, secret.Value{}, err
	}
	if len(req.Grants) == 0 {
		return nil, secret.Value{}, fmt.Errorf("%w: a token needs at least one grant (like read:prod/ or admin:*)", credential.ErrInvalid)
	}
	if req.TTL < 0 {
		return nil, secret.Value{}, fmt.Errorf("%w: token TTL must be positive", credential.ErrInvalid)
	}
	grants, err := acl.Encode(req.Grants)
	if err != nil {
		return nil, secret.Value{}, fmt.Errorf("%w: %v", credential.ErrInvalid, err)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Microsecond)
	var raw [32]byte
	rand.Read(raw[:])
	value := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	tok := &Token{Name: req.Name, CreatedAt: now}
	tok.Grants, _ = acl.Decode(grants)
	if req.TTL > 0 {
		exp := now.Add(req.TTL)
		tok.ExpiresAt = &exp
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		existing, err := tx.ListTokens(ctx)
		if err != nil {
			return err
		}
		for {
			var idb [6]byte
			rand.Read(idb[:])
			tok.ID = "tok_" + hex.EncodeToString(idb[:])
			if !slices.ContainsFunc(existing, func(t store.Token) bool { return t.ID == tok.ID }) {
				break
			}
		}
		if err := tx.PutToken(ctx, &store.Token{ID: tok.ID, Name: tok.Name, Hash: HashToken(value), Grants: grants, CreatedAt: now, ExpiresAt: tok.ExpiresAt}); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: "token.create", Outcome: "ok",
			Detail: fmt.Sprintf("token %s (%s) grants %s", tok.ID, tok.Name, strings.Join(tok.GrantStrings(), " "))})
	})
	if err != nil {
		return nil, secret.Value{}, fmt.Errorf("create token: %w", err)
	}
	return tok, secret.New(value), nil
}

// ListTokens returns every token (without values), oldest first.
func ListTokens(ctx context.Context, st store.Store) ([]Token, error) {
	var rows []store.Token
	if err := st.View(ctx, func(tx store.Tx) error {
		var err error
		rows, err = tx.ListTokens(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]Token, 0, len(rows))
	for _, r := range rows {
		t, err := fromStore(&r)
		if err != nil {
			return nil, err
		}
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// RevokeToken deletes a token by ID; it fails with credential.ErrNotFound when
// no such token exists. The revocation is audited in the same transaction.
func RevokeToken(ctx context.Context, st store.Store, id string, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	err := st.Update(ctx, func(tx store.Tx) error {
		toks, err := tx.ListTokens(ctx)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(toks, func(t store.Token) bool { return t.ID == id })
		if i < 0 {
			return fmt.Errorf("%w: no token %s (see `nebula-credential token list`)", store.ErrNotFound, id)
		}
		if err := tx.DeleteToken(ctx, id); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: now.UTC(), Action: "token.revoke", Outcome: "ok", Detail: fmt.Sprintf("token %s (%s)", id, toks[i].Name)})
	})
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// Authenticate looks a token value up. It fails with ErrTokenInvalid for an
// unknown, malformed or expired token.
func Authenticate(ctx context.Context, st store.Store, value string, now time.Time) (*Token, error) {
	if !strings.HasPrefix(value, TokenPrefix) || len(value) > 128 {
		return nil, ErrTokenInvalid
	}
	var row *store.Token
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		row, err = tx.GetTokenByHash(ctx, HashToken(value))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	t, err := fromStore(row)
	if err != nil {
		return nil, err
	}
	if t.expired(now) {
		return nil, ErrTokenInvalid
	}
	return t, nil
}

func (t *Token) expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

func fromStore(r *store.Token) (*Token, error) {
	gs, err := acl.Decode(r.Grants)
	if err != nil {
		return nil, fmt.Errorf("token %s: stored grants: %w", r.ID, err)
	}
	return &Token{ID: r.ID, Name: r.Name, Grants: gs, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, actor: "token:" + r.ID}, nil
}
