// Package audit keeps nebula-credential's tamper-evident audit log.
//
// Every entry is appended inside the same store transaction as the operation it
// records, so a failed audit write fails the operation (fail closed). Entries are
// hash-chained: each record's hash covers its payload and the previous hash, so
// Verify detects an edited, removed, reordered or truncated entry. Entries never
// hold secret values: Entry has no field that could carry one.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Entry is one audited action.
type Entry struct {
	At           time.Time `json:"at"`
	Actor        string    `json:"actor"`
	Action       string    `json:"action"`
	CredentialID string    `json:"credential_id,omitempty"`
	FromVersion  int       `json:"from_version,omitempty"`
	ToVersion    int       `json:"to_version,omitempty"`
	Outcome      string    `json:"outcome"`
	RequestID    string    `json:"request_id,omitempty"`
	Detail       string    `json:"detail,omitempty"`
}

type ctxKey struct{}

type who struct{ actor, request string }

// WithActor returns a context whose audited operations name actor and request ID.
func WithActor(ctx context.Context, actor, requestID string) context.Context {
	return context.WithValue(ctx, ctxKey{}, who{actor, requestID})
}

// ActorOf returns the actor and request ID carried by ctx ("local", "" by default).
func ActorOf(ctx context.Context) (actor, requestID string) {
	if w, ok := ctx.Value(ctxKey{}).(who); ok {
		return w.actor, w.request
	}
	return "local", ""
}

// queuer is implemented by the transactions of stores that chain audit
// entries after commit, from a single appender (store/postgres): the entry
// is written in the transaction, so the operation still fails closed, but
// the transaction never reads the chain's head, which every concurrent
// writer would otherwise conflict on. QueueAudit reports false when the
// store chains in the transaction instead.
type queuer interface {
	QueueAudit(ctx context.Context, at time.Time, payload []byte) (bool, error)
}

// sealer is implemented by stores with queued entries: SealAudit chains every
// entry committed so far, so a reader that calls it first sees them all.
type sealer interface {
	SealAudit(ctx context.Context) error
}

// headCacher is implemented by the transactions of stores that keep the
// chain's last entry in memory (store/sqlite, whose one writer connection
// per process appends most entries): CachedAudit returns it without reading
// the store, and AppendAuditsAfter appends a chain of records after it only
// if it still is the last entry, checked in the same statement, so an entry
// another process appended meanwhile is never chained over. It is LastAudit
// and an AppendAudit per record in one statement (per 16 records).
type headCacher interface {
	CachedAudit() (seq int64, hash []byte, ok bool)
	AppendAuditsAfter(ctx context.Context, recs []*store.AuditRecord, prevSeq int64) (bool, error)
}

// Seal chains the entries the store has queued, if it queues any. Verify and
// List call it first.
func Seal(ctx context.Context, st store.Store) error {
	if s, ok := st.(sealer); ok {
		if err := s.SealAudit(ctx); err != nil {
			return fmt.Errorf("audit: seal: %w", err)
		}
	}
	return nil
}

// encode fills in the defaults of e and returns its payload.
func encode(e Entry, actor, request string) (Entry, []byte, error) {
	if e.Actor == "" {
		e.Actor = actor
	}
	if e.RequestID == "" {
		e.RequestID = request
	}
	e.At = e.At.UTC()
	if payload, ok := appendEntry(make([]byte, 0, 256), &e); ok {
		return e, payload, nil
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return e, nil, fmt.Errorf("audit: %w", err)
	}
	return e, payload, nil
}

// appendEntry appends json.Marshal(e) for the usual entry, whose strings
// need no escape (printable ASCII without '"', '\\', '<', '>', '&') and
// whose time is UTC in years 0 to 9999, and reports true; otherwise it
// reports false and the caller uses encoding/json. The payload's bytes are
// those of json.Marshal either way (TestAppendEntryMatchesEncodingJSON,
// FuzzAppendEntry).
func appendEntry(b []byte, e *Entry) ([]byte, bool) {
	if e.At.Location() != time.UTC || e.At.Year() < 0 || e.At.Year() > 9999 {
		return b, false
	}
	ok := true
	str := func(name, s string, omitEmpty bool) {
		if omitEmpty && s == "" {
			return
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				ok = false
				return
			}
		}
		b = append(b, name...)
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
	}
	num := func(name string, n int) {
		if n != 0 {
			b = append(b, name...)
			b = strconv.AppendInt(b, int64(n), 10)
		}
	}
	b = append(b, `{"at":"`...)
	b = e.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	str(`,"actor":`, e.Actor, false)
	str(`,"action":`, e.Action, false)
	str(`,"credential_id":`, e.CredentialID, true)
	num(`,"from_version":`, e.FromVersion)
	num(`,"to_version":`, e.ToVersion)
	str(`,"outcome":`, e.Outcome, false)
	str(`,"request_id":`, e.RequestID, true)
	str(`,"detail":`, e.Detail, true)
	b = append(b, '}')
	return b, ok
}

// Append adds entries to the log inside tx, in order. Actor and request ID
// default to those of ctx.
func Append(ctx context.Context, tx store.Tx, entries ...Entry) error {
	actor, request := ActorOf(ctx)
	if q, ok := tx.(queuer); ok && len(entries) > 0 {
		for i, e := range entries {
			e, payload, err := encode(e, actor, request)
			if err != nil {
				return err
			}
			queued, err := q.QueueAudit(ctx, e.At, payload)
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			if !queued {
				if i > 0 {
					return errors.New("audit: the store queued some entries of a batch and not others")
				}
				break
			}
			if i == len(entries)-1 {
				return nil
			}
		}
	}
	if len(entries) == 0 {
		return nil
	}
	recs := make([]store.AuditRecord, len(entries))
	for i, e := range entries {
		e, payload, err := encode(e, actor, request)
		if err != nil {
			return err
		}
		recs[i] = store.AuditRecord{At: e.At, Payload: payload}
	}
	if hc, ok := tx.(headCacher); ok {
		if s, h, ok := hc.CachedAudit(); ok {
			chain(recs, s, h)
			ptrs := make([]*store.AuditRecord, len(recs))
			for i := range recs {
				ptrs[i] = &recs[i]
			}
			appended, err := hc.AppendAuditsAfter(ctx, ptrs, s)
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			if appended {
				return nil
			}
		}
	}
	var prev []byte
	var seq int64
	last, err := tx.LastAudit(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("audit: %w", err)
	default:
		prev, seq = last.Hash, last.Seq
	}
	chain(recs, seq, prev)
	for i := range recs {
		rec := &recs[i]
		if err := tx.AppendAudit(ctx, rec); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if rec.Seq != 0 && rec.Seq != seq+1 {
			return fmt.Errorf("audit: store assigned seq %d, want %d", rec.Seq, seq+1)
		}
		seq++
	}
	return nil
}

// chain sets the links and hashes of recs, whose payloads are set, to follow
// the entry seq with hash prev.
func chain(recs []store.AuditRecord, seq int64, prev []byte) {
	for i := range recs {
		r := &recs[i]
		r.PrevHash = prev
		r.Hash = Hash(seq+int64(i)+1, prev, r.Payload)
		prev = r.Hash
	}
}

// Hash is the chain hash of one record: SHA-256(seq || prev hash || payload).
func Hash(seq int64, prev, payload []byte) []byte {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(seq))
	h.Write(b[:])
	h.Write(prev)
	h.Write(payload)
	return h.Sum(nil)
}

// Problem describes where the chain breaks.
type Problem struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

func (p *Problem) Error() string { return fmt.Sprintf("audit entry %d: %s", p.Seq, p.Reason) }

// Verify walks the whole log and returns the number of entries checked, or a
// *Problem naming the first entry where the chain breaks.
func Verify(ctx context.Context, st store.Store, anchor []byte) (int64, error) {
	var (
		n        int64
		prev     []byte
		expected int64 = 1
	)
	if err := Seal(ctx, st); err != nil {
		return 0, err
	}
	for {
		var page []store.AuditRecord
		if err := st.View(ctx, func(tx store.Tx) error {
			var err error
			page, err = tx.ListAudit(ctx, expected-1, 1000)
			return err
		}); err != nil {
			return n, err
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			switch {
			case r.Seq != expected:
				return n, &Problem{Seq: expected, Reason: fmt.Sprintf("missing (next present entry is %d): entries were removed or reordered", r.Seq)}
			case !bytes.Equal(r.PrevHash, prev):
				return n, &Problem{Seq: r.Seq, Reason: "previous-hash link does not match: an earlier entry was removed, edited or reordered"}
			case !bytes.Equal(r.Hash, Hash(r.Seq, r.PrevHash, r.Payload)):
				return n, &Problem{Seq: r.Seq, Reason: "hash does not match its content: the entry was edited"}
			}
			prev = r.Hash
			expected++
			n++
		}
	}
	if anchor != nil && !bytes.Equal(prev, anchor) {
		return n, &Problem{Seq: expected - 1, Reason: "last hash differs from the recorded anchor: entries were truncated from the end"}
	}
	return n, nil
}

// List returns entries after seq, decoded.
func List(ctx context.Context, st store.Store, afterSeq int64, limit int) ([]Record, error) {
	if err := Seal(ctx, st); err != nil {
		return nil, err
	}
	var page []store.AuditRecord
	if err := st.View(ctx, func(tx store.Tx) error {
		var err error
		page, err = tx.ListAudit(ctx, afterSeq, limit)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(page))
	for _, r := range page {
		var e Entry
		if err := json.Unmarshal(r.Payload, &e); err != nil {
			return nil, fmt.Errorf("audit entry %d: %w", r.Seq, err)
		}
		out = append(out, Record{Seq: r.Seq, Entry: e, Hash: fmt.Sprintf("%x", r.Hash)})
	}
	return out, nil
}

// Record is a decoded log entry.
type Record struct {
	Seq int64 `json:"seq"`
	Entry
	Hash string `json:"hash"`
}
