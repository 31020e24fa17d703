package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// The smaller findings of issue 10, each with the request that showed it.

func TestWatchWithoutReadIs403(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/prod/a", e.admin, genericBody("k"))
	for _, tc := range []struct {
		grants []string
		query  string
		status int
	}{
		{[]string{"write:prod/"}, "", 403},
		{[]string{"rotate:prod/", "delete:prod/"}, "", 403},
		{[]string{"use:prod/"}, "", 403},
		{[]string{"read:dev/"}, "?prefix=prod/", 403},
	} {
		tok := e.token(tc.grants...)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/v1/watch"+tc.query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		res.Body.Close()
		cancel()
		if res.StatusCode != tc.status {
			t.Errorf("watch%s with %v: %d, want %d: %s", tc.query, tc.grants, res.StatusCode, tc.status, b)
		}
		if res.StatusCode == 403 && !strings.Contains(string(b), "no read grant") {
			t.Errorf("watch 403 does not say which grant is missing: %s", b)
		}
	}
	// A read grant anywhere still opens the stream.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, res := e.openWatch(ctx, "", e.token("read:prod/"), "")
	if res.StatusCode != 200 {
		t.Fatalf("watch with read:prod/: %d", res.StatusCode)
	}
}

func TestAuditListMatchesOnlyValidIDs(t *testing.T) {
	e := newEnv(t)
	other := e.token("write:staging/")
	// A rejected request whose raw ID starts with "prod/".
	r := e.do("PUT", "/v1/credentials/prod/%2E%2E/staging/x", other, genericBody("k"))
	if r.status < 400 {
		t.Fatalf("put with .. segment: %d", r.status)
	}
	e.must(200, "PUT", "/v1/credentials/prod/visible", e.admin, genericBody("k"))
	reader := e.token("read:prod/")
	var got []map[string]any
	b := e.must(200, "GET", "/v1/audit?limit=1000", reader, nil).json(t)
	for _, x := range b["entries"].([]any) {
		got = append(got, x.(map[string]any))
	}
	saw := false
	for _, en := range got {
		id, _ := en["credential_id"].(string)
		if strings.Contains(id, "..") {
			t.Errorf("read:prod/ token sees an entry for %q (actor %v)", id, en["actor"])
		}
		if id == "prod/visible" {
			saw = true
		}
	}
	if !saw {
		t.Errorf("read:prod/ token does not see the entry of prod/visible: %v", got)
	}
}

func TestMalformedQueryIs400(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/a/b", e.admin, genericBody("k"))
	for _, q := range []string{"?prefix=%zz", "?prefix=a%2", "?limit=1;prefix=x", "?after=%"} {
		r := e.do("GET", "/v1/credentials"+q, e.admin, nil)
		if r.status != 400 || r.code() != CodeInvalid {
			t.Errorf("GET /v1/credentials%s: %d %s, want 400", q, r.status, r.body)
		}
		if strings.Contains(string(r.body), `"credentials"`) {
			t.Errorf("GET /v1/credentials%s answered a list", q)
		}
	}
	r := e.do("GET", "/v1/audit?after=%zz", e.admin, nil)
	if r.status != 400 {
		t.Errorf("audit with malformed query: %d", r.status)
	}
}

func TestNonJSONBodiesAre415(t *testing.T) {
	e := newEnv(t)
	body := `{"type":"generic","secret":{"k":"v"}}`
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "garbage", "text/json", "application/xml", ";;;"} {
		req, _ := http.NewRequest("PUT", e.ts.URL+"/v1/credentials/x", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		req.Header.Set("Content-Type", ct)
		res, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 415 || !strings.Contains(string(b), CodeUnsupportedMediaType) {
			t.Errorf("Content-Type %q: %d %s, want 415", ct, res.StatusCode, b)
		}
	}
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"} {
		req, _ := http.NewRequest("PUT", e.ts.URL+"/v1/credentials/x", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		res, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("Content-Type %q: %d %s, want 200", ct, res.StatusCode, b)
		}
	}
	if r := e.do("GET", "/v1/credentials/x", e.admin, nil); r.status != 200 {
		t.Fatalf("credential not stored: %d", r.status)
	}
}

func TestInvalidUTF8SecretIs400(t *testing.T) {
	e := newEnv(t)
	for name, body := range map[string]string{
		"raw bytes":          "{\"type\":\"generic\",\"secret\":{\"k\":\"\xff\xfe\"}}",
		"lone high":          `{"type":"generic","secret":{"k":"a\ud800b"}}`,
		"lone low":           `{"type":"generic","secret":{"k":"\udc00"}}`,
		"high then not low":  `{"type":"generic","secret":{"k":"\ud800\u0041"}}`,
		"high at end":        `{"type":"generic","secret":{"k":"\ud83d"}}`,
		"raw bytes in field": "{\"type\":\"generic\",\"fields\":{\"f\":\"\xc3\"},\"secret\":{\"k\":\"v\"}}",
	} {
		r := e.do("PUT", "/v1/credentials/u8", e.admin, body)
		if r.status != 400 || r.code() != CodeInvalid {
			t.Errorf("%s: %d %s, want 400", name, r.status, r.body)
		}
	}
	if r := e.do("GET", "/v1/credentials/u8", e.admin, nil); r.status != 404 {
		t.Errorf("a refused secret was stored: %d", r.status)
	}
	// Valid text, surrogate pairs and escaped backslashes are kept exactly.
	want := "é😀\\ud800\uFFFD"
	j, _ := json.Marshal(map[string]any{"type": "generic", "secret": map[string]string{"k": want}})
	e.must(200, "PUT", "/v1/credentials/u8", e.admin, `{"type":"generic","secret":{"k":"\u00e9\ud83d\ude00\\ud800\ufffd"}}`)
	got := e.must(200, "GET", "/v1/credentials/u8?reveal=true", e.admin, nil).json(t)
	if s := got["secret"].(map[string]any)["k"]; s != want {
		t.Errorf("secret came back as %q, want %q (%s)", s, want, j)
	}
}

func TestSettingsValidatedWhenWritten(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/db/a", e.admin, pgBody("pw-1"))
	bad := []string{
		`{"strategy":"bogus"}`,
		`{"strategy":"reissue"}`, // the test rotator does not reissue
		`{"policies":[{"kind":"periodic","interval":"0s"}]}`,
		`{"policies":[{"kind":"periodic","interval":"-1h"}]}`,
		`{"policies":[{"kind":"scheduled","cron":"every tuesday"}]}`,
		`{"grace":"-1m"}`,
		`{"policies":[{"kind":"sometimes"}]}`,
		`{"backoff":{"attempts":-1}}`,
	}
	for _, b := range bad {
		r := e.do("PUT", "/v1/policy/db/a", e.admin, b)
		if r.status != 400 || r.code() != CodeInvalid {
			t.Errorf("PUT /v1/policy %s: %d %s, want 400", b, r.status, r.body)
		}
		var s map[string]any
		_ = json.Unmarshal([]byte(b), &s)
		body := pgBody("pw-2")
		body["settings"] = s
		if r := e.do("PUT", "/v1/credentials/db/a", e.admin, body); r.status != 400 {
			t.Errorf("PUT credential with settings %s: %d %s, want 400", b, r.status, r.body)
		}
	}
	caps := e.target.Rotator().Capabilities().Strategies
	e.must(200, "PUT", "/v1/policy/db/a", e.admin, fmt.Sprintf(`{"strategy":%q,"policies":[{"kind":"scheduled","cron":"0 3 * * *"}]}`, caps[0]))
}

// Paging the audit log to an empty page terminates although each read is
// itself audited.
func TestAuditPagingTerminates(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.must(200, "PUT", fmt.Sprintf("/v1/credentials/p/%d", i), e.admin, genericBody("k"))
	}
	after := "0"
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("paging the audit log with limit=2 did not reach an empty page in 50 requests")
		}
		b := e.must(200, "GET", "/v1/audit?limit=2&after="+after, e.admin, nil).json(t)
		if len(b["entries"].([]any)) == 0 {
			break
		}
		after = fmt.Sprint(int64(b["next"].(float64)))
	}
}

// TestStoreUnreachableIs503: a store that cannot be reached (PostgreSQL
// restarting) is an outage clients retry, not an internal error.
func TestStoreUnreachableIs503(t *testing.T) {
	err := fmt.Errorf("postgres: get x: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	ae := classify(err)
	if ae.status != http.StatusServiceUnavailable || ae.code != CodeUnavailable || ae.retryAfter == 0 {
		t.Fatalf("classify(%v) = %d %s retry-after %v", err, ae.status, ae.code, ae.retryAfter)
	}
	if ae := classify(errors.New("something else")); ae.status != http.StatusInternalServerError {
		t.Fatalf("a plain error became %d", ae.status)
	}
}
