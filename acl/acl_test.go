package acl

import (
	"slices"
	"strings"
	"testing"
)

func TestAllowed(t *testing.T) {
	g := func(s ...string) []Grant {
		var out []Grant
		for _, x := range s {
			gr, err := ParseGrant(x)
			if err != nil {
				t.Fatalf("ParseGrant(%q): %v", x, err)
			}
			out = append(out, gr)
		}
		return out
	}
	tests := []struct {
		name   string
		grants []Grant
		perm   Permission
		id     string
		want   bool
	}{
		{"no grants", nil, Read, "prod/db", false},
		{"exact", g("read:prod/db"), Read, "prod/db", true},
		{"child", g("read:prod/db"), Read, "prod/db/orders", true},
		{"grandchild", g("read:prod"), Read, "prod/db/orders", true},
		{"sibling with same string prefix", g("read:prod/db"), Read, "prod/dbx", false},
		{"sibling child", g("read:prod/db"), Read, "prod/dbx/a", false},
		{"parent", g("read:prod/db"), Read, "prod", false},
		{"trailing slash", g("read:prod/"), Read, "prod/db", true},
		{"trailing slash exact", g("read:prod/"), Read, "prod", true},
		{"trailing slash not sibling", g("read:prod/"), Read, "production", false},
		{"slash star", g("read:prod/*"), Read, "prod/x", true},
		{"star", g("read:*"), Read, "anything/at/all", true},
		{"empty prefix", []Grant{{Read, ""}}, Read, "a", true},
		{"bare permission", g("read"), Read, "a/b", true},
		{"other permission", g("read:prod"), Write, "prod/db", false},
		{"admin implies read", g("admin:prod"), Read, "prod/db", true},
		{"admin implies delete", g("admin:prod"), Delete, "prod/db", true},
		{"admin outside prefix", g("admin:prod"), Read, "dev/db", false},
		{"store-wide needs global", g("admin:prod"), Admin, "", false},
		{"store-wide global admin", g("admin:*"), Admin, "", true},
		{"store-wide read is not admin", g("read:*"), Admin, "", false},
		{"several grants", g("read:dev", "rotate:prod/db"), Rotate, "prod/db/x", true},
		{"several grants miss", g("read:dev", "rotate:prod/db"), Read, "prod/db/x", false},
		{"invalid grant gives nothing", []Grant{{Read, "Prod"}}, Read, "Prod", false},
		{"unknown permission gives nothing", []Grant{{"superuser", ""}}, Read, "a", false},
		{"empty id only for global", g("read:a"), Read, "", false},
		{"use on the admin", g("use:platform/pg-admin"), Use, "platform/pg-admin", true},
		{"use is not read", g("use:platform"), Read, "platform/pg-admin", false},
		{"read is not use", g("read:platform"), Use, "platform/pg-admin", false},
		{"write is not use", g("write:*"), Use, "platform/pg-admin", false},
		{"admin implies use", g("admin:platform"), Use, "platform/pg-admin", true},
		{"use outside prefix", g("use:platform/pg"), Use, "platform/pg-admin", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Allowed(tt.grants, tt.perm, tt.id); got != tt.want {
				t.Errorf("Allowed(%v, %s, %q) = %v, want %v", tt.grants, tt.perm, tt.id, got, tt.want)
			}
		})
	}
}

func TestVisible(t *testing.T) {
	gs := []Grant{{Rotate, "prod/db"}}
	if !Visible(gs, "prod/db/orders") {
		t.Error("rotate grant should make the credential visible")
	}
	if Visible(gs, "prod/cache") {
		t.Error("visible outside the prefix")
	}
	if Visible(nil, "x") {
		t.Error("visible without grants")
	}
	if Visible([]Grant{{Use, "platform"}}, "platform/pg-admin") {
		t.Error("use alone should not make the admin credential visible")
	}
}

func TestParseGrant(t *testing.T) {
	good := map[string]Grant{
		"read:prod/":       {Read, "prod"},
		"rotate:prod/db":   {Rotate, "prod/db"},
		"admin:*":          {Admin, ""},
		"admin":            {Admin, ""},
		"delete:a/b-c/d.e": {Delete, "a/b-c/d.e"},
		"write:":           {Write, ""},
	}
	for in, want := range good {
		got, err := ParseGrant(in)
		if err != nil || got != want {
			t.Errorf("ParseGrant(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "reed:x", "read:Prod", "read:a//b", "read:../x", "read:a b", "READ:x", "read:" + strings.Repeat("a", 300)} {
		if _, err := ParseGrant(in); err == nil {
			t.Errorf("ParseGrant(%q) succeeded", in)
		}
	}
	if s := (Grant{Read, ""}).String(); s != "read:*" {
		t.Errorf("String = %q", s)
	}
	if s := (Grant{Rotate, "prod/"}).String(); s != "rotate:prod" {
		t.Errorf("String = %q", s)
	}
}

func TestEncodeDecode(t *testing.T) {
	in := []Grant{{Read, "prod/"}, {Admin, "*"}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Grant{{Read, "prod"}, {Admin, ""}}; !slices.Equal(out, want) {
		t.Errorf("round trip = %v, want %v", out, want)
	}
	if _, err := Encode([]Grant{{"root", ""}}); err == nil {
		t.Error("Encode accepted an unknown permission")
	}
	if _, err := Decode([]byte(`[{"permission":"read","prefix":"A"}]`)); err == nil {
		t.Error("Decode accepted an invalid prefix")
	}
	if _, err := Decode([]byte(`{`)); err == nil {
		t.Error("Decode accepted bad JSON")
	}
}

// FuzzAllowed: Allowed never panics, and it allows only when some grant of the
// permission (or admin) covers the ID segment-wise.
func FuzzAllowed(f *testing.F) {
	f.Add("read", "prod/db", "read", "prod/db/x")
	f.Add("admin", "*", "delete", "a")
	f.Add("rotate", "prod/db", "rotate", "prod/dbx")
	f.Add("read", "", "admin", "")
	f.Add("write", "a/", "write", "a")
	f.Fuzz(func(t *testing.T, gperm, prefix, perm, id string) {
		grants := []Grant{{Permission(gperm), prefix}}
		got := Allowed(grants, Permission(perm), id)
		if !got {
			return
		}
		// Allowed: the grant must be valid, of the right permission, and cover id.
		g := grants[0]
		if g.Validate() != nil {
			t.Fatalf("allowed by an invalid grant %+v", g)
		}
		if g.Permission != Permission(perm) && g.Permission != Admin {
			t.Fatalf("grant %v allowed %q", g, perm)
		}
		p := normalise(prefix)
		if p != "" && id != p && !strings.HasPrefix(id, p+"/") {
			t.Fatalf("grant %v allowed id %q outside its prefix", g, id)
		}
		if Allowed(nil, Permission(perm), id) {
			t.Fatal("allowed without grants")
		}
		if Allowed([]Grant{{Permission(gperm), prefix + "x"}}, Permission(perm), id) && p != "" && id == p {
			t.Fatalf("grant on %q covers %q", prefix+"x", id)
		}
	})
}
