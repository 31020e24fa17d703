package main

import (
	"bytes"
	"encoding/json"
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
	f.Add([]byte(`{"SECRET-key":"x","fields":{"SECRET":{"a":"SECRET-3"}}}`))
	f.Add([]byte(`{"settings":{"policies":[{"kind":"scheduled","cron":"* * *"}]},"secret":{"a":"SECRET-2"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := parsePutInput(bytes.NewReader(data))
		if err != nil {
			// An error may name a key of the input (an unknown field), never
			// quote a value.
			msg := err.Error()
			for _, k := range keysOf(data) {
				if strings.Contains(k, "SECRET") {
					msg = strings.ReplaceAll(msg, k, "")
				}
			}
			if strings.Contains(msg, "SECRET") {
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

// keysOf returns the object keys of a JSON document (as far as it parses).
func keysOf(data []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	var keys []string
	var inObject []bool // per open container: is it an object
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return keys
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				inObject = append(inObject, v == '{')
				expectKey = v == '{'
				continue
			default:
				inObject = inObject[:len(inObject)-1]
			}
		case string:
			if expectKey {
				keys = append(keys, v)
				expectKey = false
				continue
			}
		}
		// A value ended: in an object, a key comes next.
		expectKey = len(inObject) > 0 && inObject[len(inObject)-1]
	}
}
