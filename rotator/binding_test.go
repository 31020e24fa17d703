package rotator

import (
	"strings"
	"testing"
)

func TestCheckScope(t *testing.T) {
	admin := Scope{Target: "db:5432", Own: []string{"root"}, Manages: []string{"app_*", "billing"}}
	for _, tc := range []struct {
		name string
		b    Binding
		s    Scope
		want string
	}{
		{"pattern", Binding{Target: "db:5432", Accounts: []string{"app_x"}}, admin, ""},
		{"exact", Binding{Target: "db:5432", Accounts: []string{"billing"}}, admin, ""},
		{"outside", Binding{Target: "db:5432", Accounts: []string{"victim"}}, admin, `does not manage account "victim" of credential c (its manages: app_*, billing)`},
		{"one of two outside", Binding{Target: "db:5432", Accounts: []string{"app_a", "victim"}}, admin, `account "victim"`},
		{"own", Binding{Target: "db:5432", Accounts: []string{"root"}}, admin, `"root" is admin credential a's own login`},
		{"own allowed", Binding{Target: "db:5432", Accounts: []string{"root"}}, Scope{Target: "db:5432", Own: []string{"root"}, ManageSelf: true}, ""},
		{"own even if manages *", Binding{Target: "db:5432", Accounts: []string{"root"}}, Scope{Target: "db:5432", Own: []string{"root"}, Manages: []string{"*"}}, "own login"},
		{"none by default", Binding{Target: "db:5432", Accounts: []string{"app_x"}}, Scope{Target: "db:5432"}, "(its manages: none)"},
		{"other target", Binding{Target: "evil:5432", Accounts: []string{"app_x"}}, admin, "targets evil:5432 but admin credential a manages accounts on db:5432 only"},
		{"admin without target", Binding{Target: "db:5432", Accounts: []string{"app_x"}}, Scope{Manages: []string{"*"}}, "names no target of its own"},
		{"no account", Binding{Target: "db:5432"}, admin, "names no account"},
	} {
		err := CheckScope("c", tc.b, "a", tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || ClassOf(err) != ClassPermission):
			t.Errorf("%s: %v, want permission error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestScopeFields(t *testing.T) {
	s, err := ScopeFields(Credential{ID: "a", Fields: map[string]any{"manages": "app_*, x", "manage_self": "true", "manage_shared": true}})
	if err != nil || len(s.Manages) != 2 || s.Manages[1] != "x" || !s.ManageSelf || !s.ManageShared {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []map[string]any{{"manages": 3}, {"manages": []any{1}}, {"manages": []any{"[x"}}, {"manage_self": "perhaps"}} {
		if _, err := ScopeFields(Credential{ID: "a", Fields: bad}); ClassOf(err) != ClassConfig {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
