package vault

import (
	"encoding/json"
	"reflect"
	"testing"
)

var flatSeeds = []string{
	`{}`, `{"password":"0123456789abcdef"}`, `{"a":"x","b":"y"}`, `{"a":"x","a":"y"}`,
	`{"host":"db.internal","port":5432,"username":"app"}`, `{"t":true,"f":false,"n":null}`,
	`{"x":-0.5e+3,"y":0,"z":1E9,"w":-0}`, `{"big":1e400}`, `{"bad":01}`, `{"bad":1.}`, `{"bad":.5}`,
	`{"bad":+1}`, `{"bad":1e}`, `{"bad":0x10}`, `{"bad":Infinity}`, `{"bad":nul}`, `{"bad":truex}`,
	`{"esc":"a\"b"}`, `{"esc":"\u0026"}`, `{"ctl":"a` + "\x01" + `"}`, `{"utf8":"héllo ✓"}`,
	`{"utf8":"` + "\xff" + `"}`, `{"nested":{"a":1}}`, `{"arr":[1,2]}`, ` {"a":"b"}`, `{"a": "b"}`,
	`{"a":"b",}`, `{"a":"b"}}`, `{"a":"}`, `{"a"}`, `{"a":}`, `{`, `}`, ``, `null`, `[]`, `{"":""}`,
	`{"a":"x","b":"}`, `{"a":1,"b":2}x`,
}

// TestFlatDecodersMatchEncodingJSON: what the fast decoders accept, they
// decode exactly as json.Unmarshal does, and they never accept what it refuses.
func TestFlatDecodersMatchEncodingJSON(t *testing.T) {
	accepted := 0
	for _, s := range flatSeeds {
		if checkFlat(t, []byte(s)) {
			accepted++
		}
	}
	if accepted < 6 {
		t.Fatalf("the fast path accepted only %d seeds", accepted)
	}
	// What Seal writes for the benchmarks' credential takes the fast path.
	if _, ok := decodeFields([]byte(`{"host":"db.internal","port":5432,"username":"app"}`)); !ok {
		t.Fatal("decodeFields refused the fields json.Marshal writes")
	}
	if _, ok := decodeSecret([]byte(`{"password":"0123456789abcdef0123456789abc000"}`)); !ok {
		t.Fatal("decodeSecret refused the secret json.Marshal writes")
	}
}

func FuzzFlatDecoders(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFlat(t, b) })
}

// checkFlat compares both fast decoders with encoding/json on b and reports
// whether either took the fast path.
func checkFlat(t *testing.T, b []byte) bool {
	t.Helper()
	fast := false
	var wantF map[string]any
	errF := json.Unmarshal(b, &wantF)
	if got, ok := decodeFields(b); ok {
		fast = true
		if errF != nil {
			t.Errorf("decodeFields(%q) accepted what json.Unmarshal refuses: %v", b, errF)
		} else if !reflect.DeepEqual(got, wantF) {
			t.Errorf("decodeFields(%q) = %#v, json.Unmarshal: %#v", b, got, wantF)
		}
	}
	var wantS map[string]string
	errS := json.Unmarshal(b, &wantS)
	if got, ok := decodeSecret(b); ok {
		fast = true
		if errS != nil {
			t.Errorf("decodeSecret(%q) accepted what json.Unmarshal refuses: %v", b, errS)
		} else {
			plain := map[string]string{}
			for k, v := range got {
				plain[k] = v.Reveal()
			}
			if wantS == nil || !reflect.DeepEqual(plain, wantS) {
				t.Errorf("decodeSecret(%q) = %q, json.Unmarshal: %q", b, plain, wantS)
			}
		}
	}
	// The fallbacks give what the code before them gave.
	if gotF, err := unmarshalFields(b); (err != nil) != (errF != nil) || (err == nil && !reflect.DeepEqual(gotF, wantF)) {
		t.Errorf("unmarshalFields(%q) = %#v, %v; json.Unmarshal: %#v, %v", b, gotF, err, wantF, errF)
	}
	if _, err := unmarshalSecret(b); (err != nil) != (errS != nil) {
		t.Errorf("unmarshalSecret(%q): %v; json.Unmarshal: %v", b, err, errS)
	}
	return fast
}
