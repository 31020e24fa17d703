package x509_test

import (
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	x509rot "github.com/nebula-credential/nebula-credential/rotator/x509"
)

// A CA admin_credential and an ACME account_credential follow the same rule:
// the names a certificate is issued for must be in the CA's manages list,
// and an ACME account is used only with its own directory.
func TestBindingCAAndACME(t *testing.T) {
	r := x509rot.New(x509rot.Config{})
	cert := rotator.Credential{ID: "web/tls", Fields: map[string]any{"admin_credential": "pki/ca", "common_name": "www.internal.example", "dns_names": []any{"api.internal.example"}, "key_type": "ecdsa-p256", "validity": "720h"}}
	b, err := r.Binding(cert)
	if err != nil || len(b.Refs) != 1 || b.Refs[0].ID != "pki/ca" || strings.Join(b.Accounts, ",") != "www.internal.example,api.internal.example" {
		t.Fatalf("%+v %v", b, err)
	}
	ca := rotator.Credential{ID: "pki/ca", Fields: map[string]any{"manages": []any{"*.internal.example"}}}
	sc, err := r.Scope("admin_credential", ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotator.CheckScope(cert.ID, b, ca.ID, sc); err != nil {
		t.Fatalf("in scope: %v", err)
	}
	cert.Fields["dns_names"] = []any{"bank.example"}
	b, _ = r.Binding(cert)
	if err := rotator.CheckScope(cert.ID, b, ca.ID, sc); err == nil || !strings.Contains(err.Error(), `does not manage account "bank.example"`) {
		t.Fatalf("foreign name: %v", err)
	}
	// ACME: the account is bound to its directory.
	acme := rotator.Credential{ID: "web/acme", Fields: map[string]any{"issuer": "acme", "common_name": "www.internal.example", "key_type": "ecdsa-p256", "validity": "720h",
		"acme": map[string]any{"directory_url": "https://evil.example/dir", "account_credential": "acme/account"}}}
	ab, err := r.Binding(acme)
	if err != nil || len(ab.Refs) != 1 || ab.Refs[0].Field != "acme.account_credential" {
		t.Fatalf("%+v %v", ab, err)
	}
	account := rotator.Credential{ID: "acme/account", Fields: map[string]any{"directory_url": "https://acme.internal/dir", "manages": "*.internal.example"}}
	asc, err := r.Scope("acme.account_credential", account)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotator.CheckScope(acme.ID, ab, account.ID, asc); err == nil || !strings.Contains(err.Error(), "targets https://evil.example/dir") {
		t.Fatalf("foreign directory: %v", err)
	}
	if _, err := r.Scope("acme.account_credential", rotator.Credential{ID: "acme/account", Fields: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "directory_url is required") {
		t.Fatalf("account without directory: %v", err)
	}
}
