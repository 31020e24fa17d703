package apikey_test

import (
	"fmt"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/apikey"
	"github.com/nebula-credential/nebula-credential/secret"
)

// A service that mints keys (POST /v1/keys), lists them and revokes them by
// ID: the Dual strategy, with cleanup of keys a crash left unrecorded.
func Example() {
	auth := map[string]string{"Authorization": "Bearer {{auth_key}}"}
	cred := rotator.Credential{
		ID: "prod/api/payments", Type: "api_key", Version: 1,
		Fields: map[string]any{
			"key_id": "key_0001",
			"create": map[string]any{
				"url": "https://api.example.com/v1/keys", "headers": auth,
				"body":        `{"name":"nebula:{{credential_id}}:{{rotation_id}}"}`,
				"key_pointer": "/secret", "key_id_pointer": "/id", "expected_status": 201,
			},
			"verify": map[string]any{"url": "https://api.example.com/v1/me", "headers": map[string]string{"Authorization": "Bearer {{key}}"}},
			"revoke": map[string]any{"method": "DELETE", "url": "https://api.example.com/v1/keys/{{key_id}}", "headers": auth},
			"list": map[string]any{
				"url": "https://api.example.com/v1/keys", "headers": auth,
				"items_pointer": "/data", "id_pointer": "/id", "marker_pointer": "/name", "marker_prefix": "nebula:{{credential_id}}:",
			},
		},
		Secret: secret.Map{"key": secret.New("sk_live_example")},
	}
	var spec apikey.Spec
	if err := cred.Decode(&spec); err != nil {
		panic(err)
	}
	fmt.Println("valid:", spec.Validate() == nil)

	reg := rotator.NewRegistry()
	reg.Register("api_key", apikey.New(apikey.Config{}))
	// Output: valid: true
}

// RabbitMQ's management API: one password per user, set by an administrator
// (the credential "rabbitmq/admin", with field username and secret password).
func Example_rabbitMQ() {
	fields := map[string]any{
		"username": "orders", "tags": "management", "auth_credential": "rabbitmq/admin",
		"set": map[string]any{
			"method": "PUT", "url": "http://127.0.0.1:15672/api/users/{{fields.username}}",
			"basic_auth":      map[string]string{"username": "{{auth_username}}", "password": "{{auth_key}}"},
			"body":            `{"password":"{{key}}","tags":"{{fields.tags}}"}`,
			"expected_status": []int{201, 204},
		},
		"verify": map[string]any{
			"url":        "http://127.0.0.1:15672/api/whoami",
			"basic_auth": map[string]string{"username": "{{fields.username}}", "password": "{{key}}"},
		},
	}
	var spec apikey.Spec
	if err := (rotator.Credential{Fields: fields}).Decode(&spec); err != nil {
		panic(err)
	}
	fmt.Println("valid:", spec.Validate() == nil)
	// Output: valid: true
}
