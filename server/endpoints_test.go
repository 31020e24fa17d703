package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

func TestEndpoints(t *testing.T) {
	e := newEnv(t)
	a := e.admin

	// Health, readiness (no scheduler yet), OpenAPI.
	e.must(200, "GET", "/healthz", "", nil)
	r := e.must(503, "GET", "/readyz", "", nil)
	if got := r.json(t)["scheduler"]; got != "stopped" {
		t.Errorf("readyz scheduler = %v", got)
	}
	r = e.must(200, "GET", "/v1/openapi.json", "", nil)
	if !bytes.Contains(r.body, []byte(`"openapi"`)) {
		t.Error("openapi.json has no openapi field")
	}

	// Put and get, redacted and revealed.
	r = e.must(200, "PUT", "/v1/credentials/prod/db/orders", a, pgBody("hunter2-secret"))
	if v := r.json(t)["version"]; v != 1.0 {
		t.Errorf("put version = %v", v)
	}
	if bytes.Contains(r.body, []byte("hunter2-secret")) {
		t.Error("put response reveals the secret")
	}
	r = e.must(200, "GET", "/v1/credentials/prod/db/orders", a, nil)
	got := r.json(t)
	if got["secret"].(map[string]any)["password"] != secret.Redacted || got["revealed"] != false {
		t.Errorf("get without reveal: %s", r.body)
	}
	if got["fields"].(map[string]any)["host"] != "127.0.0.1" || got["state"] != "active" {
		t.Errorf("get: %s", r.body)
	}
	r = e.must(200, "GET", "/v1/credentials/prod/db/orders?reveal=true", a, nil)
	if r.json(t)["secret"].(map[string]any)["password"] != "hunter2-secret" {
		t.Errorf("reveal: %s", r.body)
	}
	e.must(200, "PUT", "/v1/credentials/prod/db/orders", a, pgBody("second-secret"))
	r = e.must(200, "GET", "/v1/credentials/prod/db/orders?label=previous&reveal=true", a, nil)
	if r.json(t)["secret"].(map[string]any)["password"] != "hunter2-secret" {
		t.Errorf("previous: %s", r.body)
	}
	r = e.must(200, "GET", "/v1/credentials/prod/db/orders?version=2", a, nil)
	if r.json(t)["version"] != 2.0 {
		t.Errorf("version=2: %s", r.body)
	}
	e.must(404, "GET", "/v1/credentials/prod/db/orders?version=9", a, nil)
	e.must(400, "GET", "/v1/credentials/prod/db/orders?version=x", a, nil)
	e.must(400, "GET", "/v1/credentials/prod/db/orders?label=nope", a, nil)
	e.must(400, "GET", "/v1/credentials/Bad_ID", a, nil)
	e.must(404, "GET", "/v1/credentials/prod/missing", a, nil)

	// List with paging.
	e.must(200, "PUT", "/v1/credentials/prod/signing", a, genericBody("k1"))
	e.must(200, "PUT", "/v1/credentials/dev/signing", a, genericBody("k2"))
	r = e.must(200, "GET", "/v1/credentials?prefix=prod/", a, nil)
	if n := len(r.json(t)["credentials"].([]any)); n != 2 {
		t.Errorf("list prod/: %d items: %s", n, r.body)
	}
	r = e.must(200, "GET", "/v1/credentials?limit=2", a, nil)
	page := r.json(t)
	if len(page["credentials"].([]any)) != 2 || page["next"] != "prod/db/orders" {
		t.Errorf("page 1: %s", r.body)
	}
	r = e.must(200, "GET", "/v1/credentials?limit=2&after=prod/db/orders", a, nil)
	if page := r.json(t); len(page["credentials"].([]any)) != 1 || page["next"] != "" {
		t.Errorf("page 2: %s", r.body)
	}
	e.must(200, "GET", "/v1/credentials?type=postgres", a, nil)
	e.must(400, "GET", "/v1/credentials?type=nope", a, nil)
	e.must(400, "GET", "/v1/credentials?limit=0", a, nil)

	// History.
	r = e.must(200, "GET", "/v1/history/prod/db/orders", a, nil)
	h := r.json(t)
	if len(h["versions"].([]any)) != 2 || len(h["events"].([]any)) != 2 {
		t.Errorf("history: %s", r.body)
	}
	if ev := h["events"].([]any)[0].(map[string]any); !strings.HasPrefix(ev["actor"].(string), "token:tok_") {
		t.Errorf("history actor: %v", ev["actor"])
	}

	// Policy.
	r = e.must(200, "GET", "/v1/policy/prod/signing", a, nil)
	if r.json(t)["grace"] != "5m0s" {
		t.Errorf("policy: %s", r.body)
	}
	r = e.must(200, "PUT", "/v1/policy/prod/signing", a, `{"grace":"10m","policies":[{"kind":"periodic","interval":"30d"}]}`)
	if p := r.json(t); p["grace"] != "10m0s" || p["next_rotation_at"] == nil {
		t.Errorf("policy put: %s", r.body)
	}
	e.must(400, "PUT", "/v1/policy/prod/signing", a, `{"policies":[{"kind":"weekly"}]}`)
	e.must(400, "PUT", "/v1/policy/prod/signing", a, `{"grace":"soon"}`)

	// Rotate (generic rotator), grace, rollback, rotations, doctor.
	r = e.must(200, "POST", "/v1/rotate/prod/signing", a, `{"reason":"test","grace":"30m"}`)
	rot := r.json(t)
	if rot["step"] != "grace" || rot["from_version"] != 1.0 || rot["to_version"] != 2.0 {
		t.Errorf("rotate: %s", r.body)
	}
	r = e.must(409, "POST", "/v1/rotate/prod/signing", a, nil)
	if r.code() != CodeRotationInProgress {
		t.Errorf("second rotate code %q", r.code())
	}
	r = e.must(200, "POST", "/v1/grace/prod/signing", a, `{"extend":"30m"}`)
	if r.json(t)["grace_ends_at"] == nil {
		t.Errorf("grace: %s", r.body)
	}
	e.must(400, "POST", "/v1/grace/prod/signing", a, `{"extend":"-5m"}`)
	e.must(400, "POST", "/v1/grace/prod/signing", a, `{}`)
	r = e.must(200, "GET", "/v1/rotations?id=prod/signing&open=true", a, nil)
	if n := len(r.json(t)["rotations"].([]any)); n != 1 {
		t.Errorf("open rotations: %s", r.body)
	}
	r = e.must(200, "GET", "/v1/doctor/prod/signing", a, nil)
	if r.json(t)["credential_id"] != "prod/signing" {
		t.Errorf("doctor: %s", r.body)
	}
	r = e.must(200, "POST", "/v1/rollback/prod/signing", a, `{"reason":"oops"}`)
	if rb := r.json(t); rb["step"] != "rolled_back" {
		t.Errorf("rollback: %s", r.body)
	}
	r = e.must(409, "POST", "/v1/rollback/prod/signing", a, nil)
	if r.code() != CodeGraceEnded {
		t.Errorf("rollback after grace code %q: %s", r.code(), r.body)
	}
	r = e.must(200, "POST", "/v1/rollback/prod/signing", a, `{"to_version":2}`)
	if rb := r.json(t); rb["kind"] != "restore" {
		t.Errorf("rollback to version: %s", r.body)
	}
	e.must(404, "POST", "/v1/rollback/prod/dev", a, `{"to_version":2}`)
	e.must(200, "GET", "/v1/rotations", a, nil)
	e.must(404, "GET", "/v1/rotations?id=prod/nothing", a, nil)
	e.must(409, "POST", "/v1/resolve/prod/signing", a, `{"keep":1}`)

	// Delete, restore by put, purge.
	e.must(409, "DELETE", "/v1/credentials/prod/signing", a, nil) // open rotation (grace of the restore)
	r = e.must(200, "DELETE", "/v1/credentials/dev/signing", a, nil)
	if r.json(t)["deleted"] != true {
		t.Errorf("delete: %s", r.body)
	}
	e.must(200, "DELETE", "/v1/credentials/dev/signing", a, nil) // idempotent
	e.must(404, "GET", "/v1/credentials/dev/signing", a, nil)
	r = e.must(200, "GET", "/v1/credentials?deleted=true&prefix=dev/", a, nil)
	if n := len(r.json(t)["credentials"].([]any)); n != 1 {
		t.Errorf("deleted list: %s", r.body)
	}
	e.must(200, "DELETE", "/v1/credentials/dev/signing?purge=true", a, nil)
	e.must(404, "DELETE", "/v1/credentials/dev/signing?purge=true", a, nil)
	e.must(404, "DELETE", "/v1/credentials/dev/never?purge=true", a, nil)

	// Tokens.
	r = e.must(201, "POST", "/v1/tokens", a, `{"name":"ci","grants":["read:prod/","rotate:prod/db"],"ttl":"30d"}`)
	tok := r.json(t)
	val := tok["token"].(string)
	if !strings.HasPrefix(val, TokenPrefix) || tok["expires_at"] == nil {
		t.Errorf("token create: %s", r.body)
	}
	e.must(200, "GET", "/v1/credentials/prod/db/orders?reveal=true", val, nil)
	r = e.must(200, "GET", "/v1/tokens", a, nil)
	if bytes.Contains(r.body, []byte(val)) {
		t.Error("token list shows a token value")
	}
	if n := len(r.json(t)["tokens"].([]any)); n != 2 {
		t.Errorf("tokens: %s", r.body)
	}
	e.must(400, "POST", "/v1/tokens", a, `{"name":"x","grants":["root:*"]}`)
	e.must(400, "POST", "/v1/tokens", a, `{"name":"x","grants":[]}`)
	e.must(400, "POST", "/v1/tokens", a, `{"name":"","grants":["read"]}`)
	e.must(200, "DELETE", "/v1/tokens/"+tok["id"].(string), a, nil)
	e.must(404, "DELETE", "/v1/tokens/"+tok["id"].(string), a, nil)
	r = e.must(401, "GET", "/v1/credentials/prod/db/orders", val, nil)
	if r.code() != CodeUnauthenticated {
		t.Errorf("revoked token: %s", r.body)
	}

	// Keys.
	r = e.must(200, "GET", "/v1/keys", a, nil)
	if n := len(r.json(t)["keys"].([]any)); n != 1 {
		t.Errorf("keys: %s", r.body)
	}
	r = e.must(200, "POST", "/v1/keys/rotate", a, nil)
	if r.json(t)["new_kek"] == "" {
		t.Errorf("key rotate: %s", r.body)
	}
	e.must(200, "GET", "/v1/credentials/prod/db/orders?reveal=true", a, nil)

	// Backup and restore.
	r = e.must(200, "POST", "/v1/backup", a, nil)
	if r.header.Get("X-Backup-Credentials") == "" || len(r.body) < 100 {
		t.Errorf("backup: trailers %v, %d bytes", r.header, len(r.body))
	}
	backup := r.body
	e.must(200, "PUT", "/v1/credentials/prod/db/orders", a, pgBody("third-secret"))
	r = e.must(200, "POST", "/v1/restore?only=prod/db/orders", a, backup)
	if r.json(t)["credentials"] != 1.0 {
		t.Errorf("restore: %s", r.body)
	}
	r = e.must(200, "GET", "/v1/credentials/prod/db/orders?reveal=true", a, nil)
	if r.json(t)["secret"].(map[string]any)["password"] != "second-secret" {
		t.Errorf("after restore: %s", r.body)
	}
	bad := bytes.Clone(backup)
	bad[len(bad)-10] ^= 1
	r = e.must(400, "POST", "/v1/restore", a, bad)
	if r.code() != CodeBadBackup {
		t.Errorf("altered backup: %s", r.body)
	}
	e.must(400, "POST", "/v1/restore", a, backup[:len(backup)/2])

	// Audit.
	r = e.must(200, "GET", "/v1/audit?limit=1000", a, nil)
	entries := r.json(t)["entries"].([]any)
	if len(entries) < 20 {
		t.Errorf("only %d audit entries", len(entries))
	}
	var sawReveal, sawPut, sawRotate bool
	for _, x := range entries {
		en := x.(map[string]any)
		if en["request_id"] == "" || en["request_id"] == nil {
			if strings.HasPrefix(en["actor"].(string), "token:") && en["action"] != "token.create" {
				t.Errorf("entry without request ID: %v", en)
			}
		}
		switch {
		case en["action"] == "credential.get" && en["detail"] == "reveal":
			sawReveal = true
		case en["action"] == "credential.put" && en["outcome"] == "ok":
			sawPut = true
		case en["action"] == "rotate.planned" && strings.HasPrefix(en["actor"].(string), "token:"):
			sawRotate = true
		}
	}
	if !sawReveal || !sawPut || !sawRotate {
		t.Errorf("audit misses reveal=%v put=%v rotate=%v", sawReveal, sawPut, sawRotate)
	}
	r = e.must(200, "GET", "/v1/audit/verify", a, nil)
	if r.json(t)["ok"] != true {
		t.Errorf("verify: %s", r.body)
	}
	e.must(400, "GET", "/v1/audit/verify?anchor=zz", a, nil)
	e.must(400, "GET", "/v1/audit?after=-1", a, nil)

	// Unknown routes and methods answer in JSON.
	r = e.must(404, "GET", "/v1/nothing", a, nil)
	if r.code() != CodeNotFound {
		t.Errorf("unknown route: %s", r.body)
	}
	r = e.must(405, "POST", "/v1/credentials/prod/db/orders", a, nil)
	if r.code() != CodeMethodNotAllowed || !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Errorf("wrong method: %v %s", r.header, r.body)
	}
}

func TestRotationFailureCarriesRotation(t *testing.T) {
	e := newEnv(t)
	a := e.admin
	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": "pw-1"}))
	e.must(200, "PUT", "/v1/credentials/prod/db", a, pgBody("pw-1"))
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassAuth, Message: "login failed for $SECRET"})
	r := e.must(502, "POST", "/v1/rotate/prod/db", a, nil)
	var body errorBody
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Error.Code != CodeRotationFailed || body.Error.Rotation == nil || body.Error.Rotation.Step != "rolled_back" {
		t.Errorf("failed rotation: %s", r.body)
	}
	if strings.Contains(string(r.body), "pw-") {
		t.Errorf("error reveals a secret: %s", r.body)
	}
	// A transient failure schedules a retry: 503 with Retry-After and the row.
	e.target.FailNext("apply", rotatortest.Failure{Class: rotator.ClassTransient, Message: "connection reset"})
	r = e.must(503, "POST", "/v1/rotate/prod/db", a, nil)
	if r.code() != CodeRetryScheduled || r.header.Get("Retry-After") == "" {
		t.Errorf("retry: %v %s", r.header, r.body)
	}
	r = e.must(200, "POST", "/v1/retry/prod/db", a, nil)
	if r.json(t)["step"] != "grace" {
		t.Errorf("retry: %s", r.body)
	}
}

func TestBodies(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	a := e.admin
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{"", 400, CodeInvalid},
		{"{", 400, CodeInvalid},
		{"[]", 400, CodeInvalid},
		{`{"type":"postgres"}`, 400, CodeInvalid},
		{`{"type":"nope","secret":{"a":"b"}}`, 400, CodeInvalid},
		{`{"type":"generic","secret":{"k":"v"},"extra":1}`, 400, CodeInvalid},
		{`{"type":"generic","secret":{"k":123456}}`, 400, CodeInvalid},
		{`{"type":"generic","secret":{"k":"v"}} {}`, 400, CodeInvalid},
		{`{"type":"generic","secret":{"k":"` + strings.Repeat("x", 2000) + `"}}`, 413, CodeTooLarge},
	} {
		r := e.do("PUT", "/v1/credentials/x", a, tc.body)
		if r.status != tc.status || r.code() != tc.code {
			t.Errorf("body %.40q: %d %s, want %d %s", tc.body, r.status, r.body, tc.status, tc.code)
		}
		if strings.Contains(string(r.body), "123456") {
			t.Errorf("error quotes a secret: %s", r.body)
		}
	}
	req, _ := http.NewRequest("PUT", e.ts.URL+"/v1/credentials/x", strings.NewReader(`{"type":"generic","secret":{"k":"v"}}`))
	req.Header.Set("Authorization", "Bearer "+a)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	res, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 415 {
		t.Errorf("multipart body: %d", res.StatusCode)
	}
}

func TestRequestIDAndAuth(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.ts.URL+"/v1/credentials", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("X-Request-ID", "abc-123")
	res, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Request-ID"); got != "abc-123" {
		t.Errorf("request ID echoed as %q", got)
	}
	req.Header.Set("X-Request-ID", "bad id with spaces")
	res, err = e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Request-ID"); len(got) != 16 {
		t.Errorf("generated request ID %q", got)
	}

	for _, tok := range []string{"", "nct_nope", "garbage"} {
		r := e.do("GET", "/v1/credentials", tok, nil)
		if r.status != 401 || r.code() != CodeUnauthenticated || r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("token %q: %d %s", tok, r.status, r.body)
		}
	}
	// Authentication failures are audited.
	recs, err := audit.List(t.Context(), e.m.Store(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Action == "auth" && r.Outcome == "denied" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d audited authentication failures, want 3", n)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit, c.RateBurst = 1, 3 })
	codes := map[int]int{}
	for range 6 {
		codes[e.do("GET", "/v1/credentials", e.admin, nil).status]++
	}
	if codes[200] != 3 || codes[429] != 3 {
		t.Errorf("statuses %v, want 3×200 and 3×429", codes)
	}
	// Another token has its own budget.
	other := e.token("read:*")
	e.must(200, "GET", "/v1/credentials", other, nil)
}

func TestExpiredToken(t *testing.T) {
	e := newEnv(t)
	_, val, err := CreateToken(t.Context(), e.m.Store(), TokenRequest{Name: "old", Grants: mustGrants(t, "read"), TTL: time.Hour, Now: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/v1/credentials", val.Reveal(), nil); r.status != 401 {
		t.Errorf("expired token: %d %s", r.status, r.body)
	}
	_, val, err = CreateToken(t.Context(), e.m.Store(), TokenRequest{Name: "new", Grants: mustGrants(t, "read"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.must(200, "GET", "/v1/credentials", val.Reveal(), nil)
	if _, err := New(Config{}); err == nil {
		t.Error("New without a Manager")
	}
}

func TestReadyWithScheduler(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.m.Engine().Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(patience)
	for !e.m.Engine().Running() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r := e.must(200, "GET", "/readyz", "", nil)
	if got := r.json(t); got["store"] != "ok" || got["scheduler"] != "running" {
		t.Errorf("readyz: %s", r.body)
	}
}
