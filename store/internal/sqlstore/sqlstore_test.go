package sqlstore

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix, upper string
		ok            bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"app/", "app0", true},
		{"ké", "kê", true},
		{"a\U0010FFFF", "b", true},
		{"\U0010FFFF\U0010FFFF", "", false},
		{"x\uD7FF", "x\uE000", true},
		{"a\xff", "b", true},
		{"a\x80", "a\x81", true},
	}
	for _, tt := range tests {
		upper, ok := prefixEnd(tt.prefix)
		if upper != tt.upper || ok != tt.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tt.prefix, upper, ok, tt.upper, tt.ok)
		}
	}
}

// FuzzPrefixEnd checks the defining property: for valid UTF-8, s starts with
// prefix exactly when prefix <= s < upper.
func FuzzPrefixEnd(f *testing.F) {
	f.Add("app/", "app/x")
	f.Add("ké", "kë")
	f.Add("a\U0010FFFF", "a\U0010FFFFz")
	f.Fuzz(func(t *testing.T, prefix, s string) {
		if !utf8.ValidString(prefix) || !utf8.ValidString(s) {
			return
		}
		upper, ok := prefixEnd(prefix)
		in := s >= prefix && (!ok || s < upper)
		if in != strings.HasPrefix(s, prefix) {
			t.Errorf("prefix %q, upper %q (%v): %q in range = %v", prefix, upper, ok, s, in)
		}
	})
}

func TestNumbered(t *testing.T) {
	got := numbered("SELECT a FROM t WHERE b = ? AND (c = ? OR d IN (?, ?))")
	want := "SELECT a FROM t WHERE b = $1 AND (c = $2 OR d IN ($3, $4))"
	if got != want {
		t.Errorf("numbered = %q, want %q", got, want)
	}
}

// TestQueriesHaveNoNumberedPlaceholders checks that queries are written in
// the one placeholder style numbered rewrites.
func TestQueriesHaveNoNumberedPlaceholders(t *testing.T) {
	for i, q := range queryText {
		if q == "" {
			t.Errorf("query %d has no text", i)
		}
		if strings.Contains(q, "$") {
			t.Errorf("query %d uses $ placeholders: write ? and let the dialect number them", i)
		}
	}
}
