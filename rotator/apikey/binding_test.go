package apikey

import (
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// The same rule as the database admins: an auth_credential names the service
// it may authenticate to, and the credential IDs it may be used for.
func TestBindingAuthCredential(t *testing.T) {
	r := New(Config{})
	cred := func(url string) rotator.Credential {
		return rotator.Credential{ID: "payments/stripe", Fields: map[string]any{
			"auth_credential": "platform/api-admin",
			"create":          map[string]any{"method": "POST", "url": url + "/keys", "key_pointer": "/key", "key_id_pointer": "/id"},
			"verify":          map[string]any{"url": url + "/whoami", "headers": map[string]string{"Authorization": "Bearer {{key}}"}},
			"revoke":          map[string]any{"method": "DELETE", "url": url + "/keys/{{key_id}}"},
		}}
	}
	b, err := r.Binding(cred("https://API.example.com"))
	if err != nil || b.Target != "https://api.example.com:443" || len(b.Refs) != 1 || b.Refs[0].ID != "platform/api-admin" || b.Accounts[0] != "payments/stripe" {
		t.Fatalf("%+v %v", b, err)
	}
	admin := rotator.Credential{ID: "platform/api-admin", Fields: map[string]any{"target": "https://api.example.com", "manages": []any{"payments/*"}}}
	sc, err := r.Scope("auth_credential", admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotator.CheckScope("payments/stripe", b, admin.ID, sc); err != nil {
		t.Fatalf("in scope: %v", err)
	}
	// A writer pointing the calls at its own server.
	evil, err := r.Binding(cred("https://evil.example"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rotator.CheckScope("payments/stripe", evil, admin.ID, sc); err == nil || !strings.Contains(err.Error(), "targets https://evil.example:443") {
		t.Fatalf("foreign service: %v", err)
	}
	// Another credential ID.
	other := cred("https://api.example.com")
	other.ID = "az/evil"
	ob, _ := r.Binding(other)
	if err := rotator.CheckScope("az/evil", ob, admin.ID, sc); err == nil || !strings.Contains(err.Error(), `does not manage account "az/evil"`) {
		t.Fatalf("other credential: %v", err)
	}
	// A templated host cannot be checked: refused.
	if _, err := r.Binding(cred("https://{{fields.host}}")); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("templated host: %v", err)
	}
	// An admin without target.
	if _, err := r.Scope("auth_credential", rotator.Credential{ID: "x", Fields: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "field target is required") {
		t.Fatalf("no target: %v", err)
	}
}
