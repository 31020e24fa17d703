package main

import (
	"bytes"
	"strings"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

// FuzzPutInput: any stdin gives a clear error or a valid input, never a panic,
// and an error never quotes a secret value from the input.
func FuzzPutInput(f *testing.F) {
	f.Add([]byte(`{"fields":{"host":"h","username":"u"},"secret":{"password":"p4ssw0rd-SECRET"}}`))
	f.Add([]byte(`{"secret":{"k":"SECRET-1"},"expires_at":"2030-01-01T00:00:00Z","settings":{"grace":"5m"}}`))
	f.Add([]byte(`{"secret":{"k":12}}`))
	f.Add([]byte(`{"secret":`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"settings":{"policies":[{"kind":"scheduled","cron":"* * *"}]},"secret":{"a":"SECRET-2"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := parsePutInput(bytes.NewReader(data))
		if err != nil {
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("error quotes input: %v", err)
			}
			return
		}
		sec := secret.FromStrings(in.Secret)
		for _, typ := range credential.Types() {
			if err := credential.ValidateValues(typ, in.Fields, sec); err != nil && strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("validation error quotes a secret: %v", err)
			}
		}
		if in.Settings != nil {
			_ = in.Settings.Validate()
		}
	})
}
