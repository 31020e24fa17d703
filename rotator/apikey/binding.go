package apikey

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// FieldTarget is the field of an auth_credential naming the service it may
// authenticate to ("https://api.example.com"): every request URL of a
// credential using it must have that scheme, host and port.
const FieldTarget = "target"

// Binding reports the auth_credential c names, the service its requests go
// to and the account a rotation changes: for an API key, the credential's own
// ID (so an auth_credential's manages list holds credential IDs or patterns
// such as "payments/*") (rotator.Binder).
func (r *Rotator) Binding(c rotator.Credential) (rotator.Binding, error) {
	s, err := specOf(c)
	if err != nil {
		return rotator.Binding{}, rotator.Wrap(rotator.ClassConfig, "binding", err)
	}
	b := rotator.Binding{Accounts: []string{c.ID}}
	if s.AuthCredential == "" {
		return b, nil
	}
	b.Refs = []rotator.Ref{{Field: "auth_credential", ID: s.AuthCredential}}
	for _, req := range []*Request{s.Create, s.Set, s.Verify, s.Revoke} {
		if req == nil {
			continue
		}
		o, err := origin(req.URL)
		if err != nil {
			return rotator.Binding{}, rotator.Errorf(rotator.ClassConfig, "binding", "credential %s: %v", c.ID, err)
		}
		if b.Target != "" && b.Target != o {
			return rotator.Binding{}, rotator.Errorf(rotator.ClassConfig, "binding", "credential %s: with auth_credential set, every request must go to one service (%s and %s differ)", c.ID, b.Target, o)
		}
		b.Target = o
	}
	if s.List != nil {
		if o, err := origin(s.List.URL); err != nil || o != b.Target {
			return rotator.Binding{}, rotator.Errorf(rotator.ClassConfig, "binding", "credential %s: with auth_credential set, list must go to %s too", c.ID, b.Target)
		}
	}
	return b, nil
}

// Scope reads the scope an auth_credential declares: its target field
// (required), its own ID, and the generic scope fields (rotator.Binder).
func (r *Rotator) Scope(field string, admin rotator.Credential) (rotator.Scope, error) {
	t := admin.String(FieldTarget)
	if t == "" {
		return rotator.Scope{}, rotator.Errorf(rotator.ClassConfig, "admin scope", "auth credential %s: field %s is required (the service it may authenticate to, e.g. https://api.example.com)", admin.ID, FieldTarget)
	}
	o, err := origin(t)
	if err != nil {
		return rotator.Scope{}, rotator.Errorf(rotator.ClassConfig, "admin scope", "auth credential %s: %s: %v", admin.ID, FieldTarget, err)
	}
	sc, err := rotator.ScopeFields(admin)
	if err != nil {
		return rotator.Scope{}, err
	}
	sc.Target, sc.Own = o, []string{admin.ID}
	return sc, nil
}

// origin is scheme://host:port of a URL template whose scheme and host are
// literal.
func origin(tmpl string) (string, error) {
	head := tmpl
	if i := strings.Index(head, "{{"); i >= 0 {
		head = head[:i]
	}
	u, err := url.Parse(head)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("url must start with a literal http(s)://host")
	}
	if len(head) < len(tmpl) && u.Path == "" && u.RawQuery == "" {
		// The template continues the host ("https://{{fields.host}}/..." or
		// "https://api.example.{{tld}}").
		return "", fmt.Errorf("url must start with a literal http(s)://host")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + host + ":" + port, nil
}
