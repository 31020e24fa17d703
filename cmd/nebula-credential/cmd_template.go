package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
)

func init() {
	extraCommands = append(extraCommands, cmdTemplate)
}

// templates are filled-in examples, one per type: what `put` reads. Every
// field name must be one the type's rotator reads (TestTemplatesMatchRotators).
var templates = map[credential.Type]putInput{
	credential.Postgres: {
		Fields: map[string]any{"host": "127.0.0.1", "port": 5432, "database": "app", "username": "app", "sslmode": "disable"},
		Secret: map[string]string{"password": "CHANGE-ME-current-password"},
	},
	credential.MySQL: {
		Fields: map[string]any{"host": "127.0.0.1", "port": 3306, "database": "app", "username": "app"},
		Secret: map[string]string{"password": "CHANGE-ME-current-password"},
	},
	credential.Redis: {
		Fields: map[string]any{"host": "127.0.0.1", "port": 6379, "username": "app"},
		Secret: map[string]string{"password": "CHANGE-ME-current-password"},
	},
	credential.APIKey: {
		Fields: map[string]any{
			"key_id": "key_0001",
			"create": map[string]any{
				"url": "https://api.example.com/v1/keys", "headers": map[string]string{"Authorization": "Bearer {{auth_key}}"},
				"body":        `{"name":"nebula:{{credential_id}}:{{rotation_id}}"}`,
				"key_pointer": "/secret", "key_id_pointer": "/id", "expected_status": 201,
			},
			"verify": map[string]any{"url": "https://api.example.com/v1/me", "headers": map[string]string{"Authorization": "Bearer {{key}}"}},
			"revoke": map[string]any{"method": "DELETE", "url": "https://api.example.com/v1/keys/{{key_id}}", "headers": map[string]string{"Authorization": "Bearer {{auth_key}}"}},
		},
		Secret: map[string]string{"key": "CHANGE-ME-current-key"},
	},
	credential.OAuth2: {
		Fields: map[string]any{"token_url": "https://auth.example.com/oauth/token", "client_id": "my-client", "scopes": "read write"},
		Secret: map[string]string{"refresh_token": "CHANGE-ME-refresh-token", "client_secret": "CHANGE-ME-client-secret"},
	},
	credential.Certificate: {
		Fields: map[string]any{
			"issuer": "ca", "admin_credential": "pki/root-ca", "common_name": "api.internal", "dns_names": []string{"api.internal"},
			"validity": "2160h", "certificate": "-----BEGIN CERTIFICATE-----\nCHANGE-ME (PEM of the current certificate and its chain)\n-----END CERTIFICATE-----\n",
			"deploy": []map[string]any{{"type": "file", "cert_file": "/etc/app/tls/cert.pem", "key_file": "/etc/app/tls/key.pem", "reload_command": []string{"systemctl", "reload", "app"}}},
		},
		Secret: map[string]string{"private_key": "-----BEGIN PRIVATE KEY-----\nCHANGE-ME\n-----END PRIVATE KEY-----\n"},
	},
	credential.Generic: {
		Secret: map[string]string{"value": "CHANGE-ME"},
	},
}

func cmdTemplate(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "template TYPE",
		Short: "Print a filled-in example of what `put` reads for a type",
		Long: `Print a JSON object for 'put' with example values for TYPE: edit the values
marked CHANGE-ME (and the host, names and URLs), then pipe it to 'put'. The
other fields the type's rotator reads are listed on stderr; each type's page
under docs/targets explains every field and strategy.

Types: ` + strings.Join(typeNames(), ", ") + `.`,
		Example: `  nebula-credential template postgres > db.json && $EDITOR db.json
  nebula-credential put prod/db/orders --type postgres < db.json
  nebula-credential template generic | nebula-credential put dev/session-key --type generic`,
		Args: exactArgs(1, "TYPE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := credential.Type(args[0])
			if t == "postgresql" {
				t = credential.Postgres
			}
			tpl, ok := templates[t]
			if !ok {
				return usagef("unknown type %q: want one of %s", args[0], strings.Join(typeNames(), ", "))
			}
			if err := g.printJSON(tpl); err != nil {
				return err
			}
			var rest []string
			for _, f := range typeFields(t) {
				if _, in := tpl.Fields[f]; !in {
					rest = append(rest, f)
				}
			}
			if len(rest) > 0 {
				fmt.Fprintf(g.stderr, "other %s fields: %s", t, strings.Join(rest, ", "))
				if d, ok := typeDocs[t]; ok {
					fmt.Fprintf(g.stderr, " (see %s)", d)
				}
				fmt.Fprintln(g.stderr)
			}
			return nil
		},
	}
}

func typeNames() []string {
	var out []string
	for _, t := range credential.Types() {
		out = append(out, string(t))
	}
	return slices.Clip(out)
}
