// Package secret holds Value, the type every secret in nebula-credential travels in.
//
// A Value prints as [REDACTED] through every formatting, marshalling and logging path.
// The plaintext comes out only through Value.Reveal, so every place that handles
// plaintext can be found with `grep -rn '\.Reveal()'`.
package secret

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints as.
const Redacted = "[REDACTED]"

// Value is an immutable secret string. The zero Value is empty.
type Value struct {
	// p is a pointer so that copies share one backing array and a Value
	// compared with == compares identity, not content.
	p *string
}

// New returns a Value holding s.
func New(s string) Value { return Value{p: &s} }

// Reveal returns the plaintext. It is the only way to read it.
func (v Value) Reveal() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

// IsZero reports whether v is empty.
func (v Value) IsZero() bool { return v.p == nil || *v.p == "" }

// Len is the length of the plaintext in bytes.
func (v Value) Len() int { return len(v.Reveal()) }

// Equal compares two values in constant time (for equal lengths).
func (v Value) Equal(o Value) bool {
	return subtle.ConstantTimeCompare([]byte(v.Reveal()), []byte(o.Reveal())) == 1
}

// String implements fmt.Stringer.
func (Value) String() string { return Redacted }

// GoString implements fmt.GoStringer.
func (Value) GoString() string { return Redacted }

// Format implements fmt.Formatter so every verb (%v %+v %#v %s %q %x %d ...) redacts.
func (Value) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", Redacted)
		return
	}
	fmt.Fprint(f, Redacted)
}

// MarshalJSON implements json.Marshaler.
func (Value) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue implements slog.LogValuer.
func (Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Map is a set of named secret fields.
type Map map[string]Value

// Reveal returns the plaintext of every field, for encoding into a sealed blob.
func (m Map) Reveal() map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.Reveal()
	}
	return out
}

// FromStrings wraps every value of m.
func FromStrings(m map[string]string) Map {
	out := make(Map, len(m))
	for k, v := range m {
		out[k] = New(v)
	}
	return out
}

// Equal reports whether both maps hold the same fields with equal values.
func (m Map) Equal(o Map) bool {
	if len(m) != len(o) {
		return false
	}
	eq := true
	for k, v := range m {
		w, ok := o[k]
		eq = ok && v.Equal(w) && eq
	}
	return eq
}
