package rotation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Event kinds.
const (
	EventStarted        = "rotation_started"
	EventCurrentChanged = "current_changed"
	EventRolledBack     = "rolled_back"
	EventFailed         = "rotation_failed"
	EventRetired        = "retired"
	EventGraceWarning   = "grace_warning"
	EventNeedsAttention = "needs_attention"
)

// Event tells subscribers what happened to a credential. Never secret.
type Event struct {
	Kind         string    `json:"kind"`
	CredentialID string    `json:"credential_id"`
	Version      int       `json:"version,omitempty"`
	RotationID   int64     `json:"rotation_id,omitempty"`
	Detail       string    `json:"detail,omitempty"`
	At           time.Time `json:"at"`
}

// Subscribe calls fn for every event of this engine until cancel is called.
// fn must not block.
func (e *Engine) Subscribe(fn func(Event)) (cancel func()) {
	e.mu.Lock()
	id := e.nextSub
	e.nextSub++
	e.subs[id] = fn
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		delete(e.subs, id)
		e.mu.Unlock()
	}
}

// Notify delivers an event to in-process subscribers.
func (e *Engine) Notify(ev Event) { e.emit(ev) }

func (e *Engine) emit(ev Event) {
	if ev.At.IsZero() {
		ev.At = e.now()
	}
	e.mu.Lock()
	fns := make([]func(Event), 0, len(e.subs))
	for _, f := range e.subs {
		fns = append(fns, f)
	}
	e.mu.Unlock()
	for _, f := range fns {
		f(ev)
	}
}

// AppendEvent stores an event for the watch stream inside tx (durable, resumable).
func AppendEvent(ctx context.Context, tx store.Tx, at time.Time, kind, id string, version int, detail map[string]any) error {
	var b []byte
	if detail != nil {
		b, _ = json.Marshal(detail)
	}
	return tx.AppendEvent(ctx, &store.Event{At: at, Kind: kind, CredentialID: id, Version: version, Detail: b})
}
