package apikey

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// lookup evaluates the JSON pointer ptr (RFC 6901) against doc, a value
// produced by encoding/json with UseNumber. The empty pointer is the document.
func lookup(doc any, ptr string) (any, error) {
	if ptr == "" {
		return doc, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, fmt.Errorf("json pointer %q does not start with /", ptr)
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, fmt.Errorf("json pointer %q: no member %q", ptr, tok)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) || (len(tok) > 1 && tok[0] == '0') {
				return nil, fmt.Errorf("json pointer %q: bad array index %q", ptr, tok)
			}
			cur = v[i]
		default:
			return nil, fmt.Errorf("json pointer %q: %q is not inside an object or array", ptr, tok)
		}
	}
	return cur, nil
}

// lookupString evaluates ptr and returns a string or a number as text.
func lookupString(doc any, ptr string) (string, error) {
	v, err := lookup(doc, ptr)
	if err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			return "", fmt.Errorf("json pointer %q: empty string", ptr)
		}
		return v, nil
	case json.Number:
		return v.String(), nil
	default:
		return "", fmt.Errorf("json pointer %q: not a string or number", ptr)
	}
}

// validPointer reports whether ptr is syntactically a JSON pointer.
func validPointer(ptr string) bool { return ptr == "" || strings.HasPrefix(ptr, "/") }

// decodeJSON parses a response body keeping numbers exact (key IDs can be
// large integers).
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
