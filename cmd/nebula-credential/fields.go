package main

import (
	"fmt"
	"strings"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/apikey"
	"github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/rotator/x509"
)

// typeFields are the non-secret fields each type's rotator reads, taken from
// the rotators' own field structs.
func typeFields(t credential.Type) []string {
	switch t {
	case credential.Postgres:
		return postgres.FieldNames()
	case credential.MySQL:
		return mysql.FieldNames()
	case credential.Redis:
		return redis.FieldNames()
	case credential.APIKey:
		return apikey.FieldNames()
	case credential.OAuth2:
		return oauth2.FieldNames()
	case credential.Certificate:
		return x509.FieldNames()
	}
	return nil
}

// typeDocs maps a type to its page under docs/targets.
var typeDocs = map[credential.Type]string{
	credential.Postgres:    "docs/targets/postgresql.md",
	credential.MySQL:       "docs/targets/mysql.md",
	credential.Redis:       "docs/targets/redis.md",
	credential.APIKey:      "docs/targets/apikey.md",
	credential.OAuth2:      "docs/targets/oauth2.md",
	credential.Certificate: "docs/targets/x509.md",
}

// fieldsHelp is the "Fields by type" section of `put --help`.
func fieldsHelp() string {
	var b strings.Builder
	b.WriteString("Fields by type (\"fields\" are not secret; \"secret\" values are encrypted;\n* = required; `nebula-credential template TYPE` prints a filled-in example):\n")
	for _, t := range credential.Types() {
		sch, _ := credential.SchemaOf(t)
		req := map[string]bool{}
		for _, f := range sch.Fields {
			req[f] = true
		}
		var fs []string
		for _, f := range typeFields(t) {
			if req[f] {
				f += "*"
			}
			fs = append(fs, f)
		}
		var ss []string
		for _, s := range sch.Secret {
			ss = append(ss, s+"*")
		}
		ss = append(ss, sch.OptionalSecret...)
		fmt.Fprintf(&b, "  %s\n", t)
		if len(fs) > 0 {
			fmt.Fprintf(&b, "    fields: %s\n", strings.Join(fs, ", "))
		}
		if len(ss) > 0 {
			fmt.Fprintf(&b, "    secret: %s\n", strings.Join(ss, ", "))
		} else if t == credential.Generic {
			b.WriteString("    secret: any names (at least one)\n")
		}
		if d, ok := typeDocs[t]; ok {
			fmt.Fprintf(&b, "    see %s\n", d)
		}
	}
	fmt.Fprintf(&b, `
A credential that others name as their admin (admin_credential, auth_credential,
a certificate's CA) declares what it may manage, or binding to it is refused:
  %s: the accounts (or certificate names) it may manage, names or patterns
    ("app_*"); none by default
  %s, %s: true to allow its own account, or one another
    credential already manages
  target (api_key auth credential), directory_url (ACME account): where it may be used
  see docs/admin-credentials.md
`, rotator.FieldManages, rotator.FieldManageSelf, rotator.FieldManageShared)
	return b.String()
}
