package dbrot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestPortUnmarshal(t *testing.T) {
	for in, want := range map[string]Port{`5432`: 5432, `"5432"`: 5432, `" 6379 "`: 6379, `""`: 0, `null`: 0, `0`: 0, `-1`: -1} {
		var p Port
		if err := json.Unmarshal([]byte(in), &p); err != nil || p != want {
			t.Errorf("%s: port %d, err %v; want %d", in, p, err, want)
		}
	}
	for _, in := range []string{`1.5`, `"http"`, `true`, `[1]`, `{}`} {
		var p Port
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("%s: accepted as %d", in, p)
		}
	}
}

// FuzzPortUnmarshal: outside input never panics, and a port it accepts
// (other than 0, "no port") reads back the same from its decimal string form.
func FuzzPortUnmarshal(f *testing.F) {
	for _, s := range []string{`5432`, `"5432"`, `""`, `null`, `1e3`, `"0x10"`, `-0`, `9999999999999999999999`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var p Port
		if err := json.Unmarshal([]byte(in), &p); err != nil || p == 0 {
			return
		}
		var q Port
		if err := json.Unmarshal([]byte(fmt.Sprintf(`"%d"`, p)), &q); err != nil || q != p {
			t.Fatalf("%s: %d does not read back (%d, %v)", in, p, q, err)
		}
	})
}

func TestUsersOther(t *testing.T) {
	for _, tc := range []struct {
		users    Users
		username string
		want     string // "" means a ClassConfig error
	}{
		{Users{"a", "b"}, "a", "b"},
		{Users{"a", "b"}, "b", "a"},
		{Users{"a", "b"}, "c", ""},
		{Users{"a"}, "a", ""},
		{Users{"a", "a"}, "a", ""},
		{Users{"a", ""}, "a", ""},
		{Users{"a", "b", "c"}, "a", ""},
		{nil, "a", ""},
	} {
		got, err := tc.users.Other("stage", tc.username, "role")
		if got != tc.want || (tc.want == "") != (rotator.ClassOf(err) == rotator.ClassConfig) {
			t.Errorf("%q.Other(%q) = %q, %v; want %q", tc.users, tc.username, got, err, tc.want)
		}
	}
}

// own is a rotator's fields struct as the rotators write it.
type own struct {
	Fields
	Database string `json:"database"`
}

func TestParse(t *testing.T) {
	s := Spec{Port: 5432, Probe: "SELECT 1", Policy: PrintablePolicy}
	var f own
	c := rotator.Credential{ID: "db/x", Fields: map[string]any{"username": "u", "port": "6543", "database": "d"}}
	if err := Parse(c, "stage", &f, s); err != nil {
		t.Fatal(err)
	}
	if f.Host != "127.0.0.1" || f.Port != 6543 || f.Probe != "SELECT 1" || f.Database != "d" {
		t.Fatalf("parsed %+v", f)
	}
	for name, fields := range map[string]map[string]any{
		"bad port":       {"username": "u", "port": "http"},
		"port too large": {"username": "u", "port": 70000},
		"no username":    {"port": 1},
		"bad policy":     {"username": "u", "password_policy": map[string]any{"length": 4}},
		"space":          {"username": "u", "password_policy": map[string]any{"alphabet": "abcdefghij k"}},
		"wrong type":     {"username": 5},
	} {
		err := Parse(rotator.Credential{ID: "db/x", Fields: fields}, "stage", &own{}, s)
		if rotator.ClassOf(err) != rotator.ClassConfig || !strings.Contains(err.Error(), "db/x") {
			t.Errorf("%s: err = %v, want ClassConfig naming the credential", name, err)
		}
	}
	err := Parse(rotator.Credential{ID: "c", Fields: map[string]any{}}, "stage", &own{}, Spec{Port: 1, UsernameHint: " (hint)"})
	if err == nil || !strings.HasSuffix(err.Error(), "field username is required (hint)") {
		t.Errorf("hint missing: %v", err)
	}
	// Spec.Policy decides when set, secret.PasswordPolicy.Validate when not.
	withPolicy := rotator.Credential{Fields: map[string]any{"username": "u", "password_policy": map[string]any{"length": 4}}}
	if err := Parse(withPolicy, "stage", &own{}, Spec{Port: 1}); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Errorf("default policy check: %v", err)
	}
	refuse := func(secret.PasswordPolicy) error { return errors.New("refused") }
	withPolicy.Fields["password_policy"] = map[string]any{"length": 40}
	if err := Parse(withPolicy, "stage", &own{}, Spec{Port: 1, Policy: refuse}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Spec.Policy not used: %v", err)
	}
}

type resolver map[string]rotator.Credential

func (r resolver) Resolve(_ context.Context, id string) (rotator.Credential, error) {
	if c, ok := r[id]; ok {
		return c, nil
	}
	return rotator.Credential{}, errors.New("no such credential")
}

func TestAdmin(t *testing.T) {
	s := Spec{Port: 5432}
	base := Fields{Host: "db.example", Port: 6000, Username: "app", AdminCredential: "adm"}
	admin := func(res rotator.Resolver, base Fields, s Spec) (own, rotator.Credential, bool, error) {
		var f own
		c, ok, err := Admin(context.Background(), res, "apply", base, &f, s)
		return f, c, ok, err
	}
	if _, _, ok, err := admin(nil, Fields{}, s); ok || err != nil {
		t.Fatalf("no admin_credential: ok %v, err %v", ok, err)
	}
	if _, _, _, err := admin(nil, base, s); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("no resolver: %v", err)
	}
	if _, _, _, err := admin(resolver{}, base, s); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("unknown credential: %v", err)
	}
	pw := secret.New("admin-password")
	res := resolver{"adm": {ID: "adm", Fields: map[string]any{"username": "root", "database": "d"}, Secret: secret.Map{"password": pw}}}
	// An admin never takes the referring credential's host: a writer of the
	// referring credential would choose where the admin's password goes.
	if f, _, ok, err := admin(res, base, s); ok || rotator.ClassOf(err) != rotator.ClassConfig || !strings.Contains(err.Error(), "host is required on the admin itself") || f.Host == "db.example" {
		t.Fatalf("admin without host: %+v ok %v err %v", f, ok, err)
	}
	res["adm"] = rotator.Credential{ID: "adm", Fields: map[string]any{"host": "adm.example", "port": 7000, "username": "root", "database": "d"}, Secret: secret.Map{"password": pw}}
	f, c, ok, err := admin(res, base, s)
	if err != nil || !ok || f.Host != "adm.example" || f.Port != 7000 || f.Username != "root" || f.Database != "d" || !c.Secret["password"].Equal(pw) {
		t.Fatalf("own host and port: %+v ok %v err %v", f, ok, err)
	}
	res["adm"] = rotator.Credential{ID: "adm", Fields: map[string]any{"host": "other.example", "username": "root"}}
	if f, _, _, err := admin(res, base, s); err != nil || f.Host != "other.example" || f.Port != 5432 {
		t.Fatalf("own host, default port: %+v, %v", f, err)
	}
	res["adm"] = rotator.Credential{ID: "adm", Fields: map[string]any{"host": "adm.example"}}
	if _, _, _, err := admin(res, base, s); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("admin without username: %v", err)
	}
	if f, _, _, err := admin(res, base, Spec{Port: 6379, AdminUsername: "default"}); err != nil || f.Username != "default" {
		t.Fatalf("default admin username: %+v, %v", f, err)
	}
}

func TestStagePassword(t *testing.T) {
	resp, err := Fields{PasswordPolicy: &secret.PasswordPolicy{Length: 40}}.StagePassword("stage", map[string]any{"username": "b"})
	if err != nil || resp.Secret["password"].Len() != 40 || resp.Fields["username"] != "b" {
		t.Fatalf("resp %+v, err %v", resp, err)
	}
	if _, err := (Fields{PasswordPolicy: &secret.PasswordPolicy{Length: 4}}).StagePassword("stage", nil); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("impossible policy: %v", err)
	}
}

func TestClassifyAndTransient(t *testing.T) {
	classOf := func(err error) rotator.Class {
		if Transient(err) {
			return rotator.ClassTransient
		}
		return rotator.ClassPermission
	}
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, syscall.ECONNREFUSED, syscall.ECONNRESET,
		syscall.EPIPE, io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, &net.OpError{Op: "dial", Err: errors.New("x")},
		fmt.Errorf("wrapped: %w", io.EOF)} {
		if !Transient(err) || !rotator.Retryable(Classify(classOf, "op", "", err)) {
			t.Errorf("%v: not transient", err)
		}
	}
	if Transient(errors.New("syntax error")) {
		t.Error("a plain error is not transient")
	}
	err := Classify(classOf, "alter", "CREATEROLE", errors.New("denied"))
	if rotator.ClassOf(err) != rotator.ClassPermission || rotator.PrivilegeOf(err) != "CREATEROLE" {
		t.Errorf("permission: %v", err)
	}
	if err := Classify(classOf, "verify", "X", io.EOF); rotator.PrivilegeOf(err) != "" {
		t.Errorf("privilege on a transient error: %v", err)
	}
	typed := rotator.Errorf(rotator.ClassConfig, "parse", "bad")
	if Classify(classOf, "op", "", typed) != typed || Classify(classOf, "op", "", nil) != nil {
		t.Error("a *rotator.Error or nil must pass through")
	}
}

func TestScrub(t *testing.T) {
	pw := secret.New(`ab'c\d"e`)
	for _, form := range SQLForms(pw.Reveal()) {
		in := &rotator.Error{Class: rotator.ClassPermission, Op: "alter", Privilege: "CREATE USER", Err: errors.New("near '" + form + "'")}
		err := Scrub(in, SQLForms, pw)
		if strings.Contains(err.Error(), `c\d`) || !strings.Contains(err.Error(), secret.Redacted) {
			t.Errorf("form %q not scrubbed: %v", form, err)
		}
		if rotator.ClassOf(err) != rotator.ClassPermission || rotator.PrivilegeOf(err) != "CREATE USER" || strings.Count(err.Error(), "missing privilege") != 1 {
			t.Errorf("class or privilege changed: %v", err)
		}
	}
	hashed := func(p string) []string { return []string{p, "hash-of-" + p} }
	if err := Scrub(errors.New("rule #hash-of-s3cret"), hashed, secret.New("s3cret")); strings.Contains(err.Error(), "s3cret") {
		t.Errorf("derived form not scrubbed: %v", err)
	}
	plain := errors.New("abc and nothing secret")
	if Scrub(plain, SQLForms, secret.New("abc"), secret.New("zzzz")) != plain {
		t.Error("an error without secrets (or with values under 4 bytes) must keep its chain")
	}
	if Scrub(nil, SQLForms, pw) != nil {
		t.Error("nil must stay nil")
	}
}

func TestUnsupported(t *testing.T) {
	for want, supported := range map[string][]rotator.Strategy{
		`stage: strategy "x" is not supported by db (use dual)`:                          {rotator.Dual},
		`stage: strategy "x" is not supported by db (use alternating or in_place)`:       {rotator.Alternating, rotator.InPlace},
		`stage: strategy "x" is not supported by db (use dual, alternating or in_place)`: {rotator.Dual, rotator.Alternating, rotator.InPlace},
	} {
		err := Unsupported("stage", "db", "x", supported)
		if err.Error() != want || rotator.ClassOf(err) != rotator.ClassConfig {
			t.Errorf("got %q (%s), want %q", err, rotator.ClassOf(err), want)
		}
	}
}

func TestVersions(t *testing.T) {
	var parsed []string
	parse := func(c rotator.Credential, op string) (string, error) {
		parsed = append(parsed, c.ID)
		if c.ID == "bad" {
			return "", errors.New("bad " + op)
		}
		return c.ID, nil
	}
	ok := func(string) error { return nil }
	refused := errors.New("refused")
	refuse := func(string) error { return refused }
	a, b, bad := rotator.Credential{ID: "a"}, rotator.Credential{ID: "b"}, rotator.Credential{ID: "bad"}

	if x, y, err := Versions("apply", ok, parse, a, b); x != "a" || y != "b" || err != nil {
		t.Fatalf("Versions = %q, %q, %v", x, y, err)
	}
	parsed = nil
	if _, _, err := Versions("apply", refuse, parse, a, b); err != refused || len(parsed) != 0 {
		t.Fatalf("a failed check must come first and stop parsing: %v, parsed %q", err, parsed)
	}
	if _, _, err := Versions("apply", ok, parse, a, bad); err == nil || err.Error() != "bad apply" {
		t.Fatalf("second version: %v", err)
	}
	parsed = nil
	if _, _, err := Versions("apply", ok, parse, bad, b); err == nil || len(parsed) != 1 {
		t.Fatalf("a bad first version must stop parsing: %v, parsed %q", err, parsed)
	}
	if x, err := Version("verify", ok, parse, a); x != "a" || err != nil {
		t.Fatalf("Version = %q, %v", x, err)
	}
	if _, err := Version("verify", refuse, parse, a); err != refused {
		t.Fatalf("Version check: %v", err)
	}
}
