package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestAppendEntryMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 456789000, time.UTC)
	plain := Entry{At: at, Actor: "token:tok_0123456789ab", Action: "credential.get", CredentialID: "prod/db/orders",
		Outcome: "allowed", RequestID: "0123456789abcdef", Detail: "reveal"}
	cases := []struct {
		name string
		edit func(*Entry)
		fast bool // appendEntry encodes it itself
	}{
		{"plain", func(*Entry) {}, true},
		{"versions", func(e *Entry) { e.FromVersion, e.ToVersion = 3, -4 }, true},
		{"empty", func(e *Entry) { *e = Entry{At: time.Unix(0, 0).UTC()} }, true},
		{"whole second", func(e *Entry) { e.At = at.Truncate(time.Second) }, true},
		{"quote", func(e *Entry) { e.Detail = `a"b` }, false},
		{"backslash", func(e *Entry) { e.Detail = `a\b` }, false},
		{"html", func(e *Entry) { e.Detail = "token <x> & y" }, false},
		{"control", func(e *Entry) { e.Detail = "a\tb" }, false},
		{"unicode", func(e *Entry) { e.Actor = "é\u2028" }, false},
		{"invalid UTF-8", func(e *Entry) { e.CredentialID = "\xff" }, false},
		{"local time", func(e *Entry) { e.At = at.In(time.FixedZone("x", 3600)) }, false},
		{"year 10000", func(e *Entry) { e.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
	}
	for _, tc := range cases {
		e := plain
		tc.edit(&e)
		got, ok := appendEntry(nil, &e)
		if ok != tc.fast {
			t.Errorf("%s: fast path %v, want %v", tc.name, ok, tc.fast)
		}
		if !ok {
			continue
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, want)
		}
	}
}

func FuzzAppendEntry(f *testing.F) {
	f.Add(int64(1765000000), "token:tok_x", "credential.get", "prod/db", "allowed", "req-1", "reveal", 0, 2)
	f.Add(int64(-1), "a\"<", "\x00", "é", "", "\u2028", "\xff", -1, 0)
	f.Fuzz(func(t *testing.T, unix int64, actor, action, id, outcome, req, detail string, from, to int) {
		e := Entry{At: time.Unix(unix%(1<<37), unix%1e9).UTC(), Actor: actor, Action: action, CredentialID: id,
			FromVersion: from, ToVersion: to, Outcome: outcome, RequestID: req, Detail: detail}
		got, ok := appendEntry(nil, &e)
		want, err := json.Marshal(e)
		if !ok {
			return
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s (%v)", got, want, err)
		}
	})
}
