package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestPrintJSONResult(t *testing.T) {
	type info struct {
		ID   string `json:"id"`
		Step string `json:"step,omitempty"`
	}
	for _, tc := range []struct {
		name string
		v    any
		err  error
		want map[string]any
		code int
	}{
		{"ok", info{ID: "a", Step: "grace"}, nil, map[string]any{"id": "a", "step": "grace"}, 0},
		{"failed", &info{ID: "a"}, errors.New(`target "x" refused`), map[string]any{"id": "a", "error": `target "x" refused`}, exitFailed},
		{"empty object", struct{}{}, errors.New("boom"), map[string]any{"error": "boom"}, exitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			g := &globals{stdout: &out}
			err := g.printJSONResult(tc.v, tc.err)
			var ee exitError
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("err = %v", err)
			case tc.code != 0 && (!errors.As(err, &ee) || ee.code != tc.code):
				t.Fatalf("err = %v, want exit %d", err, tc.code)
			}
			var got map[string]any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("%q: %v", out.String(), err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("%s = %v, want %v (%s)", k, got[k], v, out.String())
				}
			}
		})
	}
	// Not an object: refused rather than printing something unparsable.
	g := &globals{stdout: &bytes.Buffer{}}
	if err := g.printJSONResult([]int{1}, errors.New("x")); err == nil {
		t.Fatal("a list was accepted")
	}
}
