// Package acl evaluates nebula-credential's access control: grants of a
// permission on a credential path prefix. It is pure: no I/O, no clock.
//
// Reach for Allowed (may this token do that to this credential?), Visible (may
// it see that the credential exists?) and ParseGrant (the "perm:prefix" form
// used by the CLI and the API).
//
// Prefixes are segment-aware: "prod/db" covers "prod/db" and "prod/db/orders"
// but not "prod/dbx". A trailing "/" or "/*" is ignored, so "prod/", "prod/*"
// and "prod" are the same grant. The empty prefix and "*" cover everything.
// Admin implies every other permission on its prefix; admin on everything is
// what the store-wide operations (tokens, backup, restore, keys, audit verify)
// require.
//
// Use is the permission to bind a credential to an admin credential (a
// database admin, an API management key, a CA): "use:platform/pg-admin" lets
// a token name platform/pg-admin as the admin_credential of what it writes.
// It reveals nothing: not the admin's secret, not even its metadata.
//
// Notify is the permission to manage webhook subscriptions (package notify)
// whose prefix it covers: "notify:prod" may subscribe to events of prod/...;
// a subscription to every credential needs "notify:*". Like any grant it
// makes the credentials it covers visible, since notifications carry their
// metadata.
package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Permission is one kind of access.
type Permission string

// The permissions.
const (
	Read     Permission = "read"     // see secret values (and metadata)
	Write    Permission = "write"    // put new versions, set policy, soft-delete
	Rotate   Permission = "rotate"   // rotate, extend grace, retry and resolve rotations
	Rollback Permission = "rollback" // roll back to an earlier version
	Delete   Permission = "delete"   // purge for good
	Admin    Permission = "admin"    // everything on the prefix; store-wide operations on ""
	Use      Permission = "use"      // bind other credentials to an admin credential under the prefix
	Notify   Permission = "notify"   // manage webhook subscriptions to events under the prefix
)

// Permissions lists every permission.
func Permissions() []Permission {
	return []Permission{Read, Write, Rotate, Rollback, Delete, Admin, Use, Notify}
}

// ErrInvalid: a grant or permission does not parse.
var ErrInvalid = errors.New("invalid grant")

// ErrDenied: the grants do not allow the operation. The root package's
// ErrPermission is this error, so callers of every layer test one sentinel.
var ErrDenied = errors.New("permission denied")

// ParsePermission checks a permission name.
func ParsePermission(s string) (Permission, error) {
	for _, p := range Permissions() {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: unknown permission %q (want read, write, rotate, rollback, delete, admin, use or notify)", ErrInvalid, s)
}

// Grant is a permission on a credential path prefix.
type Grant struct {
	Permission Permission `json:"permission"`
	Prefix     string     `json:"prefix"`
}

// String is the "perm:prefix" form; "*" stands for everything.
func (g Grant) String() string {
	p := normalise(g.Prefix)
	if p == "" {
		p = "*"
	}
	return string(g.Permission) + ":" + p
}

// ParseGrant reads "perm:prefix" ("read:prod/", "rotate:prod/db", "admin:*").
// A bare permission ("admin") grants it on everything.
func ParseGrant(s string) (Grant, error) {
	perm, prefix, _ := strings.Cut(s, ":")
	p, err := ParsePermission(perm)
	if err != nil {
		return Grant{}, err
	}
	g := Grant{Permission: p, Prefix: normalise(prefix)}
	return g, g.Validate()
}

// Validate checks the permission and that the prefix is made of credential ID
// characters (a-z, 0-9, '.', '_', '-', '/').
func (g Grant) Validate() error {
	if _, err := ParsePermission(string(g.Permission)); err != nil {
		return err
	}
	p := normalise(g.Prefix)
	if len(p) > 256 {
		return fmt.Errorf("%w: prefix longer than 256 bytes", ErrInvalid)
	}
	for _, seg := range strings.Split(p, "/") {
		if p == "" {
			break
		}
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: prefix %q has an empty, \".\" or \"..\" path segment", ErrInvalid, g.Prefix)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				return fmt.Errorf("%w: prefix %q: character %q not allowed (use a-z, 0-9, '.', '_', '-' and '/')", ErrInvalid, g.Prefix, r)
			}
		}
	}
	return nil
}

// normalise drops the spellings of "everything" and of a trailing separator.
func normalise(prefix string) string {
	switch {
	case prefix == "*", prefix == "/", prefix == "/*":
		return ""
	case strings.HasSuffix(prefix, "/*"):
		prefix = strings.TrimSuffix(prefix, "/*")
	}
	return strings.TrimSuffix(prefix, "/")
}

// Covers reports whether prefix covers credential id, segment by segment.
// The empty id stands for the whole store: only the empty prefix covers it.
func Covers(prefix, id string) bool {
	p := normalise(prefix)
	if p == "" {
		return true
	}
	if id == p {
		return true
	}
	return strings.HasPrefix(id, p) && id[len(p)] == '/'
}

// Allowed reports whether grants give perm on credential id ("" for
// store-wide operations). Admin implies every permission on its prefix.
// Grants that do not validate give nothing.
func Allowed(grants []Grant, perm Permission, id string) bool {
	for _, g := range grants {
		if g.Permission != perm && g.Permission != Admin {
			continue
		}
		if g.Validate() != nil {
			continue
		}
		if Covers(g.Prefix, id) {
			return true
		}
	}
	return false
}

// Visible reports whether any grant covers credential id: the token may see
// its metadata (type, state, versions, history, policy, rotations) but not,
// without Read, its secret values. Use alone does not make a credential
// visible.
func Visible(grants []Grant, id string) bool {
	for _, p := range Permissions() {
		if p != Use && Allowed(grants, p, id) {
			return true
		}
	}
	return false
}

// Encode is the JSON stored with a token.
func Encode(grants []Grant) ([]byte, error) {
	for _, g := range grants {
		if err := g.Validate(); err != nil {
			return nil, err
		}
	}
	if grants == nil {
		grants = []Grant{}
	}
	out := make([]Grant, len(grants))
	for i, g := range grants {
		out[i] = Grant{Permission: g.Permission, Prefix: normalise(g.Prefix)}
	}
	return json.Marshal(out)
}

// Decode reads grants stored by Encode. Invalid grants are an error.
func Decode(b []byte) ([]Grant, error) {
	var gs []Grant
	if err := json.Unmarshal(b, &gs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for i, g := range gs {
		if err := g.Validate(); err != nil {
			return nil, err
		}
		gs[i].Prefix = normalise(g.Prefix)
	}
	return gs, nil
}
