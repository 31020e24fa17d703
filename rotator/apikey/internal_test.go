package apikey

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestLookup(t *testing.T) {
	doc, err := decodeJSON([]byte(`{"data":[{"id":12345678901234567890,"name":"a/b","~x":"t"}],"":{"e":"empty"},"s":""}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ptr, want string
		ok        bool
	}{
		{"/data/0/id", "12345678901234567890", true}, // exact, not a float
		{"/data/0/name", "a/b", true},
		{"/data/0/~0x", "t", true},
		{"//e", "empty", true},
		{"/data/1/id", "", false},
		{"/data/01/id", "", false},
		{"/data/-1/id", "", false},
		{"/data/x", "", false},
		{"/data", "", false}, // not a string
		{"/s", "", false},    // empty string is not a key
		{"data", "", false},  // no leading slash
		{"/missing", "", false},
	}
	for _, tc := range tests {
		got, err := lookupString(doc, tc.ptr)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("lookupString(%q) = %q, %v; want %q ok=%v", tc.ptr, got, err, tc.want, tc.ok)
		}
	}
}

func TestRender(t *testing.T) {
	v := vars{"key": `a"b/c d?&`, "key_id": "k/1", "fields.user": "bob"}
	tests := []struct {
		tmpl string
		esc  escaper
		want string
	}{
		{`{"k":"{{key}}"}`, jsonEscape, `{"k":"a\"b/c d?&"}`},
		{`Bearer {{ key }}`, rawEscape, `Bearer a"b/c d?&`},
		{`{{fields.user}}:{{key_id}}`, rawEscape, `bob:k/1`},
		{`no placeholders`, rawEscape, `no placeholders`},
	}
	for _, tc := range tests {
		got, err := render(tc.tmpl, v, tc.esc)
		if err != nil || got != tc.want {
			t.Errorf("render(%q) = %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
	for _, bad := range []string{"{{nope}}", "{{key", "{{fields.other}}"} {
		if _, err := render(bad, v, rawEscape); err == nil {
			t.Errorf("render(%q) succeeded", bad)
		}
	}
	u, err := renderURL("https://h/keys/{{key_id}}?token={{key}}", v)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.String(); got != "https://h/keys/k%2F1?token=a%22b%2Fc+d%3F%26" {
		t.Fatalf("renderURL = %s", got)
	}
	if _, err := renderURL("file:///etc/{{key}}", v); err == nil {
		t.Fatal("non-http scheme accepted")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                              0,
		"5":                             5 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Tue, 01 Jan 2030 00:01:00 GMT": time.Minute,
		"Mon, 31 Dec 2029 23:00:00 GMT": 0, // in the past
	} {
		if got := parseRetryAfter(h, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	s := "p@ss w/rd+\"x<"
	for _, enc := range []string{s, jsonEscape(s), `p@ss w/rd+\"x\u003c`, url.PathEscape(s), url.QueryEscape(s)} {
		if got := redact("before "+enc+" after", []string{s}); strings.Contains(got, "ss") {
			t.Errorf("redact left %q in %q", enc, got)
		}
	}
}

func FuzzJSONPointer(f *testing.F) {
	f.Add(`{"a":[{"b":"c"}]}`, "/a/0/b", "k", "v")
	f.Add(`[1,2,3]`, "/2", "~/", "x")
	f.Fuzz(func(t *testing.T, doc, ptr, key, val string) {
		// Any document and pointer: no panic, and no empty success.
		if v, err := decodeJSON([]byte(doc)); err == nil {
			if s, err := lookupString(v, ptr); err == nil && s == "" {
				t.Fatal("lookupString returned an empty string without error")
			}
		}
		// A member found by its escaped name is the member's value.
		if val == "" || !utf8.ValidString(key) || !utf8.ValidString(val) {
			return // json.Marshal would replace invalid bytes
		}
		b, _ := json.Marshal(map[string]any{key: []any{map[string]string{key: val}}})
		v, err := decodeJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		esc := strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
		got, err := lookupString(v, "/"+esc+"/0/"+esc)
		if err != nil || got != val {
			t.Fatalf("lookup of %q = %q, %v; want %q", key, got, err, val)
		}
	})
}

func FuzzTemplate(f *testing.F) {
	f.Add("Bearer {{key}}", "sk_1")
	f.Add("{{", "x")
	f.Add("{{ fields.a }}}}", "y")
	f.Fuzz(func(t *testing.T, tmpl, key string) {
		out, err := render(tmpl, vars{"key": key, "fields.a": "A"}, jsonEscape)
		if err != nil {
			return
		}
		if !strings.Contains(tmpl, "{{") && out != tmpl {
			t.Fatalf("render changed a template without placeholders: %q -> %q", tmpl, out)
		}
		if checkTemplate(tmpl) != nil && !strings.Contains(tmpl, "fields.") {
			t.Fatalf("render accepted %q that checkTemplate refuses", tmpl)
		}
	})
}
