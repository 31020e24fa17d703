package credential_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
	xoauth2 "golang.org/x/oauth2"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/apikey"
	"github.com/nebula-credential/nebula-credential/rotator/apikey/apikeytest"
	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
	x509rot "github.com/nebula-credential/nebula-credential/rotator/x509"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// The minting tests drive the engine with the rotators whose provider creates
// the secret during Stage (API keys, OAuth2 tokens, certificates). The
// providers run in this (parent) process, so they survive the children that
// are SIGKILLed mid-rotation; a child reaches them over 127.0.0.1 through the
// URLs stored in the credential's fields.

// mintingConfig opens the store in dir with the API-key and OAuth2 rotators,
// each passed through wrap when it is not nil.
func mintingConfig(dir string, create bool, wrap func(rotator.Rotator) rotator.Rotator) credential.Config {
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		panic(err)
	}
	if wrap == nil {
		wrap = func(r rotator.Rotator) rotator.Rotator { return r }
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.APIKey), wrap(apikey.New(apikey.Config{})))
	reg.Register(string(credential.OAuth2), wrap(oauth2.New(oauth2.Config{})))
	return credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: create, Rotators: reg}
}

// killAfter SIGKILLs the process as soon as the rotator's op ("stage",
// "apply" or "retire") succeeded at the target, before the engine recorded it:
// after "stage" the minted secret exists at the provider and the store never
// saw it.
type killAfter struct {
	rotator.Rotator
	op string
}

func (k killAfter) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	resp, err := k.Rotator.Stage(ctx, req)
	k.maybeKill("stage", err)
	return resp, err
}

func (k killAfter) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	resp, err := k.Rotator.Apply(ctx, req)
	k.maybeKill("apply", err)
	return resp, err
}

func (k killAfter) Verify(ctx context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	resp, err := k.Rotator.Verify(ctx, req)
	k.maybeKill("verify", err)
	return resp, err
}

func (k killAfter) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	resp, err := k.Rotator.Retire(ctx, req)
	k.maybeKill("retire", err)
	return resp, err
}

func (k killAfter) maybeKill(op string, err error) {
	if op == k.op && err == nil {
		killSelf()
	}
}

// Unwrap lets the engine find the inner rotator's optional interfaces
// (Cleaner, StrategyChooser).
func (k killAfter) Unwrap() rotator.Rotator { return k.Rotator }

// mintKillPoints are where the children die: right after a rotator call
// succeeded at the target (before the journal write), and after every
// journal step.
var mintKillPoints = []string{
	"stage", rotation.StepPlanned, rotation.StepStaged, "apply", rotation.StepApplied, rotation.StepVerified,
	rotation.StepCommitted, rotation.StepGrace, "retire", rotation.StepRetired,
}

// TestMintingChild is the child of the minting crash tests: it rotates
// NC_MINT_ID with zero grace and dies at NC_MINT_KILL (a rotator call, see
// killAfter, or a journal step).
func TestMintingChild(t *testing.T) {
	dir := os.Getenv("NC_MINT_DIR")
	if dir == "" {
		return
	}
	id, kill := os.Getenv("NC_MINT_ID"), os.Getenv("NC_MINT_KILL")
	wrap := func(r rotator.Rotator) rotator.Rotator { return killAfter{r, kill} }
	cfg := mintingConfig(dir, false, wrap)
	cfg.Engine.AfterStep = func(_, step string) {
		if step == kill {
			killSelf()
		}
	}
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	_, err = m.Rotate(context.Background(), id, credential.RotateOptions{Grace: dur(0)})
	fmt.Println("not killed:", err)
	os.Exit(3)
}

func openMinting(t *testing.T, dir string, create bool) *credential.Manager {
	t.Helper()
	m, err := credential.Open(context.Background(), mintingConfig(dir, create, nil))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustGet(t *testing.T, m *credential.Manager, id string) *credential.Credential {
	t.Helper()
	c, err := m.Get(context.Background(), id, credential.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ---- API keys -------------------------------------------------------------

// putAPIKey stores credential id whose key a person created at svc.
func putAPIKey(t *testing.T, m *credential.Manager, svc *apikeytest.Service, id string) *credential.Credential {
	t.Helper()
	k := svc.Mint("created by hand", "")
	f := svc.Spec()
	f["key_id"] = k.ID
	c, err := m.Put(context.Background(), id, credential.PutRequest{Type: credential.APIKey, Fields: f, Secret: secret.Map{"key": secret.New(k.Secret)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// onlyLiveKey checks that exactly one key is live at svc and that it is c's.
func onlyLiveKey(t *testing.T, svc *apikeytest.Service, c *credential.Credential) {
	t.Helper()
	live := svc.Live()
	if len(live) != 1 {
		names := []string{}
		for id, k := range live {
			names = append(names, id+" ("+k.Name+")")
		}
		t.Fatalf("%d keys live at the service, want only current (version %d, %v): %v", len(live), c.Version, c.Fields["key_id"], names)
	}
	for id, k := range live {
		if id != c.Fields["key_id"] || k.Secret != c.Secret["key"].Reveal() {
			t.Fatalf("the live key %s is not the stored current (version %d, key_id %v)", id, c.Version, c.Fields["key_id"])
		}
	}
	if !keyAuthenticates(t, svc, c.Secret["key"]) {
		t.Fatalf("current version %d does not authenticate", c.Version)
	}
}

// keyAuthenticates asks the service, over HTTP as a consumer would, whether key works.
func keyAuthenticates(t *testing.T, svc *apikeytest.Service, key secret.Value) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", svc.URL()+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+key.Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestMintingAPIKeyCrash SIGKILLs a child rotating an api_key credential right
// after the provider minted the new key (before the engine stored it), after
// the old key was revoked (before the journal said so), and after every
// journal step. After recovery (reopen + Tick) exactly one key is
// live at the service, it is the stored current and authenticates, the old
// key is revoked, and no rotation is left open.
func TestMintingAPIKeyCrash(t *testing.T) {
	for _, kill := range mintKillPoints {
		t.Run(kill, func(t *testing.T) {
			// One service and store per kill point: a failure at one point does
			// not cascade into the next.
			svc := apikeytest.NewService(t)
			dir := t.TempDir()
			m := openMinting(t, dir, true)
			before := putAPIKey(t, m, svc, "app/api")
			m.Close()

			start := time.Now()
			out, code := runChild(t, "TestMintingChild", "NC_MINT_DIR="+dir, "NC_MINT_ID=app/api", "NC_MINT_KILL="+kill)
			if code != -9 {
				t.Fatalf("child not killed at %s (exit %d): %s", kill, code, out)
			}
			createsByChild := svc.CreateCount()
			m = openMinting(t, dir, false) // recovery
			defer m.Close()
			if _, err := m.Engine().Tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed at %s after %d create(s); recovered in %v (child included)", kill, createsByChild, time.Since(start).Round(time.Millisecond))

			ctx := context.Background()
			if kill == "stage" && svc.Count(apikeytest.RouteList) == 0 {
				t.Fatal("recovery never listed the keys, so an orphan could not have been found")
			}
			if open, _ := m.Rotations(ctx, "app/api", true, 5); len(open) != 0 {
				t.Fatalf("rotation stuck after recovery: step %s, error %q", open[0].Step, open[0].LastError)
			}
			after := mustGet(t, m, "app/api")
			if after.Version <= before.Version {
				rs, _ := m.Rotations(ctx, "app/api", false, 1)
				t.Fatalf("the rotation did not complete after recovery: current is still version %d; last rotation %d ended %s after %s failed: %s",
					after.Version, rs[0].ID, rs[0].Step, failedStep(&rs[0]), rs[0].LastError)
			}
			if after.State != credential.StateActive {
				t.Fatalf("state %s after recovery, want active", after.State)
			}
			onlyLiveKey(t, svc, after)
			if keyAuthenticates(t, svc, before.Secret["key"]) {
				t.Fatal("the old key still authenticates after retire")
			}
			if rep, err := m.Doctor(ctx, "app/api"); err != nil || !rep.Healthy {
				t.Fatalf("doctor: %v %+v", err, rep)
			}
		})
	}
}

func failedStep(r *credential.Rotation) string {
	s, _ := rotation.Recovery(r)
	return s
}

// The old key keeps working through grace and is refused once the retire job
// ran; it is not retired a moment early.
func TestMintingAPIKeyGrace(t *testing.T) {
	svc := apikeytest.NewService(t)
	dir := t.TempDir()
	clk := newClock()
	cfg := mintingConfig(dir, true, nil)
	cfg.Clock = clk.Now
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	v1 := putAPIKey(t, m, svc, "app/api")
	if _, err := m.Rotate(ctx, "app/api", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	v2 := mustGet(t, m, "app/api")
	if v2.Version != 2 || v2.State != credential.StateGrace {
		t.Fatalf("after rotate: version %d state %s", v2.Version, v2.State)
	}
	if !keyAuthenticates(t, svc, v1.Secret["key"]) || !keyAuthenticates(t, svc, v2.Secret["key"]) {
		t.Fatal("during grace both keys must authenticate")
	}
	clk.Advance(59 * time.Minute)
	m.Engine().Tick(ctx)
	if !keyAuthenticates(t, svc, v1.Secret["key"]) {
		t.Fatal("old key revoked before grace ended")
	}
	clk.Advance(2 * time.Minute)
	if _, err := m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if keyAuthenticates(t, svc, v1.Secret["key"]) {
		t.Fatal("old key still authenticates after retire")
	}
	cur := mustGet(t, m, "app/api")
	if cur.Version != 2 || cur.State != credential.StateActive {
		t.Fatalf("after retire: version %d state %s", cur.Version, cur.State)
	}
	onlyLiveKey(t, svc, cur)
}

// A 429 with Retry-After on create schedules the retry no earlier than the
// service asked; the retry then completes the rotation.
func TestMintingAPIKeyRetryAfter(t *testing.T) {
	svc := apikeytest.NewService(t)
	dir := t.TempDir()
	clk := newClock()
	cfg := mintingConfig(dir, true, nil)
	cfg.Clock = clk.Now
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	v1 := putAPIKey(t, m, svc, "app/api")

	const wait = 120 * time.Second
	svc.Inject(apikeytest.Fault{Route: apikeytest.RouteCreate, Status: http.StatusTooManyRequests, RetryAfter: "120"})
	start := clk.Now()
	_, err = m.Rotate(ctx, "app/api", credential.RotateOptions{Grace: dur(0)})
	if !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatalf("want a scheduled retry, got %v", err)
	}
	open, err := m.Rotations(ctx, "app/api", true, 1)
	if err != nil || len(open) != 1 {
		t.Fatalf("open rotations: %v %d", err, len(open))
	}
	if due := open[0].DueAt.Sub(start); due < wait {
		t.Fatalf("retry due %v after the 429, earlier than Retry-After %v", due, wait)
	}
	if open[0].Attempt != 1 || open[0].Step != rotation.StepPlanned {
		t.Fatalf("rotation at %s attempt %d, want planned attempt 1", open[0].Step, open[0].Attempt)
	}
	sent := svc.Count(apikeytest.RouteCreate)

	clk.Advance(wait - time.Second)
	if _, err := m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := svc.Count(apikeytest.RouteCreate); n != sent {
		t.Fatalf("create retried %v after a 429 with Retry-After %v", wait-time.Second, wait)
	}
	clk.Advance(2 * time.Second)
	if _, err := m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if open, _ := m.Rotations(ctx, "app/api", true, 1); len(open) != 0 {
		t.Fatalf("rotation still open after the retry: %s %q", open[0].Step, open[0].LastError)
	}
	cur := mustGet(t, m, "app/api")
	if cur.Version != 2 {
		t.Fatalf("current version %d after the retry, want 2", cur.Version)
	}
	onlyLiveKey(t, svc, cur)
	if keyAuthenticates(t, svc, v1.Secret["key"]) {
		t.Fatal("old key still authenticates")
	}
}

// A create whose response is lost after the key was made (a 502 from a proxy)
// is retried by the engine with the same Idempotency-Key; before that the
// engine's orphan cleanup runs. The rotation must still complete with exactly
// one live key, the new one.
//
// This and TestMintingAPIKeyCrash/stage fail while rotation/steps.go stage()
// runs Cleanup(Keep=[current]) before the resumed Stage: the cleanup revokes
// the key minted under this rotation's Idempotency-Key, the create is then
// replayed and returns that revoked key, verify gets 401 and the rotation
// rolls back. Stage first, store the pending version, then Cleanup with
// Keep=[current, pending].
func TestMintingAPIKeyLostCreateResponse(t *testing.T) {
	svc := apikeytest.NewService(t)
	dir := t.TempDir()
	clk := newClock()
	cfg := mintingConfig(dir, true, nil)
	cfg.Clock = clk.Now
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	v1 := putAPIKey(t, m, svc, "app/api")
	svc.Inject(apikeytest.Fault{Route: apikeytest.RouteCreate, Status: http.StatusBadGateway, AfterCommit: true})
	if _, err := m.Rotate(ctx, "app/api", credential.RotateOptions{Grace: dur(0)}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatalf("want a scheduled retry, got %v", err)
	}
	clk.Advance(10 * time.Minute)
	if _, err := m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if open, _ := m.Rotations(ctx, "app/api", true, 1); len(open) != 0 {
		t.Fatalf("rotation still open: %s %q", open[0].Step, open[0].LastError)
	}
	cur := mustGet(t, m, "app/api")
	if cur.Version <= v1.Version {
		rs, _ := m.Rotations(ctx, "app/api", false, 1)
		t.Fatalf("the rotation did not complete: current is still version %d; rotation ended %s after %s failed: %s",
			cur.Version, rs[0].Step, failedStep(&rs[0]), rs[0].LastError)
	}
	onlyLiveKey(t, svc, cur)
	if keyAuthenticates(t, svc, v1.Secret["key"]) {
		t.Fatal("old key still authenticates")
	}
}

// Rotation IDs are numbered per store, and the API-key rotator sends the bare
// rotation ID as Idempotency-Key (as StageRequest.RotationID invites). Two stores (two environments, or a store
// re-created from scratch) rotating credentials on one provider account both
// send "Idempotency-Key: 1" for their first rotation, and the provider, which
// scopes keys to the account, takes the second for a replay of the first.
func TestMintingAPIKeyIdempotencyKeyScope(t *testing.T) {
	svc := apikeytest.NewService(t)
	ctx := context.Background()
	for _, id := range []string{"staging/api", "prod/api"} {
		m := openMinting(t, t.TempDir(), true)
		before := putAPIKey(t, m, svc, id)
		r, err := m.Rotate(ctx, id, credential.RotateOptions{Grace: dur(0)})
		if err != nil {
			m.Close()
			t.Fatalf("%s: rotation %d (Idempotency-Key %d) failed: %v", id, r.ID, r.ID, err)
		}
		after := mustGet(t, m, id)
		m.Close()
		if after.Version <= before.Version || !keyAuthenticates(t, svc, after.Secret["key"]) || keyAuthenticates(t, svc, before.Secret["key"]) {
			t.Fatalf("%s: not rotated", id)
		}
	}
}

// ---- RabbitMQ (in place, through the API-key rotator) --------------------

const rabbitMgmt = "http://127.0.0.1:15672"

// needRabbitMQ fails under CI=true and skips otherwise when the RabbitMQ
// management API is not reachable.
func needRabbitMQ(t *testing.T) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:15672", time.Second)
	if err != nil {
		msg := fmt.Sprintf("RabbitMQ management API not reachable on 127.0.0.1:15672 (%v); enable it with: rabbitmq-plugins enable rabbitmq_management", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg) // only outside CI
	}
	conn.Close()
}

func rabbitDo(t *testing.T, method, path, user, pass, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, rabbitMgmt+path, strings.NewReader(body))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// putRabbitUser creates a RabbitMQ user and stores it as credential id, with
// the administrator (guest, loopback only) as "rabbitmq/admin".
func putRabbitUser(t *testing.T, m *credential.Manager, id string) *credential.Credential {
	t.Helper()
	ctx := context.Background()
	user := "nebula-mint-" + strings.ToLower(secret.Token(6).Reveal())
	pw := secret.Token(18).Reveal()
	if code := rabbitDo(t, "PUT", "/api/users/"+user, "guest", "guest", fmt.Sprintf(`{"password":%q,"tags":"management"}`, pw)); code != http.StatusCreated {
		t.Fatalf("create user %s: status %d", user, code)
	}
	t.Cleanup(func() { rabbitDo(t, "DELETE", "/api/users/"+user, "guest", "guest", "") })
	if _, err := m.Put(ctx, "rabbitmq/admin", credential.PutRequest{Type: credential.Generic, Fields: map[string]any{"username": "guest", "target": rabbitMgmt, "manages": []any{id}}, Secret: secret.Map{"password": secret.New("guest")}}); err != nil {
		t.Fatal(err)
	}
	f := map[string]any{
		"username": user, "tags": "management", "auth_credential": "rabbitmq/admin",
		"set": map[string]any{
			"method": "PUT", "url": rabbitMgmt + "/api/users/{{fields.username}}",
			"basic_auth":      map[string]string{"username": "{{auth_username}}", "password": "{{auth_key}}"},
			"body":            `{"password":"{{key}}","tags":"{{fields.tags}}"}`,
			"expected_status": []int{201, 204},
		},
		"verify": map[string]any{
			"url":             rabbitMgmt + "/api/whoami",
			"basic_auth":      map[string]string{"username": "{{fields.username}}", "password": "{{key}}"},
			"expected_status": 200,
		},
	}
	c, err := m.Put(ctx, id, credential.PutRequest{Type: credential.APIKey, Fields: f, Secret: secret.Map{"key": secret.New(pw)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rabbitLogsIn(t *testing.T, c *credential.Credential) bool {
	t.Helper()
	return rabbitDo(t, "GET", "/api/whoami", c.Fields["username"].(string), c.Secret["key"].Reveal(), "") == http.StatusOK
}

// TestMintingRabbitMQCrash SIGKILLs a child rotating a RabbitMQ user's
// password in place (the API-key rotator's set spec) at every kill point,
// including right after the password was changed on the server and before
// the journal recorded it. After recovery the stored current logs in, the old
// password does not, and no rotation is left open.
func TestMintingRabbitMQCrash(t *testing.T) {
	needRabbitMQ(t)
	// An in_place rotation with validation commits right after apply and
	// verifies after the commit: it never records "verified", so it dies
	// right after its verify call instead (before the journal notes it).
	var points []string
	for _, p := range mintKillPoints {
		if p == rotation.StepVerified {
			p = "verify"
		}
		points = append(points, p)
	}
	for _, kill := range points {
		t.Run(kill, func(t *testing.T) {
			dir := t.TempDir()
			m := openMinting(t, dir, true)
			before := putRabbitUser(t, m, "rabbitmq/app")
			m.Close()
			out, code := runChild(t, "TestMintingChild", "NC_MINT_DIR="+dir, "NC_MINT_ID=rabbitmq/app", "NC_MINT_KILL="+kill)
			if code != -9 {
				t.Fatalf("child not killed at %s (exit %d): %s", kill, code, out)
			}
			ctx := context.Background()
			m = openMinting(t, dir, false) // recovery
			defer m.Close()
			if _, err := m.Engine().Tick(ctx); err != nil {
				t.Fatal(err)
			}
			if open, _ := m.Rotations(ctx, "rabbitmq/app", true, 5); len(open) != 0 {
				t.Fatalf("rotation stuck after recovery: step %s, error %q", open[0].Step, open[0].LastError)
			}
			after := mustGet(t, m, "rabbitmq/app")
			if after.Version <= before.Version || after.State != credential.StateActive {
				rs, _ := m.Rotations(ctx, "rabbitmq/app", false, 1)
				t.Fatalf("not rotated: version %d state %s; last rotation ended %s: %s", after.Version, after.State, rs[0].Step, rs[0].LastError)
			}
			if !rabbitLogsIn(t, after) {
				t.Fatalf("current version %d does not log in", after.Version)
			}
			if rabbitLogsIn(t, before) {
				t.Fatal("the old password still logs in")
			}
			if rep, err := m.Doctor(ctx, "rabbitmq/app"); err != nil || !rep.Healthy {
				t.Fatalf("doctor: %v %+v", err, rep)
			}
		})
	}
}

// ---- OAuth2 ---------------------------------------------------------------

// mockoidc signs tokens deterministically with second-resolution claims, so
// two tokens minted in one second are identical; its clock is moved one
// second on per token request so every refresh mints distinct tokens, as real
// providers do. NowFunc is global: it is set once.
var (
	oidcClockOnce sync.Once
	oidcOffset    atomic.Int64
)

// oidcProvider is mockoidc on 127.0.0.1, in this process. As it is, mockoidc
// does not rotate refresh tokens: a refresh grant answers with the very
// refresh token it was given, which stays valid until it expires. With
// rotating set, a front end makes it behave like providers that rotate
// refresh tokens with reuse detection (OAuth 2.0 Security BCP §4.14): every
// refresh returns a new refresh token and a used one is refused with
// invalid_grant.
type oidcProvider struct {
	*mockoidc.MockOIDC
	rotating bool

	mu       sync.Mutex
	used     map[string]bool   // refresh tokens presented (rotating)
	alias    map[string]string // issued refresh token → mockoidc's own (rotating)
	userinfo map[string]int    // userinfo requests by access token
	refresh  int               // refresh grants answered 200
}

func newOIDC(t *testing.T, rotating bool) *oidcProvider {
	t.Helper()
	oidcClockOnce.Do(func() {
		mockoidc.NowFunc = func() time.Time { return time.Now().Add(time.Duration(oidcOffset.Load())) }
	})
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.AccessTTL, m.RefreshTTL = time.Hour, 24*time.Hour
	if _, err := m.Keypair.KeyID(); err != nil { // computed lazily and unlocked: do it before serving
		t.Fatal(err)
	}
	p := &oidcProvider{MockOIDC: m, rotating: rotating, used: map[string]bool{}, alias: map[string]string{}, userinfo: map[string]int{}}
	m.AddMiddleware(p.middleware)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return p
}

func (p *oidcProvider) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case mockoidc.UserinfoEndpoint:
			p.mu.Lock()
			p.userinfo[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]++
			p.mu.Unlock()
			next.ServeHTTP(w, r)
			return
		case mockoidc.TokenEndpoint:
		default:
			next.ServeHTTP(w, r)
			return
		}
		oidcOffset.Add(int64(time.Second))
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		isRefresh := r.PostForm.Get("grant_type") == "refresh_token"
		under := r.PostForm.Get("refresh_token")
		if isRefresh && p.rotating {
			p.mu.Lock()
			presented := under
			if p.used[presented] {
				p.mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":"invalid_grant","error_description":"refresh token already used"}`)
				return
			}
			p.used[presented] = true
			if a, ok := p.alias[presented]; ok {
				under = a
			}
			p.mu.Unlock()
			r.Form.Set("refresh_token", under)
			r.PostForm.Set("refresh_token", under)
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if isRefresh && rec.Code == http.StatusOK {
			p.mu.Lock()
			p.refresh++
			if p.rotating {
				var doc map[string]any
				if json.Unmarshal(body, &doc) == nil {
					b := make([]byte, 16)
					rand.Read(b)
					fresh := "rt_" + hex.EncodeToString(b)
					p.alias[fresh] = under
					doc["refresh_token"] = fresh
					body, _ = json.Marshal(doc)
				}
			}
			p.mu.Unlock()
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

func (p *oidcProvider) userinfoCalls(access secret.Value) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.userinfo[access.Reveal()]
}

func (p *oidcProvider) refreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refresh
}

func (p *oidcProvider) wasUsed(refreshToken secret.Value) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used[refreshToken.Reveal()]
}

// login runs the authorization-code flow, as a person authorising the
// credential would, and returns the credential's values.
func (p *oidcProvider) login(t *testing.T) credential.PutRequest {
	t.Helper()
	cfg := &xoauth2.Config{
		ClientID: p.ClientID, ClientSecret: p.ClientSecret, RedirectURL: "http://127.0.0.1/callback",
		Endpoint: xoauth2.Endpoint{AuthURL: p.AuthorizationEndpoint(), TokenURL: p.TokenEndpoint(), AuthStyle: xoauth2.AuthStyleInParams},
		Scopes:   []string{"openid", "email"},
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(cfg.AuthCodeURL("state-1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return credential.PutRequest{
		Type: credential.OAuth2,
		Fields: map[string]any{
			"token_url": p.TokenEndpoint(), "client_id": p.ClientID, "scopes": "openid email",
			"auth_style": "params", "userinfo_url": p.UserinfoEndpoint(),
		},
		Secret: secret.Map{
			"access_token": secret.New(tok.AccessToken), "refresh_token": secret.New(tok.RefreshToken),
			"client_secret": secret.New(p.ClientSecret),
		},
	}
}

// accepted asks the userinfo endpoint whether it takes the access token.
func (p *oidcProvider) accepted(t *testing.T, access secret.Value) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", p.UserinfoEndpoint(), nil)
	req.Header.Set("Authorization", "Bearer "+access.Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// refreshWorks reports whether the provider still honours refreshToken,
// asking it directly (this burns the token at a rotating provider).
func (p *oidcProvider) refreshWorks(t *testing.T, refreshToken secret.Value) bool {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken.Reveal()}, "client_id": {p.ClientID}, "client_secret": {p.ClientSecret}}
	resp, err := http.PostForm(p.TokenEndpoint(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

var oauthModes = []struct {
	name     string
	rotating bool
}{{"mockoidc", false}, {"rotating", true}}

// The refreshed tokens are stored, encrypted, as the pending version before
// anything uses them: when the journal says staged, the provider has answered
// exactly one refresh, the pending version holds what it answered, and the
// new access token has not been presented anywhere yet.
func TestMintingOAuthPendingBeforeUse(t *testing.T) {
	for _, mode := range oauthModes {
		t.Run(mode.name, func(t *testing.T) {
			p := newOIDC(t, mode.rotating)
			dir := t.TempDir()
			m := openMinting(t, dir, true)
			ctx := context.Background()
			v1, err := m.Put(ctx, "app/oauth", p.login(t))
			m.Close()
			if err != nil {
				t.Fatal(err)
			}

			var (
				mh      *credential.Manager
				pending *credential.Credential
			)
			cfg := mintingConfig(dir, false, nil)
			cfg.Engine.AfterStep = func(_, step string) {
				if step != rotation.StepStaged {
					return
				}
				var err error
				if pending, err = mh.Get(ctx, "app/oauth", credential.GetOptions{Label: credential.LabelPending}); err != nil {
					t.Errorf("staged, but no pending version: %v", err)
					return
				}
				if n := p.refreshes(); n != 1 {
					t.Errorf("staged after %d refresh grants, want 1", n)
				}
				if n := p.userinfoCalls(pending.Secret["access_token"]); n != 0 {
					t.Errorf("the new access token was used %d times before it was stored", n)
				}
				if mode.rotating && p.wasUsed(pending.Secret["refresh_token"]) {
					t.Error("the rotated refresh token was used before it was stored")
				}
			}
			mh, err = credential.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mh.Close()
			if _, err := mh.Rotate(ctx, "app/oauth", credential.RotateOptions{Grace: dur(0)}); err != nil {
				t.Fatal(err)
			}
			if pending == nil {
				t.Fatal("the hook never saw the staged step")
			}
			cur := mustGet(t, mh, "app/oauth")
			if cur.Version != pending.Version || !cur.Secret.Equal(pending.Secret) {
				t.Fatalf("current is version %d, not the staged version %d as stored", cur.Version, pending.Version)
			}
			if cur.Secret["access_token"].Equal(v1.Secret["access_token"]) {
				t.Fatal("the refresh returned the old access token")
			}
			if mode.rotating == cur.Secret["refresh_token"].Equal(v1.Secret["refresh_token"]) {
				t.Fatalf("rotating=%v but the refresh token changed=%v", mode.rotating, !cur.Secret["refresh_token"].Equal(v1.Secret["refresh_token"]))
			}
			if p.userinfoCalls(cur.Secret["access_token"]) == 0 {
				t.Fatal("verify never presented the new access token")
			}
			if !p.accepted(t, cur.Secret["access_token"]) {
				t.Fatal("the provider refuses the new access token")
			}
		})
	}
}

// TestMintingOAuthCrashAfterRefresh kills a child right after the provider
// answered the refresh grant, before the engine stored the answer. mockoidc
// keeps accepting the old refresh token (it does not rotate), so recovery
// refreshes again and completes. A provider that rotates refresh tokens has
// already invalidated the old one: recovery must end in reauth_required,
// with doctor saying to re-authorise, and the credential must not look
// healthy.
func TestMintingOAuthCrashAfterRefresh(t *testing.T) {
	for _, mode := range oauthModes {
		t.Run(mode.name, func(t *testing.T) {
			p := newOIDC(t, mode.rotating)
			dir := t.TempDir()
			ctx := context.Background()
			m := openMinting(t, dir, true)
			before, err := m.Put(ctx, "app/oauth", p.login(t))
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			out, code := runChild(t, "TestMintingChild", "NC_MINT_DIR="+dir, "NC_MINT_ID=app/oauth", "NC_MINT_KILL=stage")
			if code != -9 {
				t.Fatalf("child not killed (exit %d): %s", code, out)
			}
			if n := p.refreshes(); n != 1 {
				t.Fatalf("the child made %d refresh grants before it died, want 1", n)
			}
			m = openMinting(t, dir, false) // recovery
			defer m.Close()
			if _, err := m.Engine().Tick(ctx); err != nil {
				t.Fatal(err)
			}
			after := mustGet(t, m, "app/oauth")
			rep, err := m.Doctor(ctx, "app/oauth")
			if err != nil {
				t.Fatal(err)
			}
			open, _ := m.Rotations(ctx, "app/oauth", true, 1)

			if !mode.rotating {
				if len(open) != 0 {
					t.Fatalf("rotation stuck: %s %q", open[0].Step, open[0].LastError)
				}
				if after.Version <= before.Version || after.State != credential.StateActive {
					t.Fatalf("recovery did not complete: version %d state %s", after.Version, after.State)
				}
				if !p.accepted(t, after.Secret["access_token"]) || after.Secret["access_token"].Equal(before.Secret["access_token"]) {
					t.Fatal("current does not hold a fresh access token the provider accepts")
				}
				if !rep.Healthy {
					t.Fatalf("doctor: %+v", rep.Findings)
				}
				return
			}

			if len(open) != 1 || open[0].Step != rotation.StepReauthRequired {
				t.Fatalf("want the rotation in reauth_required, got %+v", open)
			}
			if after.State != credential.StateReauthRequired {
				t.Fatalf("credential state %s, want reauth_required", after.State)
			}
			if after.Version != before.Version {
				t.Fatalf("current moved to version %d", after.Version)
			}
			if p.refreshWorks(t, after.Secret["refresh_token"]) {
				t.Fatal("setup: the stored refresh token still works, so nothing was lost")
			}
			if rep.Healthy || rep.State != string(credential.StateReauthRequired) {
				t.Fatalf("doctor calls a credential with a dead refresh token healthy (state %s): %+v", rep.State, rep.Findings)
			}
			found := false
			for _, f := range rep.Findings {
				if f.Severity == "error" && strings.Contains(f.Title, "re-authoris") && strings.Contains(f.Fix, "re-authorise") {
					found = true
				}
			}
			if !found {
				t.Fatalf("doctor does not say to re-authorise: %+v", rep.Findings)
			}
			if _, err := m.Rotate(ctx, "app/oauth", credential.RotateOptions{}); !errors.Is(err, credential.ErrRotationInProgress) {
				t.Fatalf("a new rotation must wait for the re-authorisation, got %v", err)
			}
			if n := p.refreshes(); n != 1 {
				t.Fatalf("%d successful refreshes, want only the child's", n)
			}

			// A person re-authorises: resolve the rotation, store the new grant.
			if _, err := m.Engine().Resolve(ctx, "app/oauth", 0, false); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Put(ctx, "app/oauth", p.login(t)); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Rotate(ctx, "app/oauth", credential.RotateOptions{Grace: dur(0)}); err != nil {
				t.Fatalf("rotate after re-authorisation: %v", err)
			}
			if c := mustGet(t, m, "app/oauth"); c.State != credential.StateActive || !p.accepted(t, c.Secret["access_token"]) {
				t.Fatalf("after re-authorisation: state %s", c.State)
			}
		})
	}
}

// The recovery text of reauth_required is followed in the order it gives. It
// says put, then resolve; put is refused while the rotation is open (and
// resolve afterwards would keep the rotation's from-version, the dead token,
// as current), so the text must say resolve, then put.
func TestMintingOAuthReauthRecoveryText(t *testing.T) {
	p := newOIDC(t, false)
	dir := t.TempDir()
	ctx := context.Background()
	m := openMinting(t, dir, true)
	defer m.Close()
	v1, err := m.Put(ctx, "app/oauth", p.login(t))
	if err != nil {
		t.Fatal(err)
	}
	p.QueueError(&mockoidc.ServerError{Code: http.StatusBadRequest, Error: mockoidc.InvalidGrant, Description: "refresh token revoked"})
	if _, err := m.Rotate(ctx, "app/oauth", credential.RotateOptions{}); err == nil {
		t.Fatal("rotation with a rejected refresh token succeeded")
	}
	rep, err := m.Doctor(ctx, "app/oauth")
	if err != nil || rep.State != string(credential.StateReauthRequired) {
		t.Fatalf("doctor: %v %+v", err, rep)
	}
	var fix string
	for _, f := range rep.Findings {
		if strings.Contains(f.Title, "re-authoris") {
			fix = f.Fix
		}
	}
	putAt, resolveAt := strings.Index(fix, "nebula-credential put"), strings.Index(fix, "rotations resolve")
	if putAt < 0 || resolveAt < 0 {
		t.Fatalf("the fix does not name put and resolve: %q", fix)
	}
	fresh := p.login(t)
	if putAt < resolveAt {
		// As written: put first.
		if _, err := m.Put(ctx, "app/oauth", fresh); err != nil {
			t.Fatalf("step 1 of the recovery text (%q) fails: %v", fix, err)
		}
		if _, err := m.Engine().Resolve(ctx, "app/oauth", 0, false); err != nil {
			t.Fatalf("step 2 of the recovery text fails: %v", err)
		}
	} else {
		if _, err := m.Engine().Resolve(ctx, "app/oauth", 0, false); err != nil {
			t.Fatalf("step 1 of the recovery text (%q) fails: %v", fix, err)
		}
		if _, err := m.Put(ctx, "app/oauth", fresh); err != nil {
			t.Fatalf("step 2 of the recovery text fails: %v", err)
		}
	}
	cur := mustGet(t, m, "app/oauth")
	if cur.Version == v1.Version || !cur.Secret["refresh_token"].Equal(fresh.Secret["refresh_token"]) {
		t.Fatalf("after following the recovery text the current version %d does not hold the new grant", cur.Version)
	}
}

// ---- certificates ---------------------------------------------------------

const certHost = "app.nebula.test"

// handshaker opens a new TLS connection (a full handshake) to addr in a loop,
// trusting roots, and counts successes and failures.
type handshaker struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startHandshakes(addr string, roots []byte, workers int) *handshaker {
	pool := stdx509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	h := &handshaker{stop: make(chan struct{})}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{ // generous: a loaded machine is slow
		DisableKeepAlives: true, // every request is a new connection and handshake
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: certHost, MinVersion: tls.VersionTLS12},
	}}
	for range workers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				resp, err := client.Get("https://" + addr + "/")
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					h.failed.Add(1)
					h.mu.Lock()
					if h.firstErr == nil {
						h.firstErr = err
					}
					h.mu.Unlock()
					continue
				}
				h.ok.Add(1)
			}
		}()
	}
	return h
}

func (h *handshaker) Stop() (ok, failed int64, firstErr error) {
	close(h.stop)
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok.Load(), h.failed.Load(), h.firstErr
}

// TestMintingCertRotations runs 20 rotations through the engine with the
// built-in CA and the in-process provider while an HTTPS server on 127.0.0.1
// serves through the provider and clients handshake in a loop: no handshake
// fails. Then a rotation whose issuer the clients do not trust is rolled back:
// the old certificate is served again, current is unchanged, and doctor
// reports the rolled-back rotation.
func TestMintingCertRotations(t *testing.T) {
	ctx := context.Background()
	ca, err := x509rot.NewSelfSignedCA("nebula test root", 365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := x509rot.NewSelfSignedCA("not trusted by anyone", 365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := x509rot.NewProvider()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: p.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ErrorLog: log.New(io.Discard, "", 0), // failed handshakes are counted by the clients
	}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()

	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Certificate), x509rot.New(x509rot.Config{
		CAs:       map[string]*x509rot.CA{"test": ca, "rogue": rogue},
		Providers: map[string]*x509rot.Provider{"web": p},
	}))
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(t.TempDir(), "creds.key"), Create: true, Rotators: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// Version 1, issued and deployed by hand.
	first, err := ca.Issue(x509rot.IssueRequest{CommonName: certHost, DNSNames: []string{certHost}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(first.ChainPEM, first.KeyPEM); err != nil {
		t.Fatal(err)
	}
	notAfter := first.Leaf.NotAfter.UTC()
	fields := map[string]any{
		"issuer": "ca", "ca": "test", "common_name": certHost, "dns_names": []string{certHost},
		"deploy":      []map[string]any{{"type": "provider", "name": "web"}},
		"verify":      map[string]any{"address": addr, "server_name": certHost, "trust_bundle": string(ca.CertPEM())},
		"certificate": string(first.ChainPEM), "serial": first.Leaf.SerialNumber.Text(16), "not_after": notAfter.Format(time.RFC3339),
	}
	if _, err := m.Put(ctx, "web/tls", credential.PutRequest{Type: credential.Certificate, Fields: fields, Secret: secret.Map{"private_key": secret.New(string(first.KeyPEM))}, ExpiresAt: &notAfter}); err != nil {
		t.Fatal(err)
	}
	served := func() string {
		if l := p.Leaf(); l != nil {
			return l.SerialNumber.Text(16)
		}
		return ""
	}

	h := startHandshakes(addr, ca.CertPEM(), 4)
	const rotations = 20
	var slowest, total time.Duration
	start := time.Now()
	for i := range rotations {
		t0 := time.Now()
		if _, err := m.Rotate(ctx, "web/tls", credential.RotateOptions{Grace: dur(0)}); err != nil {
			h.Stop()
			t.Fatalf("rotation %d: %v", i+1, err)
		}
		d := time.Since(t0)
		total += d
		slowest = max(slowest, d)
		cur := mustGet(t, m, "web/tls")
		if cur.Version != i+2 || cur.State != credential.StateActive {
			h.Stop()
			t.Fatalf("rotation %d: version %d state %s", i+1, cur.Version, cur.State)
		}
		if served() != cur.Fields["serial"] {
			h.Stop()
			t.Fatalf("rotation %d: the server presents serial %s, current is %v", i+1, served(), cur.Fields["serial"])
		}
	}
	elapsed := time.Since(start)
	ok, failed, firstErr := h.Stop()
	t.Logf("%d rotations in %v (mean %v, slowest %v): %d handshakes, %d failed", rotations, elapsed.Round(time.Millisecond),
		(total / rotations).Round(time.Millisecond), slowest.Round(time.Millisecond), ok, failed)
	if failed != 0 {
		t.Fatalf("%d of %d handshakes failed during rotations; first: %v", failed, ok+failed, firstErr)
	}
	if ok < rotations {
		t.Fatalf("only %d handshakes during %d rotations", ok, rotations)
	}

	// An issuer the clients do not trust: the rotation deploys, the handshake
	// check refuses it, and the current certificate is redeployed.
	cur := mustGet(t, m, "web/tls")
	bad := map[string]any{}
	for k, v := range cur.Fields {
		bad[k] = v
	}
	bad["ca"] = "rogue"
	good, err := m.Put(ctx, "web/tls", credential.PutRequest{Type: credential.Certificate, Fields: bad, Secret: cur.Secret, ExpiresAt: cur.ExpiresAt})
	if err != nil {
		t.Fatal(err)
	}
	h = startHandshakes(addr, ca.CertPEM(), 2)
	_, err = m.Rotate(ctx, "web/tls", credential.RotateOptions{Grace: dur(0)})
	ok, failed, firstErr = h.Stop()
	var re *rotation.RotationError
	if !errors.As(err, &re) || !re.RolledBack {
		t.Fatalf("want a rolled-back rotation, got %v", err)
	}
	// Apply deploys before Verify can check the handshake, so clients may
	// meet the untrusted certificate until Revert redeploys the current one.
	t.Logf("untrusted issuer: rolled back (%v); %d handshakes meanwhile, %d failed", err, ok, failed)
	if failed > 0 {
		t.Logf("first failed handshake while the untrusted certificate was deployed: %v", firstErr)
	}
	after := mustGet(t, m, "web/tls")
	if after.Version != good.Version || after.State != credential.StateActive {
		t.Fatalf("after the rollback: version %d (want %d) state %s", after.Version, good.Version, after.State)
	}
	if served() != after.Fields["serial"] {
		t.Fatalf("after the rollback the server presents serial %s, current is %v", served(), after.Fields["serial"])
	}
	h = startHandshakes(addr, ca.CertPEM(), 1)
	for deadline := time.Now().Add(time.Minute); h.ok.Load()+h.failed.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // a few handshakes, however slow the machine
	}
	if ok, failed, firstErr := h.Stop(); failed != 0 || ok == 0 {
		t.Fatalf("after the rollback: %d handshakes, %d failed: %v", ok, failed, firstErr)
	}
	rep, err := m.Doctor(ctx, "web/tls")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range rep.Findings {
		if strings.Contains(f.Title, "rolled back") && strings.Contains(f.Detail, "not trusted") {
			found = true
		}
	}
	if !found || !rep.Healthy {
		t.Fatalf("doctor should report the rolled-back rotation and a healthy current: healthy=%v %+v", rep.Healthy, rep.Findings)
	}
}
