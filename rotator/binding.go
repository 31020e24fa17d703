package rotator

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// An admin credential is a credential another credential resolves to change
// an account's secret: a database admin (admin_credential), an API management
// key (auth_credential), a CA (admin_credential) or an ACME account
// (account_credential). Whoever can bind a credential to an admin can change
// the secrets the admin can change, so an admin declares what it may manage
// (Scope) and a rotator that resolves admins reports what each credential
// asks of them (Binding). CheckScope is the one rule, applied when a binding
// is written and again before every rotation.

// The fields every admin credential may carry to declare its scope.
const (
	// FieldManages lists the accounts the admin may manage: exact names or
	// patterns with '*' and '?' (path.Match syntax: "app_*"). None by default.
	FieldManages = "manages"
	// FieldManageSelf (bool) lets the admin manage its own account through
	// another credential. Off by default: an admin's own rotation is a
	// rotation of the admin credential.
	FieldManageSelf = "manage_self"
	// FieldManageShared (bool) lets the admin manage an account another
	// stored credential already manages. Off by default.
	FieldManageShared = "manage_shared"
)

// Ref is one reference from a credential to another credential it resolves.
type Ref struct {
	Field string // the field naming it ("admin_credential")
	ID    string // the referenced credential
}

// Binding is what a credential asks of the admin credentials it references.
type Binding struct {
	Refs []Ref
	// Target is where a rotation of the credential changes accounts, in the
	// form the admin's Scope.Target uses ("host:port", a URL): the two must be
	// equal.
	Target string
	// Accounts are the accounts a rotation of the credential changes (the
	// login and the strategy_users of a database credential, the names of a
	// certificate).
	Accounts []string
}

// Scope is what an admin credential declares it may manage.
type Scope struct {
	// Target is the system the admin logs in to, named on the admin itself
	// and never taken from a referring credential.
	Target string
	// Own are the admin's own accounts (its login).
	Own []string
	// Manages are names or path.Match patterns.
	Manages []string
	// ManageSelf allows Own to be managed through another credential.
	ManageSelf bool
	// ManageShared allows accounts that another stored credential manages.
	ManageShared bool
}

// Binder is implemented by rotators that resolve other credentials. The
// engine refuses to resolve a credential for one that does not report it.
type Binder interface {
	// Binding reports the credentials c references and the accounts a
	// rotation of c changes. A credential referencing nothing returns a
	// Binding without Refs.
	Binding(c Credential) (Binding, error)
	// Scope reads the scope admin declares, for a reference of field. An
	// admin that does not name its own target is a ClassConfig error.
	Scope(field string, admin Credential) (Scope, error)
}

// ScopeFields reads the generic scope fields of an admin (manages,
// manage_self, manage_shared); the rotator adds Target and Own. manages may
// be a JSON array of strings or one comma-separated string.
func ScopeFields(admin Credential) (Scope, error) {
	var s Scope
	switch v := admin.Fields[FieldManages].(type) {
	case nil:
	case string:
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				s.Manages = append(s.Manages, p)
			}
		}
	case []any:
		for _, x := range v {
			p, ok := x.(string)
			if !ok || strings.TrimSpace(p) == "" {
				return Scope{}, Errorf(ClassConfig, "admin scope", "admin credential %s: %s must list account names or patterns (strings)", admin.ID, FieldManages)
			}
			s.Manages = append(s.Manages, strings.TrimSpace(p))
		}
	case []string:
		s.Manages = slices.Clone(v)
	default:
		return Scope{}, Errorf(ClassConfig, "admin scope", "admin credential %s: %s must be a list of account names or patterns", admin.ID, FieldManages)
	}
	for _, p := range s.Manages {
		if _, err := path.Match(p, ""); err != nil {
			return Scope{}, Errorf(ClassConfig, "admin scope", "admin credential %s: %s pattern %q is malformed", admin.ID, FieldManages, p)
		}
	}
	var err error
	if s.ManageSelf, err = boolField(admin, FieldManageSelf); err != nil {
		return Scope{}, err
	}
	if s.ManageShared, err = boolField(admin, FieldManageShared); err != nil {
		return Scope{}, err
	}
	return s, nil
}

func boolField(c Credential, name string) (bool, error) {
	switch v := c.Fields[name].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		switch strings.ToLower(v) {
		case "true", "yes", "1":
			return true, nil
		case "false", "no", "0", "":
			return false, nil
		}
	case json.Number:
		return v.String() == "1", nil
	}
	return false, Errorf(ClassConfig, "admin scope", "admin credential %s: %s must be true or false", c.ID, name)
}

// Covers reports whether the scope's manages list covers account.
func (s Scope) Covers(account string) bool {
	for _, p := range s.Manages {
		if p == account {
			return true
		}
		if ok, _ := path.Match(p, account); ok {
			return true
		}
	}
	return false
}

// CheckScope applies the binding rule: credential id (with binding b) may use
// admin adminID (with scope s) only if both name the same target, and every
// account b changes is covered by the admin's manages list and, if it is the
// admin's own account, the admin allows manage_self. The error is a
// ClassPermission *Error saying what to change.
func CheckScope(id string, b Binding, adminID string, s Scope) error {
	const op = "admin scope"
	if s.Target == "" {
		return &Error{Class: ClassPermission, Op: op, Privilege: "admin target",
			Err: fmt.Errorf("admin credential %s names no target of its own: set its host (and port) on the admin itself", adminID)}
	}
	if b.Target != s.Target {
		return &Error{Class: ClassPermission, Op: op, Privilege: "admin target",
			Err: fmt.Errorf("credential %s targets %s but admin credential %s manages accounts on %s only", id, b.Target, adminID, s.Target)}
	}
	if len(b.Accounts) == 0 {
		return &Error{Class: ClassPermission, Op: op, Err: fmt.Errorf("credential %s names no account for admin credential %s to manage", id, adminID)}
	}
	for _, a := range b.Accounts {
		if slices.Contains(s.Own, a) {
			if !s.ManageSelf {
				return &Error{Class: ClassPermission, Op: op, Privilege: FieldManageSelf,
					Err: fmt.Errorf("account %q is admin credential %s's own login: rotate the admin itself, or set %s: true on the admin", a, adminID, FieldManageSelf)}
			}
			continue
		}
		if !s.Covers(a) {
			m := "none"
			if len(s.Manages) > 0 {
				m = strings.Join(s.Manages, ", ")
			}
			return &Error{Class: ClassPermission, Op: op, Privilege: FieldManages,
				Err: fmt.Errorf("admin credential %s does not manage account %q of credential %s (its %s: %s): store the admin again with the account or a pattern in its fields (\"%s\":[%q], see docs/admin-credentials.md)", adminID, a, id, FieldManages, m, FieldManages, a)}
		}
	}
	return nil
}
