package rotation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// Bindings: a credential that names an admin credential (admin_credential,
// auth_credential, acme.account_credential) is bound to it. The rule, applied
// in one place for every rotator that implements rotator.Binder:
//
//   - when the binding is written (put, settings change, restore, import,
//     approve): the writer holds acl.Use on the admin, the admin's scope
//     (rotator.CheckScope) covers the accounts the credential changes, and no
//     other stored credential already manages them (unless the admin sets
//     manage_shared). Who bound it and when is recorded;
//   - before every rotation, scheduled ones included, and at every resolve of
//     the admin during one: the binding was recorded, the token that bound
//     it still exists and still holds Use on the admin, and the admin's
//     current scope still covers the credential.
//
// The engine's resolver is bound to the credential being rotated and refuses
// any credential that one does not name, so no rotator can reach an admin
// around these checks.

// BindingRecord is who bound a credential to one admin credential, and when.
type BindingRecord struct {
	Field string    `json:"field"`
	Admin string    `json:"admin"`
	By    string    `json:"by"`
	At    time.Time `json:"at"`
}

// BindingError refuses a binding. It is acl.ErrDenied (a 403 from the API)
// and a ClassPermission rotator error (a rotation stops, not retried).
type BindingError struct {
	ID    string // the referring credential
	Admin string
	Fix   string // the command or change that fixes it
	Err   error  // a *rotator.Error
}

func (e *BindingError) Error() string {
	return fmt.Sprintf("credential %s may not use admin credential %s: %v", e.ID, e.Admin, e.Err)
}

func (e *BindingError) Unwrap() []error { return []error{acl.ErrDenied, e.Err} }

func refuse(id, admin, fix, format string, args ...any) *BindingError {
	return &BindingError{ID: id, Admin: admin, Fix: fix, Err: &rotator.Error{Class: rotator.ClassPermission, Op: "binding", Err: fmt.Errorf(format, args...)}}
}

func bindingKey(id string) string { return "binding:" + id }

// Bindings returns the recorded bindings of credential id (none if never
// bound).
func Bindings(ctx context.Context, tx store.Tx, id string) ([]BindingRecord, error) {
	b, err := tx.GetMeta(ctx, bindingKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []BindingRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("binding record of %s: %w", id, err)
	}
	return recs, nil
}

// binderOf returns the Binder of credentials of type typ, nil if its rotator
// resolves no other credential.
func (e *Engine) binderOf(typ string) rotator.Binder {
	rot, err := e.reg.Lookup(typ)
	if err != nil {
		return nil
	}
	b, _ := rotator.Unwrap(rot).(rotator.Binder)
	return b
}

// currentState is what the binding rule reads of a credential: its type,
// whether it is deleted, and its current version (fields decoded, secret
// still sealed).
type currentState struct {
	typ     string
	deleted bool
	version *store.Version
	cred    rotator.Credential // no secret
}

// currentFields reads credential id's current state. (Three small
// statements: measured cheaper than the one GetCredentialState, which also
// joins the open rotation and every label.)
func currentFields(ctx context.Context, tx store.Tx, id string) (*currentState, error) {
	c, err := tx.GetCredential(ctx, id)
	if err != nil {
		return nil, err
	}
	labels, err := tx.Labels(ctx, id)
	if err != nil {
		return nil, err
	}
	n, ok := labels["current"]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no current version", store.ErrNotFound, id)
	}
	v, err := tx.GetVersion(ctx, id, n)
	if err != nil {
		return nil, err
	}
	var fields map[string]any
	if err := json.Unmarshal(v.Fields, &fields); err != nil {
		return nil, fmt.Errorf("decode fields of %s version %d: %w", id, n, err)
	}
	return &currentState{typ: c.Type, deleted: c.DeletedAt != nil, version: v,
		cred: rotator.Credential{ID: id, Type: c.Type, Version: n, Fields: fields}}, nil
}

// Bind checks the binding of credential id (of type typ, about to have these
// fields) to every admin credential it names, with the grants of the
// principal in ctx (acl.PrincipalOf; none: the local operator), and records
// who bound it. Call it in the transaction that writes the fields or the
// settings: put, settings change, restore and import all must. A refusal is a
// *BindingError (errors.Is acl.ErrDenied).
func (e *Engine) Bind(ctx context.Context, tx store.Tx, id, typ string, fields map[string]any) error {
	binder := e.binderOf(typ)
	if binder == nil {
		return nil
	}
	cred := rotator.Credential{ID: id, Type: typ, Fields: fields}
	b, err := binder.Binding(cred)
	if err != nil {
		// Fields the rotator cannot read reference nothing it could resolve;
		// the first rotation reports them.
		return e.setBindings(ctx, tx, id, nil)
	}
	p, api := acl.PrincipalOf(ctx)
	by := p.Actor
	if !api {
		by, _ = audit.ActorOf(ctx)
		if by == "" {
			by = "operator"
		}
	}
	var recs []BindingRecord
	for _, ref := range b.Refs {
		if api && !acl.Allowed(p.Grants, acl.Use, ref.ID) {
			who := p.Actor
			if who == "" {
				who = "this request"
			}
			return refuse(id, ref.ID, fmt.Sprintf("nebula-credential token create --grant use:%s", ref.ID),
				"%s has no use grant on %s (%s names it as %s; use is distinct from read and reveals nothing): ask an admin for `use:%s`", who, ref.ID, id, ref.Field, ref.ID)
		}
		if ref.ID == id {
			return refuse(id, ref.ID, "", "a credential cannot be its own %s", ref.Field)
		}
		sc, _, err := e.scopeOf(ctx, tx, id, binder, ref)
		if err != nil {
			return err
		}
		if err := rotator.CheckScope(id, b, ref.ID, sc); err != nil {
			return &BindingError{ID: id, Admin: ref.ID, Fix: "declare the accounts in the admin's manages field (docs/admin-credentials.md)", Err: err}
		}
		if !sc.ManageShared {
			if err := e.checkShared(ctx, tx, id, typ, binder, b, ref.ID); err != nil {
				return err
			}
		}
		recs = append(recs, BindingRecord{Field: ref.Field, Admin: ref.ID, By: by, At: e.now()})
	}
	return e.setBindings(ctx, tx, id, recs)
}

func (e *Engine) setBindings(ctx context.Context, tx store.Tx, id string, recs []BindingRecord) error {
	if recs == nil {
		if _, err := tx.GetMeta(ctx, bindingKey(id)); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		recs = []BindingRecord{}
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	return tx.SetMeta(ctx, bindingKey(id), b)
}

// scopeOf loads admin credential ref.ID and reads its scope. It also
// returns the admin's current state it read.
func (e *Engine) scopeOf(ctx context.Context, tx store.Tx, id string, binder rotator.Binder, ref rotator.Ref) (rotator.Scope, *currentState, error) {
	admin, err := currentFields(ctx, tx, ref.ID)
	if errors.Is(err, store.ErrNotFound) || err == nil && admin.deleted {
		return rotator.Scope{}, nil, refuse(id, ref.ID, "", "admin credential %s (named by %s) does not exist", ref.ID, ref.Field)
	}
	if err != nil {
		return rotator.Scope{}, nil, err
	}
	sc, err := binder.Scope(ref.Field, admin.cred)
	if err != nil {
		return rotator.Scope{}, nil, &BindingError{ID: id, Admin: ref.ID, Fix: "declare the admin's own target and manages (docs/admin-credentials.md)",
			Err: &rotator.Error{Class: rotator.ClassPermission, Op: "binding", Err: err}}
	}
	return sc, admin, nil
}

// checkShared refuses accounts that another stored credential of the same
// type on the same target already manages (the admin itself excluded: its
// own account is the manage_self rule).
func (e *Engine) checkShared(ctx context.Context, tx store.Tx, id, typ string, binder rotator.Binder, b rotator.Binding, admin string) error {
	others, err := tx.ListCredentials(ctx, store.ListOptions{Type: typ})
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.ID == id || o.ID == admin || o.DeletedAt != nil {
			continue
		}
		// One statement per credential (row, labels and current version).
		cs, err := tx.GetCredentialState(ctx, o.ID, "current", 0)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return err
		}
		if cs.Version == nil || !mayName(cs.Version.Fields, b.Accounts) {
			continue
		}
		var fields map[string]any
		if json.Unmarshal(cs.Version.Fields, &fields) != nil {
			continue
		}
		ob, err := binder.Binding(rotator.Credential{ID: o.ID, Type: typ, Fields: fields})
		if err != nil || ob.Target != b.Target {
			continue
		}
		for _, a := range b.Accounts {
			if slices.Contains(ob.Accounts, a) {
				return refuse(id, admin, "", "account %q on %s is already managed by credential %s: two credentials rotating one account undo each other (set manage_shared: true on admin credential %s to allow it)", a, b.Target, o.ID, admin)
			}
		}
	}
	return nil
}

// Recheck applies the binding rule to credential id as it is now: its
// bindings were recorded, the tokens that made them still exist and still
// hold Use on the admins, and the admins' current scopes cover it. only, if
// not "", restricts the check to that admin. It is called before every
// rotation and by the resolver at every resolve.
func (e *Engine) Recheck(ctx context.Context, tx store.Tx, id, only string) error {
	_, _, err := e.recheck(ctx, tx, id, only)
	return err
}

// recheck is Recheck that also returns what it read: credential id's
// current state and, when only is set, that admin's (the state the check
// was made on, so a resolve can hand it out without reading it again).
func (e *Engine) recheck(ctx context.Context, tx store.Tx, id, only string) (self, admin *currentState, _ error) {
	self, err := currentFields(ctx, tx, id)
	if err != nil {
		return nil, nil, err
	}
	admin, err = e.recheckState(ctx, tx, self, only)
	if err != nil {
		return nil, nil, err
	}
	return self, admin, nil
}

// recheckState is recheck of a credential whose current state the caller
// has read in tx.
func (e *Engine) recheckState(ctx context.Context, tx store.Tx, self *currentState, only string) (admin *currentState, _ error) {
	id := self.cred.ID
	binder := e.binderOf(self.typ)
	if binder == nil {
		if only != "" {
			return nil, refuse(id, only, "", "credentials of type %s resolve no other credential", self.typ)
		}
		return nil, nil
	}
	b, err := binder.Binding(self.cred)
	if err != nil {
		if only != "" {
			return nil, err
		}
		return nil, nil // the rotation reports the fields
	}
	if only != "" && !slices.ContainsFunc(b.Refs, func(r rotator.Ref) bool { return r.ID == only }) {
		return nil, refuse(id, only, "", "credential %s does not name %s: a rotation resolves only the credentials its own fields name", id, only)
	}
	recs, err := Bindings(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	var tokens []store.Token
	for _, ref := range b.Refs {
		if only != "" && ref.ID != only {
			continue
		}
		approve := "nebula-credential admin approve " + id
		i := slices.IndexFunc(recs, func(r BindingRecord) bool { return r.Admin == ref.ID })
		if i < 0 {
			return nil, refuse(id, ref.ID, approve, "the binding of %s to admin credential %s was never approved (made before bindings were checked, or restored from an older backup): someone holding use:%s runs `%s`", id, ref.ID, ref.ID, approve)
		}
		rec := recs[i]
		if tokID, ok := strings.CutPrefix(rec.By, "token:"); ok {
			if tokens == nil {
				if tokens, err = tx.ListTokens(ctx); err != nil {
					return nil, err
				}
			}
			j := slices.IndexFunc(tokens, func(t store.Token) bool { return t.ID == tokID })
			if j < 0 || tokens[j].ExpiresAt != nil && !tokens[j].ExpiresAt.After(e.now()) {
				return nil, refuse(id, ref.ID, approve, "token %s, which bound %s to admin credential %s, no longer exists: someone holding use:%s runs `%s`", tokID, id, ref.ID, ref.ID, approve)
			}
			grants, err := acl.Decode(tokens[j].Grants)
			if err != nil || !acl.Allowed(grants, acl.Use, ref.ID) {
				return nil, refuse(id, ref.ID, approve, "token %s, which bound %s to admin credential %s, no longer holds use:%s: someone holding it runs `%s`", tokID, id, ref.ID, ref.ID, approve)
			}
		}
		sc, st, err := e.scopeOf(ctx, tx, id, binder, ref)
		if err != nil {
			return nil, err
		}
		if err := rotator.CheckScope(id, b, ref.ID, sc); err != nil {
			return nil, &BindingError{ID: id, Admin: ref.ID, Fix: "declare the accounts in the admin's manages field (docs/admin-credentials.md)", Err: err}
		}
		if ref.ID == only {
			admin = st
		}
	}
	return admin, nil
}

// Approve records the binding of credential id, as it is now, to the admin
// credentials it names, with the grants of the principal in ctx: the command
// for bindings made before bindings were checked, or whose binder lost its
// grant. It returns the admins approved.
func (e *Engine) Approve(ctx context.Context, id string) ([]BindingRecord, error) {
	var recs []BindingRecord
	err := e.st.Update(ctx, func(tx store.Tx) error {
		c, err := currentFields(ctx, tx, id)
		if err != nil {
			return err
		}
		if c.deleted {
			return fmt.Errorf("%w: credential is deleted", store.ErrNotFound)
		}
		if err := e.Bind(ctx, tx, id, c.typ, c.cred.Fields); err != nil {
			return err
		}
		if recs, err = Bindings(ctx, tx, id); err != nil {
			return err
		}
		admins := make([]string, len(recs))
		for i, r := range recs {
			admins[i] = r.Admin
		}
		return audit.Append(ctx, tx, audit.Entry{At: e.now(), Action: "binding.approve", CredentialID: id, Outcome: "ok", Detail: strings.Join(admins, ", ")})
	})
	if err != nil {
		return nil, fmt.Errorf("approve %s: %w", id, err)
	}
	return recs, nil
}

// refusedBackoff is how far a scheduled rotation refused by the binding rule
// is pushed back: the scheduler does not retry it every tick.
const refusedBackoff = time.Hour

// refused records a rotation the binding rule refused: an audit entry, and
// for a scheduled rotation the next due time pushed back. err not a
// *BindingError: nothing to do.
func (e *Engine) refused(ctx context.Context, id, kind, actor string, err error) {
	var be *BindingError
	if !errors.As(err, &be) {
		return
	}
	now := e.now()
	uerr := e.st.Update(ctx, func(tx store.Tx) error {
		if actor == "scheduler" {
			c, err := tx.GetCredential(ctx, id)
			if err != nil {
				return err
			}
			if c.NextDueAt != nil && !c.NextDueAt.After(now) {
				next := now.Add(refusedBackoff)
				c.NextDueAt = &next
				if err := tx.PutCredential(ctx, c); err != nil {
					return err
				}
			}
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Actor: actor, Action: kind + ".refused", CredentialID: id, Outcome: "denied", Detail: be.Error()})
	})
	if uerr != nil {
		e.log.Error("record refused rotation", "credential", id, "err", uerr)
	}
	e.log.Warn("rotation refused by the binding rule", "credential", id, "admin", be.Admin, "err", be.Err)
}

// bindingFinding is the doctor's finding for a credential the binding rule
// would refuse to rotate, or nil.
func (e *Engine) bindingFinding(ctx context.Context, id string) *Finding {
	var err error
	verr := e.st.View(ctx, func(tx store.Tx) error {
		err = e.Recheck(ctx, tx, id, "")
		return nil
	})
	var be *BindingError
	if verr != nil || !errors.As(err, &be) {
		return nil
	}
	return &Finding{Severity: "error", Title: "rotation refused: not allowed to use admin credential " + be.Admin, Detail: be.Error(), Fix: be.Fix}
}

// RebindCurrent is Bind for the current version of credential id.
func (e *Engine) RebindCurrent(ctx context.Context, tx store.Tx, id string) error {
	c, err := currentFields(ctx, tx, id)
	if err != nil {
		return err
	}
	return e.Bind(ctx, tx, id, c.typ, c.cred.Fields)
}

// Unbind forgets every binding record of credential id: its rotations are
// refused until someone approves them.
func (e *Engine) Unbind(ctx context.Context, tx store.Tx, id string) error {
	return e.setBindings(ctx, tx, id, []BindingRecord{})
}

// mayName reports whether fields (raw JSON) may name one of accounts: an
// account JSON writes as it is that does not occur in the bytes cannot be
// one the fields name, so the credential need not be decoded.
func mayName(fields []byte, accounts []string) bool {
	for _, a := range accounts {
		if bytes.Contains(fields, []byte(a)) {
			return true
		}
		for _, r := range a {
			if r < 0x20 || r > 0x7e || strings.ContainsRune(`"\\<>&`, r) {
				return true // JSON may escape it: decode to be sure
			}
		}
	}
	return false
}
