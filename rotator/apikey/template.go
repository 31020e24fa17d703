package apikey

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// A template is text with {{name}} placeholders. The names are:
//
//	key, key_id            the key the request is about: the current key for
//	                       create and list, the key being checked for verify,
//	                       revoked for revoke, set for set
//	auth_key, auth_key_id, the key that authenticates the request: the secret
//	auth_username          "key" (or "password") of auth_credential when set,
//	                       else the current key
//	rotation_id            the rotation's idempotency key
//	credential_id          the credential's ID
//	fields.NAME            a non-secret string field of the credential
//
// Every value is escaped for where it lands: path or query escaping in a URL,
// JSON string escaping in a JSON body, form escaping in a form body.

// vars are the values a template may reference.
type vars map[string]string

// escaper escapes one substituted value.
type escaper func(string) string

func rawEscape(s string) string { return s }

// jsonEscape escapes s for the inside of a JSON string.
func jsonEscape(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// render substitutes every {{name}} in tmpl. An unknown name is an error so a
// typo cannot send a literal "{{kye}}" as a credential.
func render(tmpl string, v vars, esc escaper) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(tmpl, "{{")
		if i < 0 {
			b.WriteString(tmpl)
			return b.String(), nil
		}
		j := strings.Index(tmpl[i:], "}}")
		if j < 0 {
			return "", fmt.Errorf("unterminated {{ in template")
		}
		b.WriteString(tmpl[:i])
		name := strings.TrimSpace(tmpl[i+2 : i+j])
		val, ok := v[name]
		if !ok {
			return "", fmt.Errorf("template references unknown name %q", name)
		}
		b.WriteString(esc(val))
		tmpl = tmpl[i+j+2:]
	}
}

// renderURL renders a URL template, path-escaping values before the first "?"
// and query-escaping them after it.
func renderURL(tmpl string, v vars) (*url.URL, error) {
	path, query, hasQuery := strings.Cut(tmpl, "?")
	p, err := render(path, v, url.PathEscape)
	if err != nil {
		return nil, err
	}
	if hasQuery {
		q, err := render(query, v, url.QueryEscape)
		if err != nil {
			return nil, err
		}
		p += "?" + q
	}
	u, err := url.Parse(p)
	if err != nil {
		// url.Parse errors quote the input, which may hold a secret.
		return nil, fmt.Errorf("rendered url does not parse")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url scheme must be http or https")
	}
	return u, nil
}

// checkTemplate reports a template that can never render: unknown names other
// than fields.* (which depend on the credential).
func checkTemplate(tmpl string) error {
	known := vars{"key": "", "key_id": "", "auth_key": "", "auth_key_id": "", "auth_username": "", "rotation_id": "", "credential_id": ""}
	for {
		i := strings.Index(tmpl, "{{")
		if i < 0 {
			return nil
		}
		j := strings.Index(tmpl[i:], "}}")
		if j < 0 {
			return fmt.Errorf("unterminated {{ in template")
		}
		name := strings.TrimSpace(tmpl[i+2 : i+j])
		if _, ok := known[name]; !ok && !strings.HasPrefix(name, "fields.") {
			return fmt.Errorf("template references unknown name %q", name)
		}
		tmpl = tmpl[i+j+2:]
	}
}
