package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	credential "github.com/nebula-credential/nebula-credential"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

func randomSecret() string {
	var b [12]byte
	rand.Read(b[:])
	return "s3cr3t-" + hex.EncodeToString(b[:])
}

// TestLogsNeverHoldSecrets captures every log line of a full session (puts,
// revealed reads, rotations, failures, bad bodies) and checks that none of
// the secrets involved, nor any token value, appears in them.
func TestLogsNeverHoldSecrets(t *testing.T) {
	e := newEnv(t)
	a := e.admin
	var secrets []string
	add := func(s string) string { secrets = append(secrets, s); return s }

	pw := add(randomSecret())
	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": pw}))
	e.must(200, "PUT", "/v1/credentials/prod/db", a, pgBody(pw))
	e.must(200, "PUT", "/v1/credentials/prod/key", a, genericBody(add(randomSecret())))
	e.must(200, "GET", "/v1/credentials/prod/db?reveal=true", a, nil)
	// Rotations generate new secrets; a failing one puts the secret in the
	// rotator's error text, which must be scrubbed before it is logged.
	e.must(200, "POST", "/v1/rotate/prod/key", a, nil)
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassAuth, Message: "password $SECRET rejected"})
	e.must(502, "POST", "/v1/rotate/prod/db", a, nil)
	e.must(200, "POST", "/v1/rotate/prod/db", a, nil)
	for _, id := range []string{"prod/db", "prod/key"} {
		for _, l := range []string{"current", "previous"} {
			r := e.must(200, "GET", "/v1/credentials/"+id+"?reveal=true&label="+l, a, nil)
			var c credential.Wire
			if err := json.Unmarshal(r.body, &c); err != nil {
				t.Fatal(err)
			}
			for _, v := range c.Secret {
				add(v)
			}
		}
	}
	// Bad requests whose bodies hold secrets.
	num := "987654321987"
	add(num)
	e.must(400, "PUT", "/v1/credentials/prod/x", a, `{"type":"generic","secret":{"k":`+num+`}}`)
	e.must(400, "PUT", "/v1/credentials/prod/x", a, `{"type":"postgres","secret":{"password":"`+add(randomSecret())+`"}}`)
	e.must(400, "PUT", "/v1/credentials/prod/x", a, `{"type":"generic","secret":{"k":"`+add(randomSecret())+`"`)
	e.must(403, "GET", "/v1/credentials/prod/db?reveal=true", e.token("read:dev"), nil)
	e.must(401, "GET", "/v1/credentials/prod/db", "nct_"+add(randomSecret()), nil)
	tok := e.must(201, "POST", "/v1/tokens", a, `{"name":"x","grants":["read"]}`).json(t)["token"].(string)
	add(tok)
	add(a)
	e.must(200, "GET", "/v1/credentials/prod/db?reveal=true", tok, nil)

	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"request"`) || !strings.Contains(logs, "request_id") {
		t.Fatalf("no access logs captured:\n%s", logs)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs contain secret %q", s)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/a/1", e.admin, genericBody("x"))
	e.must(200, "PUT", "/v1/credentials/b/1", e.admin, genericBody("x"))
	e.must(200, "POST", "/v1/rotate/a/1", e.admin, `{"grace":"1h"}`)
	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": "p"}))
	e.must(200, "PUT", "/v1/credentials/c/db", e.admin, pgBody("p"))
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassAuth, Message: "no"})
	e.must(502, "POST", "/v1/rotate/c/db", e.admin, nil)

	e.must(401, "GET", "/metrics", "", nil)
	var body string
	deadline := time.Now().Add(patience)
	for {
		body = string(e.must(200, "GET", "/metrics", e.admin, nil).body)
		if strings.Contains(body, `outcome="rolled_back"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{
		`nebula_credential_http_requests_total{code="200",route="PUT /v1/credentials/{id...}"}`,
		`nebula_credential_http_request_duration_seconds_bucket{route="POST /v1/rotate/{id...}"`,
		`nebula_credential_rotations_total{kind="rotate",outcome="committed",strategy="dual",type="generic"} 1`,
		`nebula_credential_rotations_total{kind="rotate",outcome="rolled_back",strategy="dual",type="postgres"} 1`,
		`nebula_credential_rotation_duration_seconds_count{kind="rotate",outcome="committed"`,
		`nebula_credential_age_seconds{id="a/1",type="generic"}`,
		`nebula_credential_grace_remaining_seconds{id="a/1",type="generic"}`,
		`nebula_credential_consecutive_failures{id="c/db",type="postgres"} 1`,
		`nebula_credential_credentials{state="grace"} 1`,
		`nebula_credential_credentials_needing_attention 0`,
		`nebula_credential_metrics_truncated 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
	// A scoped token sees only its credentials' series.
	scoped := string(e.must(200, "GET", "/metrics", e.token("read:b"), nil).body)
	if !strings.Contains(scoped, `id="b/1"`) || strings.Contains(scoped, `id="a/1"`) {
		t.Errorf("scoped metrics:\n%s", scoped)
	}
}

func TestPublicMetrics(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PublicMetrics = true })
	e.must(200, "GET", "/metrics", "", nil)
}

// TestServeGracefulShutdown: cancelling ListenAndServe's context lets an
// in-flight request finish, ends watch streams, and returns nil.
func TestServeGracefulShutdown(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- ListenAndServe(ctx, e.srv, ServeConfig{Addr: "127.0.0.1:0", OnListen: func(a net.Addr) { addrc <- a }, ShutdownTimeout: patience})
	}()
	base := "http://" + (<-addrc).String()
	e.ts.URL = base // send the helpers' requests to this server

	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": "p"}))
	e.must(200, "PUT", "/v1/credentials/prod/db", e.admin, pgBody("p"))
	wctx, wcancel := context.WithCancel(t.Context())
	defer wcancel()
	watch, _ := e.openWatch(wctx, "", e.admin, "")

	e.target.SetDelay(300 * time.Millisecond) // each rotator call is slow
	inflight := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/v1/rotate/prod/db", nil)
		req.Header.Set("Authorization", "Bearer "+e.admin)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- -1
			return
		}
		res.Body.Close()
		inflight <- res.StatusCode
	}()
	// Shut down once the rotation is under way (an event, not a sleep).
	for deadline := time.Now().Add(patience); ; time.Sleep(5 * time.Millisecond) {
		if open, _ := e.m.Rotations(t.Context(), "prod/db", true, 1); len(open) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotation never started")
		}
	}
	cancel()
	if code := <-inflight; code != 200 {
		t.Errorf("in-flight rotation: %d", code)
	}
	for range watch {
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("ListenAndServe did not return")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still accepting after shutdown")
	} else if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "refused") {
		t.Logf("after shutdown: %v", err)
	}
}

// Issue 18: a previous version whose retire failed after its grace is
// counted, per credential and in total, until it is retired.
func TestMetricsPreviousValidAfterGrace(t *testing.T) {
	e := newEnv(t)
	e.target.AddUser("app", secret.FromStrings(map[string]string{"password": "p"}))
	e.must(200, "PUT", "/v1/credentials/c/db", e.admin, pgBody("p"))
	e.target.FailNext("retire", rotatortest.Failure{Class: rotator.ClassPermission, Message: "no"})
	e.do("POST", "/v1/rotate/c/db", e.admin, `{"grace":"0s"}`)
	body := string(e.must(200, "GET", "/metrics", e.admin, nil).body)
	for _, want := range []string{
		`nebula_credential_previous_valid_after_grace{id="c/db",type="postgres"} 1`,
		`nebula_credential_credentials_previous_valid_after_grace 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}
