package x509

import (
	"slices"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// localCA is the target of a CA admin_credential: signing happens in this
// process, so there is no server to name; the scope is the names.
const localCA = "local CA"

// Binding reports the admin_credential (a CA) or acme.account_credential c
// names and the accounts a rotation changes: the certificate's DNS names and
// IP addresses. An ACME account's target is the directory URL
// (rotator.Binder).
func (r *Rotator) Binding(c rotator.Credential) (rotator.Binding, error) {
	f, err := fieldsOf(c)
	if err != nil {
		return rotator.Binding{}, err
	}
	b := rotator.Binding{Accounts: f.names()}
	for _, ip := range f.IPAddresses {
		if !slices.Contains(b.Accounts, ip) {
			b.Accounts = append(b.Accounts, ip)
		}
	}
	switch {
	case (f.Issuer == "" || f.Issuer == "ca") && f.CA == "" && f.AdminCredential != "":
		b.Refs = []rotator.Ref{{Field: "admin_credential", ID: f.AdminCredential}}
		b.Target = localCA
	case f.Issuer == "acme" && f.ACME != nil && f.ACME.AccountCredential != "":
		b.Refs = []rotator.Ref{{Field: "acme.account_credential", ID: f.ACME.AccountCredential}}
		b.Target = f.ACME.DirectoryURL
	}
	return b, nil
}

// Scope reads the scope a CA or ACME account credential declares: the names
// it may issue for (manages), and for an ACME account its directory_url field
// (required) (rotator.Binder).
func (r *Rotator) Scope(field string, admin rotator.Credential) (rotator.Scope, error) {
	sc, err := rotator.ScopeFields(admin)
	if err != nil {
		return rotator.Scope{}, err
	}
	if field == "acme.account_credential" {
		sc.Target = admin.String("directory_url")
		if sc.Target == "" {
			return rotator.Scope{}, rotator.Errorf(rotator.ClassConfig, "admin scope", "acme account credential %s: field directory_url is required (the ACME directory it may be used with)", admin.ID)
		}
		return sc, nil
	}
	sc.Target = localCA
	return sc, nil
}
