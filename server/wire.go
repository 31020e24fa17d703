package server

import (
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// The JSON shapes of the API (see /v1/openapi.json). The client package
// decodes the same shapes; its tests run against this server.

// putBody is the body of PUT /v1/credentials/{id}.
type putBody struct {
	Type      credential.Type      `json:"type"`
	Fields    map[string]any       `json:"fields"`
	Secret    map[string]string    `json:"secret"`
	ExpiresAt *time.Time           `json:"expires_at,omitempty"`
	Settings  *credential.Settings `json:"settings,omitempty"`
	Reason    string               `json:"reason,omitempty"`
}

// Rotation is the JSON of a journal row.
type Rotation = rotation.Info

func toRotation(r *store.Rotation) *Rotation { return rotation.InfoOf(r) }

// rotateBody is the body of POST /v1/rotate/{id}.
type rotateBody struct {
	Grace      *rotation.Duration `json:"grace,omitempty"`
	Reason     string             `json:"reason,omitempty"`
	NoValidate bool               `json:"no_validate,omitempty"`
	Wait       bool               `json:"wait,omitempty"`
	// Now asks for an emergency rotation (see rotateNow).
	Now bool `json:"now,omitempty"`
}

// rollbackBody is the body of POST /v1/rollback/{id}.
type rollbackBody struct {
	ToVersion int    `json:"to_version,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Wait      bool   `json:"wait,omitempty"`
}

// graceBody is the body of POST /v1/grace/{id}.
type graceBody struct {
	Extend rotation.Duration `json:"extend"`
	// End ends the grace period at once (see endGrace).
	End    bool   `json:"end,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// resolveBody is the body of POST /v1/resolve/{id}.
type resolveBody struct {
	Keep  int  `json:"keep,omitempty"`
	Force bool `json:"force,omitempty"`
}

// retryBody is the body of POST /v1/retry/{id}.
type retryBody struct {
	Rollback bool `json:"rollback,omitempty"`
}

// policyJSON is the answer of GET and PUT /v1/policy/{id}.
type policyJSON struct {
	ID             string              `json:"id"`
	Settings       credential.Settings `json:"settings"`
	NextRotationAt *time.Time          `json:"next_rotation_at"`
	Grace          string              `json:"grace"`
	Validate       bool                `json:"validate"`
	AutoRollback   bool                `json:"auto_rollback"`
	Retention      int                 `json:"retention"`
	// Warnings are the settings' findings (rotation.CheckPolicy): a grace
	// shorter than a consumer's refresh interval plus drain timeout, under
	// 1s, ... Each has the command that fixes it. Never null.
	Warnings []rotation.Finding `json:"warnings"`
}

// tokenJSON is a token without its value.
type tokenJSON struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Grants    []string   `json:"grants"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func toTokenJSON(t *Token) tokenJSON {
	return tokenJSON{ID: t.ID, Name: t.Name, Grants: t.GrantStrings(), CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
}

// createdTokenJSON is the answer of POST /v1/tokens: the only time the token
// value is shown.
type createdTokenJSON struct {
	tokenJSON
	Token string `json:"token"`
}

// tokenBody is the body of POST /v1/tokens.
type tokenBody struct {
	Name   string             `json:"name"`
	Grants []string           `json:"grants"`
	TTL    *rotation.Duration `json:"ttl,omitempty"`
}

// eventJSON is one watch event.
type eventJSON struct {
	Seq          int64     `json:"seq"`
	Kind         string    `json:"kind"`
	CredentialID string    `json:"credential_id"`
	Version      int       `json:"version"`
	At           time.Time `json:"at"`
	Detail       any       `json:"detail,omitempty"`
}
