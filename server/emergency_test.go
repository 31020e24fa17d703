package server

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
)

func TestGraceEndAndRotateNow(t *testing.T) {
	e := newEnv(t)
	a := e.admin
	rot := e.token("rotate:prod")
	reader := e.token("read:prod")
	e.must(200, "PUT", "/v1/credentials/prod/signing", a, genericBody("k1"))

	// Ending grace: only with the rotate grant, only while in grace.
	r := e.must(404, "POST", "/v1/grace/prod/signing", rot, `{"end":true}`)
	if r.code() != CodeNotFound {
		t.Errorf("end without rotation: %s", r.body)
	}
	e.must(200, "POST", "/v1/rotate/prod/signing", rot, `{"grace":"30m"}`)
	e.must(403, "POST", "/v1/grace/prod/signing", reader, `{"end":true}`)
	e.must(400, "POST", "/v1/grace/prod/signing", rot, `{"end":true,"extend":"5m"}`)
	r = e.must(200, "POST", "/v1/grace/prod/signing", rot, `{"end":true,"reason":"moved"}`)
	if g := r.json(t); g["step"] != "retired" || g["open"] != false || g["from_version"] != 1.0 {
		t.Errorf("end grace: %s", r.body)
	}

	// Emergency rotation: the rotate grant plus the explicit flag.
	e.must(200, "POST", "/v1/rotate/prod/signing", rot, `{"grace":"30m"}`)
	e.must(403, "POST", "/v1/rotate/prod/signing", reader, `{"now":true}`)
	e.must(400, "POST", "/v1/rotate/prod/signing", rot, `{"now":true,"grace":"5m"}`)
	r = e.must(200, "POST", "/v1/rotate/prod/signing", rot, `{"now":true,"reason":"leaked"}`)
	out := r.json(t)
	nr := out["rotation"].(map[string]any)
	if nr["step"] != "retired" || nr["from_version"] != 3.0 || nr["to_version"] != 4.0 {
		t.Errorf("emergency rotation: %s", r.body)
	}
	if ge := out["grace_ended"].(map[string]any); ge["from_version"] != 2.0 {
		t.Errorf("grace ended: %s", r.body)
	}
	if rv := out["revoked"].([]any); len(rv) != 2 || rv[0].(map[string]any)["version"] != 2.0 || rv[1].(map[string]any)["version"] != 3.0 {
		t.Errorf("revoked: %s", r.body)
	}
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var ended, emergency int
	for _, rc := range recs {
		switch rc.Action {
		case "grace.end":
			ended++
		case "rotate.emergency":
			emergency++
		}
	}
	if ended != 2 || emergency != 2 {
		t.Errorf("audit: %d grace.end (want 2), %d rotate.emergency (want 2)", ended, emergency)
	}
}

func TestRotateDuringGraceAnswersRetryAfter(t *testing.T) {
	e := newEnv(t)
	a := e.admin
	e.must(200, "PUT", "/v1/credentials/prod/signing", a, genericBody("k1"))
	r := e.must(200, "POST", "/v1/rotate/prod/signing", a, `{"grace":"30m"}`)
	end, err := time.Parse(time.RFC3339Nano, r.json(t)["grace_ends_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{``, `{"wait":true}`} {
		// Without wait: refused. With wait: the grace outlasts the request's
		// deadline, so it is refused at once instead of timing out.
		r = e.must(409, "POST", "/v1/rotate/prod/signing", a, body)
		if r.code() != CodeRotationInProgress {
			t.Errorf("%s: code %q", body, r.code())
		}
		ra, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ra < 1700 || ra > 1800 {
			t.Errorf("%s: Retry-After %q", body, r.header.Get("Retry-After"))
		}
		got, _ := r.json(t)["error"].(map[string]any)["grace_ends_at"].(string)
		if gt, err := time.Parse(time.RFC3339Nano, got); err != nil || gt.Sub(end).Abs() > time.Millisecond {
			t.Errorf("%s: grace_ends_at %v, want %s", body, got, end)
		}
	}
	if !strings.Contains(string(r.body), "deadline") {
		t.Errorf("wait past the deadline: %s", r.body)
	}
}
