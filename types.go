// Package credential is the Go API of nebula-credential: an encrypted, versioned
// credential store whose heart is safe, zero-downtime rotation.
//
// Open a Manager with a store (store/sqlite or store/postgres) and a root key
// (key file or passphrase), then Put, Get, List, History, Rotate and Rollback:
//
//	st, _ := sqlite.Open(ctx, "creds.db")
//	m, _ := credential.Open(ctx, credential.Config{Store: st, KeyFile: "creds.key", Create: true})
//	defer m.Close()
//	m.Put(ctx, "prod/db/orders", credential.PutRequest{Type: credential.Postgres, ...})
//	c, _ := m.Get(ctx, "prod/db/orders", credential.GetOptions{})
//	pw := c.Secret["password"].Reveal()
package credential

import (
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Errors callers branch on (use errors.Is).
var (
	ErrNotFound           = store.ErrNotFound
	ErrConflict           = store.ErrConflict
	ErrRotationInProgress = store.ErrRotationInProgress
	ErrWrongKey           = keyring.ErrWrongKey
	ErrInvalid            = errors.New("invalid input")
	ErrPermission         = acl.ErrDenied
)

// Type is a credential type.
type Type string

// The credential types.
const (
	Postgres    Type = "postgres"
	MySQL       Type = "mysql"
	Redis       Type = "redis"
	APIKey      Type = "api_key"
	OAuth2      Type = "oauth2"
	Certificate Type = "certificate"
	Generic     Type = "generic"
)

// Labels.
const (
	LabelCurrent  = "current"
	LabelPrevious = "previous"
	LabelPending  = "pending"
)

// Schema declares a type's required non-secret fields and its secret fields.
type Schema struct {
	Fields         []string // required non-secret fields
	Secret         []string // required secret fields
	OptionalSecret []string // allowed secret fields beyond Secret
}

var schemas = map[Type]Schema{
	Postgres:    {Fields: []string{"host", "username"}, Secret: []string{"password"}},
	MySQL:       {Fields: []string{"host", "username"}, Secret: []string{"password"}},
	Redis:       {Fields: []string{"host"}, Secret: []string{"password"}},
	APIKey:      {Secret: []string{"key"}},
	OAuth2:      {Fields: []string{"token_url", "client_id"}, Secret: []string{"refresh_token"}, OptionalSecret: []string{"access_token", "client_secret"}},
	Certificate: {Fields: []string{"certificate"}, Secret: []string{"private_key"}},
	Generic:     {},
}

// Types lists the credential types.
func Types() []Type {
	return []Type{Postgres, MySQL, Redis, APIKey, OAuth2, Certificate, Generic}
}

// SchemaOf returns the schema of a type.
func SchemaOf(t Type) (Schema, bool) {
	s, ok := schemas[t]
	return s, ok
}

// ValidateType checks a type name.
func ValidateType(t Type) error {
	if _, ok := schemas[t]; !ok {
		names := make([]string, 0, len(schemas))
		for _, t := range Types() {
			names = append(names, string(t))
		}
		return fmt.Errorf("%w: unknown type %q (want one of %s)", ErrInvalid, t, strings.Join(names, ", "))
	}
	return nil
}

// ValidateValues checks fields and secret against the type's schema.
func ValidateValues(t Type, fields map[string]any, sec secret.Map) error {
	s, ok := schemas[t]
	if !ok {
		return ValidateType(t)
	}
	for _, f := range s.Fields {
		v, ok := fields[f]
		if !ok || v == nil || v == "" {
			return fmt.Errorf("%w: type %s needs field %q under \"fields\"", ErrInvalid, t, f)
		}
	}
	if t == Certificate && !holdsPEMCertificate(fields["certificate"]) {
		return fmt.Errorf("%w: field \"certificate\" of type certificate holds no PEM certificate: put the current certificate and its chain (\"-----BEGIN CERTIFICATE-----\"...); docs/targets/x509.md shows how to make a first one", ErrInvalid)
	}
	allowed := append(slices.Clone(s.Secret), s.OptionalSecret...)
	for _, f := range allowed {
		if _, ok := fields[f]; ok {
			return fmt.Errorf("%w: %q is a secret field of type %s: put it under \"secret\", not \"fields\"", ErrInvalid, f, t)
		}
	}
	for _, f := range s.Secret {
		if sec[f].IsZero() {
			return fmt.Errorf("%w: type %s needs secret field %q under \"secret\"", ErrInvalid, t, f)
		}
	}
	if len(sec) == 0 {
		return fmt.Errorf("%w: \"secret\" is empty: a credential needs at least one secret field", ErrInvalid)
	}
	if t != Generic {
		for name := range sec {
			if !slices.Contains(allowed, name) {
				return fmt.Errorf("%w: unknown secret field %q for type %s (secret fields: %s)", ErrInvalid, name, t, strings.Join(allowed, ", "))
			}
		}
	}
	for name, v := range sec {
		if err := validateFieldName(name); err != nil {
			return err
		}
		// A secret is kept byte for byte: one that is not valid UTF-8 could
		// not cross the JSON API, backups or exports unchanged, so it is
		// refused rather than altered.
		if !utf8.ValidString(v.Reveal()) {
			return fmt.Errorf("%w: secret field %q is not valid UTF-8 text: encode binary secrets (base64, hex) before storing them", ErrInvalid, name)
		}
	}
	for name := range fields {
		if err := validateFieldName(name); err != nil {
			return err
		}
	}
	return nil
}

// holdsPEMCertificate reports whether v is text with a PEM CERTIFICATE block.
func holdsPEMCertificate(v any) bool {
	str, ok := v.(string)
	if !ok {
		return false
	}
	rest := []byte(str)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" && len(b.Bytes) > 0 {
			return true
		}
	}
}

func validateFieldName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: field name %q must be 1 to 64 characters", ErrInvalid, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return fmt.Errorf("%w: field name %q may only contain a-z, 0-9, '_', '-' and '.'", ErrInvalid, name)
		}
	}
	return nil
}

// MaxIDLength bounds credential IDs.
const MaxIDLength = 256

// ValidateID checks a credential ID: path segments of [a-z0-9._-] separated by
// '/', no empty, "." or ".." segment, at most MaxIDLength bytes.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty credential ID", ErrInvalid)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: credential ID is %d bytes, the limit is %d", ErrInvalid, len(id), MaxIDLength)
	}
	for seg := range strings.SplitSeq(id, "/") {
		if seg == "" {
			return fmt.Errorf("%w: credential ID %q has an empty path segment (leading, trailing or double '/')", ErrInvalid, id)
		}
		if seg == "." || seg == ".." {
			return fmt.Errorf("%w: credential ID %q may not contain a %q segment", ErrInvalid, id, seg)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				return fmt.Errorf("%w: credential ID %q: character %q not allowed (use a-z, 0-9, '.', '_', '-' and '/')", ErrInvalid, id, r)
			}
		}
	}
	return nil
}

// State is a credential's derived state.
type State string

// The states.
const (
	StateActive         State = "active"
	StateRotating       State = "rotating"
	StateGrace          State = "grace"
	StateRolledBack     State = "rolled_back"
	StateNeedsAttention State = "needs_attention"
	StateRevoked        State = "revoked"
	StateExpired        State = "expired"
	StateReauthRequired State = "reauth_required"
	StateDeleted        State = "deleted"
)

// Credential is one decrypted version of a credential.
type Credential struct {
	ID          string         `json:"id"`
	Type        Type           `json:"type"`
	Version     int            `json:"version"`
	Labels      []string       `json:"labels"`
	State       State          `json:"state"`
	Fields      map[string]any `json:"fields"`
	Secret      secret.Map     `json:"secret"`
	CreatedAt   time.Time      `json:"created_at"`
	ExpiresAt   *time.Time     `json:"expires_at,omitempty"`
	GraceEndsAt *time.Time     `json:"grace_ends_at,omitempty"`
	NextDueAt   *time.Time     `json:"next_rotation_at,omitempty"`
	// Warnings, set by Put with settings, are what is wrong with them
	// (rotation.CheckPolicy), as policy set reports them.
	Warnings []rotation.Finding `json:"warnings,omitempty"`
}

// Summary describes a credential without decrypting it.
type Summary struct {
	ID        string     `json:"id"`
	Type      Type       `json:"type"`
	Current   int        `json:"current_version"`
	State     State      `json:"state"`
	UpdatedAt time.Time  `json:"updated_at"`
	NextDueAt *time.Time `json:"next_rotation_at,omitempty"`
}

// VersionInfo describes one stored version without its secret.
type VersionInfo struct {
	Version   int        `json:"version"`
	Labels    []string   `json:"labels"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// HistoryEntry is one event in a credential's life.
type HistoryEntry struct {
	At          time.Time `json:"at"`
	Action      string    `json:"action"`
	Actor       string    `json:"actor,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	FromVersion int       `json:"from_version,omitempty"`
	ToVersion   int       `json:"to_version,omitempty"`
	RotationID  int64     `json:"rotation_id,omitempty"`
	Outcome     string    `json:"outcome,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	DurationMS  int64     `json:"duration_ms,omitempty"`
}

// Settings are a credential's rotation settings.
type Settings = rotation.Settings
