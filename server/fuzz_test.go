package server

import (
	"bytes"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fuzzServe sends body to method path on a server shared by the fuzz run and
// requires a well-formed answer that is not a 5xx.
func fuzzServe(f *testing.F, method, path string, seeds ...string) {
	e := newEnv(f, func(c *Config) { c.MaxBodyBytes = 4096 })
	for _, id := range []string{"prod/db", "prod/gen"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("PUT", "/v1/credentials/"+id, strings.NewReader(`{"type":"generic","secret":{"key":"seed-secret-value"}}`))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		e.srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			f.Fatalf("seed put: %d %s", rec.Code, rec.Body)
		}
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte{})
	f.Add([]byte("{"))
	f.Add([]byte("null"))
	f.Add([]byte(`{"a":1}`))
	f.Add(bytes.Repeat([]byte("x"), 5000))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		e.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with body %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			if !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"error":{"code":"`)) {
				t.Fatalf("error is not JSON: %s", rec.Body)
			}
			if len(body) > 4096 && rec.Code != 413 && rec.Code != 400 {
				t.Fatalf("oversized body: %d", rec.Code)
			}
		}
		if bytes.Contains(rec.Body.Bytes(), []byte("seed-secret-value")) {
			t.Fatalf("response reveals a secret: %s", rec.Body)
		}
	})
}

func FuzzPutBody(f *testing.F) {
	fuzzServe(f, "PUT", "/v1/credentials/prod/db",
		`{"type":"generic","secret":{"key":"v"}}`,
		`{"type":"postgres","fields":{"host":"h","username":"u"},"secret":{"password":"p"}}`,
		`{"type":"generic","secret":{"key":"v"},"expires_at":"2030-01-01T00:00:00Z","settings":{"grace":"1m","policies":[{"kind":"periodic","interval":"30d"}]}}`,
		`{"type":"generic","secret":{"key":1}}`,
		`{"type":"generic","fields":{"Bad Name":1},"secret":{"key":"v"}}`,
		`{"type":"generic","secret":{"key":"v"},"settings":{"policies":[{"kind":"scheduled","cron":"bad"}]}}`,
	)
}

func FuzzRotateBody(f *testing.F) {
	fuzzServe(f, "POST", "/v1/rotate/prod/gen",
		`{"grace":"0"}`, `{"grace":"-1m"}`, `{"grace":1e300}`, `{"reason":"x","no_validate":true}`, `{"grace":"1d2h"}`)
}

func FuzzRollbackBody(f *testing.F) {
	fuzzServe(f, "POST", "/v1/rollback/prod/gen", `{"to_version":1}`, `{"to_version":-1}`, `{"to_version":1e99}`, `{"reason":"r"}`)
}

func FuzzPolicyBody(f *testing.F) {
	fuzzServe(f, "PUT", "/v1/policy/prod/gen",
		`{"grace":"10m","policies":[{"kind":"periodic","interval":"30d","jitter":"1d"}]}`,
		`{"policies":[{"kind":"before_expiry","fraction":0.8}]}`,
		`{"policies":[{"kind":"scheduled","cron":"0 3 * * 1","window":"2h"}]}`,
		`{"strategy":"dual","retention":3,"validate":false,"backoff":{"base":"1s","cap":"1m","attempts":3}}`,
		`{"retention":-1}`, `{"grace":"-5m"}`)
}

func FuzzGraceBody(f *testing.F) {
	fuzzServe(f, "POST", "/v1/grace/prod/gen", `{"extend":"30m"}`, `{"extend":0}`, `{"extend":"9999999999h"}`)
}

func FuzzTokenBody(f *testing.F) {
	fuzzServe(f, "POST", "/v1/tokens",
		`{"name":"ci","grants":["read:prod/","rotate:prod/db"],"ttl":"30d"}`,
		`{"name":"x","grants":["admin"]}`, `{"name":"x","grants":["read:../"]}`, `{"name":"\u0000","grants":["read"]}`, `{"name":"x","grants":["read"],"ttl":"-1s"}`)
}

func FuzzRestoreBody(f *testing.F) {
	fuzzServe(f, "POST", "/v1/restore", "nebula-credential backup v1\n{}\n", "nebula-credential backup v1\n")
}

// FuzzRequestLine: any method, path and query answers without a 5xx.
func FuzzRequestLine(f *testing.F) {
	e := newEnv(f)
	for _, s := range []string{"/v1/credentials/prod/db", "/v1/credentials", "/v1/rotate/a", "/v1/watch", "/v1/audit", "/v1/tokens/x", "/", "/v1/credentials/../x", "/v1/credentials/a%2Fb"} {
		f.Add("GET", s, "reveal=true&version=1")
	}
	f.Add("DELETE", "/v1/credentials/a", "purge=maybe")
	f.Add("POST", "/v1/rotations", "limit=-1")
	f.Add("GET", "/v1/audit", "after=99999999999999999999")
	f.Add("GET", "/v1/credentials", "limit=5&after=\x00&type=%zz")
	f.Fuzz(func(t *testing.T, method, path, query string) {
		if method != "GET" && method != "POST" && method != "PUT" && method != "DELETE" {
			method = "GET"
		}
		if path == "" || path[0] != '/' || strings.HasPrefix(path, "/v1/watch") {
			return
		}
		u := &url.URL{Path: path, RawQuery: query}
		req := httptest.NewRequest(method, "/", nil)
		req.URL = u
		req.RequestURI = u.RequestURI()
		req.Header.Set("Authorization", "Bearer "+e.admin)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != 503 {
			t.Fatalf("%s %q ?%q: %d %s", method, path, query, rec.Code, rec.Body)
		}
	})
}
