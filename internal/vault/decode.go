package vault

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/nebula-credential/nebula-credential/secret"
)

// Seal writes a version's fields and secret with json.Marshal, which for the
// flat objects most credentials have gives {"k":"v",...} without spaces. The
// decoders below read exactly that shape without encoding/json's reflection
// (it was a quarter of Manager.Get); anything else — whitespace, an escape,
// a nested value, invalid UTF-8 or invalid JSON — makes them report !ok, and
// the caller decodes with encoding/json as before. When they do report ok,
// the result is what json.Unmarshal would give (FuzzFlatDecoders).

// decodeSecret decodes a flat JSON object of strings into a secret.Map.
func decodeSecret(b []byte) (secret.Map, bool) {
	m := secret.Map{}
	ok := flatObject(b, func(k, v span, kind byte) bool {
		if kind != '"' {
			return false
		}
		m[string(b[k.i:k.j])] = secret.New(string(b[v.i:v.j]))
		return true
	})
	return m, ok
}

// decodeFields decodes a flat JSON object of strings, numbers, booleans and
// nulls into a map as json.Unmarshal does (numbers as float64). Its keys and
// strings are parts of one string copied from b: one allocation for all.
func decodeFields(b []byte) (map[string]any, bool) {
	m := map[string]any{}
	s := string(b)
	ok := flatObject(b, func(k, v span, kind byte) bool {
		key := s[k.i:k.j]
		switch kind {
		case '"':
			m[key] = s[v.i:v.j]
		case 't':
			m[key] = true
		case 'f':
			m[key] = false
		case 'n':
			m[key] = nil
		case '0':
			f, err := strconv.ParseFloat(s[v.i:v.j], 64)
			if err != nil {
				return false // out of range: json.Unmarshal fails, let it say so
			}
			m[key] = f
		default:
			return false
		}
		return true
	})
	return m, ok
}

// span is b[i:j].
type span struct{ i, j int }

// flatObject walks {"k":v,...} with no whitespace and no escapes, calling
// put for each member with where its key and its value are in b (a string
// without its quotes) and the value's kind: '"' string, '0' number, 't',
// 'f', 'n'. It reports false at the first byte outside that shape or when
// put does.
func flatObject(b []byte, put func(k, v span, kind byte) bool) bool {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	i := 1
	if i == len(b)-1 {
		return true // {}
	}
	for {
		n := plainString(b, i)
		if n < 0 || n >= len(b) || b[n] != ':' {
			return false
		}
		key := span{i + 1, n - 1}
		i = n + 1
		var (
			val  span
			kind byte
		)
		switch c := b[i]; {
		case c == '"':
			n := plainString(b, i)
			if n < 0 {
				return false
			}
			val, kind, i = span{i + 1, n - 1}, '"', n
		case c == '-' || (c >= '0' && c <= '9'):
			n := number(b, i)
			if n < 0 {
				return false
			}
			val, kind, i = span{i, n}, '0', n
		case hasWord(b, i, "true"):
			kind, i = 't', i+4
		case hasWord(b, i, "false"):
			kind, i = 'f', i+5
		case hasWord(b, i, "null"):
			kind, i = 'n', i+4
		default:
			return false
		}
		if !put(key, val, kind) {
			return false
		}
		switch {
		case i == len(b)-1:
			return true
		case b[i] == ',':
			i++
		default:
			return false
		}
	}
}

// plainString returns the index after the closing quote of the string that
// starts with the quote at b[i], or -1 if it has an escape, a control
// character or invalid UTF-8 (json.Unmarshal would unescape, refuse or
// replace those).
func plainString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	start := i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return -1
			}
			return j + 1
		case c == '\\' || c < 0x20:
			return -1
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return -1
}

// number returns the index after the JSON number that starts at b[i], or -1
// if it is not one: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

func hasWord(b []byte, i int, w string) bool {
	return len(b)-i >= len(w) && string(b[i:i+len(w)]) == w
}

// unmarshalSecret is decodeSecret with encoding/json as the fallback.
func unmarshalSecret(b []byte) (secret.Map, error) {
	if m, ok := decodeSecret(b); ok {
		return m, nil
	}
	var sec map[string]string
	if err := json.Unmarshal(b, &sec); err != nil {
		return nil, err
	}
	return secret.FromStrings(sec), nil
}

// unmarshalFields is decodeFields with encoding/json as the fallback; a nil
// result (JSON null) is left to the caller.
func unmarshalFields(b []byte) (map[string]any, error) {
	if m, ok := decodeFields(b); ok {
		return m, nil
	}
	var f map[string]any
	err := json.Unmarshal(b, &f)
	return f, err
}
