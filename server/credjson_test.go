package server

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
)

// wireJSON is what writeJSON writes for c.Wire(reveal).
func wireJSON(t testing.TB, c *credential.Credential, reveal bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c.Wire(reveal)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAppendCredentialMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 456789000, time.UTC)
	later := at.Add(time.Hour)
	plain := func() *credential.Credential {
		return &credential.Credential{
			ID: "prod/db/orders", Type: credential.Postgres, Version: 7, Labels: []string{"current", "previous"},
			State: "active", CreatedAt: at, ExpiresAt: &later, NextDueAt: &later,
			Fields: map[string]any{"host": "db.internal", "port": float64(5432), "tls": true, "note": nil, "n": -0.0, "big": 1e20, "i": 3},
			Secret: secret.FromStrings(map[string]string{"password": "9b1f0c2e<&>", "user": "orders_app"}),
		}
	}
	cases := []struct {
		name string
		edit func(*credential.Credential)
		fast bool // appendCredential encodes it itself
	}{
		{"plain", func(*credential.Credential) {}, true},
		{"empty", func(c *credential.Credential) {
			c.Labels, c.Fields, c.Secret, c.ExpiresAt, c.NextDueAt = nil, nil, nil, nil, nil
		}, true},
		{"grace", func(c *credential.Credential) { c.GraceEndsAt = &at }, true},
		{"quote in secret", func(c *credential.Credential) { c.Secret["password"] = secret.New(`a"b\c`) }, false},
		{"quote in field", func(c *credential.Credential) { c.Fields["host"] = `a"b` }, false},
		{"control in field", func(c *credential.Credential) { c.Fields["host"] = "a\nb" }, false},
		{"unicode label", func(c *credential.Credential) { c.Labels = []string{"é", "\u2028"} }, false},
		{"invalid UTF-8 key", func(c *credential.Credential) { c.Fields["\xff"] = "x" }, false},
		{"fraction", func(c *credential.Credential) { c.Fields["port"] = 0.5 }, false},
		{"huge", func(c *credential.Credential) { c.Fields["port"] = 1e21 }, false},
		{"nested", func(c *credential.Credential) { c.Fields["tags"] = []any{"a"} }, false},
		{"local time", func(c *credential.Credential) { c.CreatedAt = at.In(time.FixedZone("x", 3600)) }, false},
		{"warnings", func(c *credential.Credential) { c.Warnings = []rotation.Finding{{}} }, false},
	}
	for _, tc := range cases {
		for _, reveal := range []bool{true, false} {
			c := plain()
			tc.edit(c)
			want := wireJSON(t, c, reveal)
			got, ok := appendCredential(nil, c, reveal)
			if ok != tc.fast && reveal {
				t.Errorf("%s: fast path %v, want %v", tc.name, ok, tc.fast)
			}
			if ok && !bytes.Equal(got, want) {
				t.Errorf("%s, reveal %v:\n got %s\nwant %s", tc.name, reveal, got, want)
			}
		}
	}
}

func FuzzAppendCredential(f *testing.F) {
	f.Add("prod/db", "password", "s3cret", "host", "db.internal", 5432.0, "current")
	f.Add("a", "k", "a\"b", "\x00", "\u2028", 0.25, "é")
	f.Fuzz(func(t *testing.T, id, key, value, field, fieldValue string, num float64, label string) {
		if math.IsNaN(num) || math.IsInf(num, 0) {
			num = 0
		}
		c := &credential.Credential{
			ID: id, Type: credential.Type(label), Labels: []string{label}, State: credential.State(field),
			Fields:    map[string]any{field: fieldValue, key: num},
			Secret:    secret.FromStrings(map[string]string{key: value}),
			CreatedAt: time.Unix(int64(num)%1e10, 0).UTC(),
		}
		for _, reveal := range []bool{true, false} {
			want := wireJSON(t, c, reveal)
			if got, ok := appendCredential(nil, c, reveal); ok && !bytes.Equal(got, want) {
				t.Fatalf("reveal %v:\n got %s\nwant %s", reveal, got, want)
			}
		}
	})
}
