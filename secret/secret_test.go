package secret

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type config struct {
	User     string
	Password Value
	Extra    Map
	Ptr      *Value
}

func TestRedactedEverywhere(t *testing.T) {
	const plain = "s3cr3t-plaintext-value"
	v := New(plain)
	c := config{User: "app", Password: v, Extra: Map{"token": New(plain + "-tok")}, Ptr: &v}

	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, v), fmt.Sprintf(verb, &c))
	}
	outs = append(outs, v.String(), v.GoString(), fmt.Sprint(c), fmt.Sprintln(v))
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	txt, _ := v.MarshalText()
	outs = append(outs, string(txt))
	type wrapper struct{ P Value }
	x, err := xml.Marshal(wrapper{v})
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(x))
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("msg", "password", v, "config", c, slog.Any("map", c.Extra))
	}
	outs = append(outs, buf.String())

	for _, o := range outs {
		if strings.Contains(o, plain) {
			t.Errorf("plaintext leaked: %s", o)
		}
	}
	if !strings.Contains(string(j), Redacted) || !strings.Contains(buf.String(), Redacted) {
		t.Errorf("expected %s marker in JSON and logs: %s / %s", Redacted, j, buf.String())
	}
	if v.Reveal() != plain {
		t.Fatal("Reveal lost the value")
	}
}

func TestEqual(t *testing.T) {
	a, b, c := New("abc"), New("abc"), New("abd")
	if !a.Equal(b) || a.Equal(c) || a.Equal(Value{}) || !(Value{}).Equal(New("")) {
		t.Fatal("Equal wrong")
	}
	if !(Value{}).IsZero() || a.IsZero() {
		t.Fatal("IsZero wrong")
	}
	m1, m2 := Map{"a": a}, Map{"a": b}
	if !m1.Equal(m2) || m1.Equal(Map{"a": c}) || m1.Equal(Map{"b": a}) {
		t.Fatal("Map.Equal wrong")
	}
}

func TestPasswordPolicy(t *testing.T) {
	four := 4
	tests := []struct {
		name string
		p    PasswordPolicy
		ok   bool
	}{
		{"default", PasswordPolicy{}, true},
		{"symbols", PasswordPolicy{Length: 20, Symbols: &four}, true},
		{"too short", PasswordPolicy{Length: 8}, false},
		{"minimums exceed", PasswordPolicy{Length: 12, Lower: &four, Upper: &four, Digits: &four, Symbols: &four}, false},
		{"alphabet", PasswordPolicy{Length: 16, Alphabet: "abcdef0123456789"}, true},
		{"tiny alphabet", PasswordPolicy{Length: 16, Alphabet: "ab"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.p.Generate()
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			s := v.Reveal()
			if want := tt.p.length(); len(s) != want {
				t.Fatalf("len %d, want %d", len(s), want)
			}
			if tt.p.Alphabet != "" {
				for _, r := range s {
					if !strings.ContainsRune(tt.p.Alphabet, r) {
						t.Fatalf("%q outside alphabet", r)
					}
				}
				return
			}
			for _, c := range tt.p.classes() {
				n := 0
				for _, r := range s {
					if strings.ContainsRune(c.chars, r) {
						n++
					}
				}
				if n < c.min {
					t.Fatalf("class %q: %d < %d", c.chars, n, c.min)
				}
			}
		})
	}
	a, _ := PasswordPolicy{}.Generate()
	b, _ := PasswordPolicy{}.Generate()
	if a.Equal(b) {
		t.Fatal("two generated passwords are equal")
	}
}
