package credential

import (
	"time"

	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Wire is the JSON of one credential version shared by the HTTP API, the Go
// client and the CLI's --json output. Secret values are "[REDACTED]" unless
// Revealed.
type Wire struct {
	ID             string            `json:"id"`
	Type           Type              `json:"type"`
	Version        int               `json:"version"`
	Labels         []string          `json:"labels"`
	State          State             `json:"state"`
	Fields         map[string]any    `json:"fields"`
	Secret         map[string]string `json:"secret"`
	Revealed       bool              `json:"revealed"`
	CreatedAt      time.Time         `json:"created_at"`
	ExpiresAt      *time.Time        `json:"expires_at,omitempty"`
	GraceEndsAt    *time.Time        `json:"grace_ends_at,omitempty"`
	NextRotationAt *time.Time        `json:"next_rotation_at,omitempty"`
	// Warnings: the answer of a put with settings carries what is wrong with
	// them (as policy set reports it).
	Warnings []rotation.Finding `json:"warnings,omitempty"`
}

// Wire returns the JSON form of c; with reveal the secret values are plaintext.
func (c *Credential) Wire(reveal bool) Wire {
	sec := make(map[string]string, len(c.Secret))
	for k, v := range c.Secret {
		if reveal {
			sec[k] = v.Reveal()
		} else {
			sec[k] = secret.Redacted
		}
	}
	fields, labels := c.Fields, c.Labels
	if fields == nil {
		fields = map[string]any{}
	}
	if labels == nil {
		labels = []string{}
	}
	return Wire{
		ID: c.ID, Type: c.Type, Version: c.Version, Labels: labels, State: c.State,
		Fields: fields, Secret: sec, Revealed: reveal, CreatedAt: c.CreatedAt,
		ExpiresAt: c.ExpiresAt, GraceEndsAt: c.GraceEndsAt, NextRotationAt: c.NextDueAt, Warnings: c.Warnings,
	}
}

// Credential converts the JSON form back. Without Revealed, the secret fields
// are present with empty values (never the "[REDACTED]" placeholder, which
// would pass for a password).
func (w *Wire) Credential() *Credential {
	sec := make(secret.Map, len(w.Secret))
	for k, v := range w.Secret {
		if w.Revealed {
			sec[k] = secret.New(v)
		} else {
			sec[k] = secret.Value{}
		}
	}
	return &Credential{
		ID: w.ID, Type: w.Type, Version: w.Version, Labels: w.Labels, State: w.State,
		Fields: w.Fields, Secret: sec, CreatedAt: w.CreatedAt, ExpiresAt: w.ExpiresAt,
		GraceEndsAt: w.GraceEndsAt, NextDueAt: w.NextRotationAt, Warnings: w.Warnings,
	}
}
