package server

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

// writeCredential writes c.Wire(reveal) as writeJSON does. The usual
// credential (plain ASCII strings, flat fields, UTC times, no warnings) is
// encoded by appendCredential without reflection and without building the
// Wire's secret map; anything else goes through writeJSON, so the bytes are
// those of encoding/json either way (TestAppendCredentialMatchesEncodingJSON,
// FuzzAppendCredential).
func writeCredential(w http.ResponseWriter, status int, c *credential.Credential, reveal bool) {
	bp := credBufs.Get().(*[]byte)
	b, ok := appendCredential((*bp)[:0], c, reveal)
	if ok {
		setJSONHeaders(w.Header())
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
	clear(b) // it may hold secret values
	*bp = b[:0]
	credBufs.Put(bp)
	if !ok {
		writeJSON(w, status, c.Wire(reveal))
	}
}

var credBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// appendCredential appends the JSON of c.Wire(reveal), with the newline of
// json.Encoder, and reports true; or reports false when c holds anything
// its fast path leaves to encoding/json (a string needing an escape or
// beyond ASCII, a field value other than a string, a whole number, a
// boolean or null, a time not in UTC, warnings).
func appendCredential(b []byte, c *credential.Credential, reveal bool) ([]byte, bool) {
	ok := true
	str := func(s string) {
		if ok && !plainASCII(s) {
			ok = false
		}
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
	}
	tm := func(t time.Time) {
		if t.Location() != time.UTC || t.Year() < 0 || t.Year() > 9999 {
			ok = false
			return
		}
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if len(c.Warnings) > 0 {
		return b, false
	}
	b = append(b, `{"id":`...)
	str(c.ID)
	b = append(b, `,"type":`...)
	str(string(c.Type))
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(c.Version), 10)
	b = append(b, `,"labels":[`...)
	for i, l := range c.Labels {
		if i > 0 {
			b = append(b, ',')
		}
		str(l)
	}
	b = append(b, `],"state":`...)
	str(string(c.State))
	b = append(b, `,"fields":{`...)
	var keys [8]string // the usual credential has few fields: no allocation
	for i, k := range sortedKeys(c.Fields, keys[:0]) {
		if i > 0 {
			b = append(b, ',')
		}
		str(k)
		b = append(b, ':')
		switch v := c.Fields[k].(type) {
		case string:
			str(v)
		case bool:
			b = strconv.AppendBool(b, v)
		case nil:
			b = append(b, "null"...)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case float64:
			// encoding/json writes 'f' format from 1e-6 to 1e21; whole
			// numbers in that range are the common case.
			if v != math.Trunc(v) || math.Abs(v) >= 1e21 {
				return b, false
			}
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		default:
			return b, false
		}
	}
	b = append(b, `},"secret":{`...)
	for i, k := range sortedKeys(c.Secret, keys[:0]) {
		if i > 0 {
			b = append(b, ',')
		}
		str(k)
		b = append(b, ':')
		if reveal {
			str(c.Secret[k].Reveal())
		} else {
			str(secret.Redacted)
		}
	}
	b = append(b, `},"revealed":`...)
	b = strconv.AppendBool(b, reveal)
	b = append(b, `,"created_at":`...)
	tm(c.CreatedAt)
	for _, t := range []struct {
		name string
		at   *time.Time
	}{{`,"expires_at":`, c.ExpiresAt}, {`,"grace_ends_at":`, c.GraceEndsAt}, {`,"next_rotation_at":`, c.NextDueAt}} {
		if t.at != nil {
			b = append(b, t.name...)
			tm(*t.at)
		}
	}
	b = append(b, "}\n"...)
	return b, ok
}

// plainASCII reports whether encoding/json writes s as it is between quotes:
// printable ASCII without '"' or '\' (with HTML escaping off).
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// sortedKeys returns the keys of m in encoding/json's order, appended to
// keys (which it reuses when it has room).
func sortedKeys[V any](m map[string]V, keys []string) []string {
	if len(m) == 0 {
		return nil
	}
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
