package jsonerr

import (
	"encoding/json"
	"strings"
	"testing"
)

type input struct {
	Fields map[string]any    `json:"fields"`
	Secret map[string]string `json:"secret"`
}

func TestDescribe(t *testing.T) {
	for _, c := range []struct {
		raw, want string
		never     []string // input text the message must not quote
	}{
		{`{"fields":{}, "secret":`, "invalid JSON: unexpected end of input", nil},
		{"{\n\"secret\": {\"k\": x}}", "invalid JSON at line 2 (byte 19)", []string{"x"}},
		{`{"secret":{"password":987654321}}`, `field "secret" must be a string, not a JSON number`, []string{"987654321"}},
		{`{"secret":{"password":true}}`, `field "secret" must be a string, not a JSON bool`, nil},
		{`[1,2]`, "want an object, not a JSON array", nil},
		{`{"password":"hunter2"}`, `unknown field "password"`, []string{"hunter2"}},
		{`{"hunter2 is my: password":"x"}`, `unknown field (name not shown)`, []string{"hunter2"}},
		{`{"secret":{"p@ss w0rd!":1}}`, `field "secret" must be a string, not a JSON number`, []string{"p@ss"}},
	} {
		dec := json.NewDecoder(strings.NewReader(c.raw))
		dec.DisallowUnknownFields()
		var in input
		err := dec.Decode(&in)
		if err == nil {
			t.Errorf("%s: decoded", c.raw)
			continue
		}
		got := Describe(err, []byte(c.raw), "want an object, not a JSON %s")
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.raw, got, c.want)
		}
		for _, n := range c.never {
			if strings.Contains(got, n) {
				t.Errorf("%s: %q quotes %q", c.raw, got, n)
			}
		}
	}
}
