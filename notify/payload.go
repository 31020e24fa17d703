package notify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Schema names the version of the generic payload. Fields are only ever
// added to a schema; a change that removes or redefines one gets a new name.
const Schema = "nebula-credential.notification.v1"

// Payload is the generic JSON body (FormatJSON). It is built from event
// metadata only and never holds a secret value.
type Payload struct {
	Schema       string         `json:"schema"`                  // always Schema
	ID           string         `json:"id"`                      // event ID, also the Idempotency-Key header
	Kind         string         `json:"kind"`                    // one of Kinds(), or "test"
	At           time.Time      `json:"at"`                      // when it happened (RFC 3339, UTC)
	CredentialID string         `json:"credential_id,omitempty"` // the credential it concerns
	Version      int            `json:"version,omitempty"`       // the version it concerns (see docs per kind)
	Summary      string         `json:"summary"`                 // one line for people
	Detail       map[string]any `json:"detail,omitempty"`        // kind-specific, never secret
}

// eventKind maps a stored event to a notification kind; false for events
// that are not notified (a manual put, the current label moving back in a
// rollback, which rolled_back reports).
func eventKind(e *store.Event, detail map[string]any) (string, bool) {
	switch e.Kind {
	case "current_changed":
		if _, ok := detail["previous"]; ok {
			return KindCommitted, true
		}
	case "rotation_failed":
		return KindFailed, true
	case "rolled_back":
		return KindRolledBack, true
	case "needs_attention":
		if detail["error_class"] == "invalid_grant" {
			return KindReauthRequired, true
		}
		return KindNeedsAttention, true
	}
	return "", false
}

// eventID is the idempotency key of a stored event.
func eventID(seq int64) string { return "evt_" + strconv.FormatInt(seq, 10) }

// fromEvent builds the payload of a stored event.
func fromEvent(e *store.Event) (*Payload, bool) {
	var detail map[string]any
	if len(e.Detail) > 0 {
		_ = json.Unmarshal(e.Detail, &detail)
	}
	kind, ok := eventKind(e, detail)
	if !ok {
		return nil, false
	}
	p := &Payload{Schema: Schema, ID: eventID(e.Seq), Kind: kind, At: e.At.UTC(), CredentialID: e.CredentialID, Version: e.Version, Detail: detail}
	p.Summary = summary(p)
	return p, true
}

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// summary is the one line shown to people (and the Slack text).
func summary(p *Payload) string {
	d := p.Detail
	id := p.CredentialID
	switch p.Kind {
	case KindCommitted:
		s := fmt.Sprintf("%s: rotated to version %d (previous %s)", id, p.Version, str(d["previous"]))
		if g := str(d["grace_ends_at"]); g != "" {
			s += ", grace ends " + g
		}
		return s
	case KindFailed:
		return fmt.Sprintf("%s: rotation failed at %s (%s); version %d stays current", id, str(d["failed_step"]), str(d["error_class"]), p.Version)
	case KindRolledBack:
		if fs := str(d["failed_step"]); fs != "" {
			return fmt.Sprintf("%s: rotation rolled back after %s failed (%s); version %d is current", id, fs, str(d["error_class"]), p.Version)
		}
		return fmt.Sprintf("%s: rolled back to version %d", id, p.Version)
	case KindNeedsAttention:
		return fmt.Sprintf("%s: rotation needs attention: %s failed (%s); run `nebula-credential doctor %s`", id, str(d["step"]), str(d["error_class"]), id)
	case KindReauthRequired:
		return fmt.Sprintf("%s: the provider rejected the refresh token; a person must re-authorise (`nebula-credential doctor %s`)", id, id)
	case KindGraceEnding:
		return fmt.Sprintf("%s: grace period of version %s ends at %s; the old version stops working then", id, str(d["previous"]), str(d["grace_ends_at"]))
	case KindCertExpiring:
		return fmt.Sprintf("%s: version %d expires at %s (%s days left)", id, p.Version, str(d["expires_at"]), str(d["days_left"]))
	case KindOverdue:
		return fmt.Sprintf("%s: overdue for rotation by its policy since %s", id, str(d["due_at"]))
	case KindConsumersStale:
		return fmt.Sprintf("%s: grace ended but %s consumer(s) still reported version %s: %s", id, str(d["count"]), str(d["old_version"]), str(d["consumers"]))
	case KindTest:
		return "test notification from nebula-credential"
	}
	return p.Kind + " " + id
}

// body renders p in format.
func body(p []byte, format string) ([]byte, error) {
	if format != FormatSlack {
		return p, nil
	}
	var pl Payload
	if err := json.Unmarshal(p, &pl); err != nil {
		return nil, err
	}
	icon := map[string]string{
		KindCommitted: ":white_check_mark:", KindFailed: ":x:", KindRolledBack: ":leftwards_arrow_with_hook:",
		KindNeedsAttention: ":rotating_light:", KindReauthRequired: ":rotating_light:", KindGraceEnding: ":hourglass:",
		KindCertExpiring: ":warning:", KindOverdue: ":warning:", KindConsumersStale: ":warning:", KindTest: ":wave:",
	}[pl.Kind]
	text := strings.TrimSpace(icon + " " + slackEscape(pl.Summary))
	return json.Marshal(map[string]any{"text": text + " (" + pl.Kind + ", " + pl.ID + ")"})
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
