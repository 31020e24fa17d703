// Package jsonerr explains encoding/json decoding errors to users without
// quoting their input, which may hold secrets: the CLI and the API server
// both describe malformed JSON with it.
package jsonerr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Describe explains err, returned by decoding raw. notObject is the message
// for a document of the wrong kind (an array where an object belongs), with
// %s standing for that kind ("array", "string", ...). The text never holds a
// value from raw: a wrong literal is named by its kind only, and an unknown
// field by its name only when the name looks like one (letters, digits, _
// and -, at most 40), since a key may be a secret pasted in the wrong place.
func Describe(err error, raw []byte, notObject string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line := 1 + bytes.Count(raw[:min(int(se.Offset), len(raw))], []byte("\n"))
		return fmt.Sprintf("invalid JSON at line %d (byte %d)", line, se.Offset)
	case errors.As(err, &te):
		// te.Value is "number 123" for numbers: keep only the kind, the
		// literal may be a secret.
		kind, _, _ := strings.Cut(te.Value, " ")
		if te.Field != "" {
			return fmt.Sprintf("field %s must be %s, not a JSON %s", Name(te.Field), kindOf(te.Type.Kind().String()), kind)
		}
		return fmt.Sprintf(notObject, kind)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if s, err := unquote(name); err == nil {
			return "unknown field " + Name(s)
		}
		return "unknown field"
	}
	// Errors from UnmarshalJSON methods (durations, times) describe the
	// expected form; they may quote the offending value, which is not secret
	// in those fields, but keep the message bounded.
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return "invalid value: " + msg
}

var plainName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,40}$`)

// Name quotes a JSON key (or a dotted path of keys) when it looks like a
// field name, and says "(name not shown)" otherwise.
func Name(s string) string {
	if plainName.MatchString(s) {
		return fmt.Sprintf("%q", s)
	}
	return "(name not shown)"
}

func unquote(s string) (string, error) {
	var out string
	err := json.Unmarshal([]byte(s), &out)
	return out, err
}

func kindOf(k string) string {
	switch k {
	case "map", "struct":
		return "an object"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "bool":
		return "true or false"
	case "int", "int64", "float64":
		return "a number"
	}
	return k
}
