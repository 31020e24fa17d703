package main

import (
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

// TestEveryCommandHasExample walks the whole command tree: every command,
// groups and completion included, shows an example in --help.
func TestEveryCommandHasExample(t *testing.T) {
	root := newRoot(&globals{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no example in --help", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// TestTemplatesMatchRotators: every type has a template, put accepts it, and
// every field in it is one the type's rotator reads (its fields struct).
func TestTemplatesMatchRotators(t *testing.T) {
	for _, typ := range credential.Types() {
		tpl, ok := templates[typ]
		if !ok {
			t.Errorf("no template for %s", typ)
			continue
		}
		fields := tpl.Fields
		if typ == credential.Certificate {
			// The certificate in use now is a placeholder put refuses until it
			// is replaced (docs/targets/x509.md shows how).
			if err := credential.ValidateValues(typ, fields, secret.FromStrings(tpl.Secret)); err == nil || !strings.Contains(err.Error(), `"certificate"`) {
				t.Errorf("template certificate: put accepts its placeholder certificate: %v", err)
			}
			fields = maps.Clone(fields)
			fields["certificate"] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
		}
		if err := credential.ValidateValues(typ, fields, secret.FromStrings(tpl.Secret)); err != nil {
			t.Errorf("template %s: put would refuse it: %v", typ, err)
		}
		known := typeFields(typ)
		for f := range tpl.Fields {
			if !slices.Contains(known, f) {
				t.Errorf("template %s: field %q is not read by the rotator (it reads %v)", typ, f, known)
			}
		}
		if typ != credential.Generic && len(known) == 0 {
			t.Errorf("%s: no fields from its rotator", typ)
		}
	}
}
