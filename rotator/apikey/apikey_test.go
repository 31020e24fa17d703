package apikey_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/apikey"
	"github.com/nebula-credential/nebula-credential/rotator/apikey/apikeytest"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

var credSeq atomic.Int64

// newCred returns version 1 of a credential whose key a person created.
func newCred(svc *apikeytest.Service, extra map[string]any) rotator.Credential {
	k := svc.Mint("created by hand", "")
	f := svc.Spec()
	f["key_id"] = k.ID
	for n, v := range extra {
		f[n] = v
	}
	return rotator.Credential{
		ID: fmt.Sprintf("test/api/%d", credSeq.Add(1)), Type: "api_key", Version: 1,
		Fields: f, Secret: secret.Map{"key": secret.New(k.Secret)},
	}
}

func authenticates(t *testing.T, svc *apikeytest.Service, c rotator.Credential) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", svc.URL()+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+c.Secret["key"].Reveal())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("authenticates: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// mapResolver resolves credentials from a map.
type mapResolver map[string]rotator.Credential

func (m mapResolver) Resolve(_ context.Context, id string) (rotator.Credential, error) {
	c, ok := m[id]
	if !ok {
		return rotator.Credential{}, rotator.Errorf(rotator.ClassConfig, "resolve", "no credential %q", id)
	}
	return c, nil
}

func TestConformanceKeyService(t *testing.T) {
	svc := apikeytest.NewService(t)
	rotatortest.Run(t, rotatortest.Harness{
		Rotator:       rotator.Sanitize(apikey.New(apikey.Config{})),
		Strategies:    []rotator.Strategy{rotator.Dual},
		NewCredential: func(t *testing.T) rotator.Credential { return newCred(svc, nil) },
		Authenticates: func(t *testing.T, c rotator.Credential) bool { return authenticates(t, svc, c) },
	})
}

// The key-management calls authenticate with a separate admin credential.
func TestConformanceAuthCredential(t *testing.T) {
	svc := apikeytest.NewService(t)
	admin := svc.Mint("admin", "")
	res := mapResolver{"test/api/admin": {ID: "test/api/admin", Secret: secret.Map{"key": secret.New(admin.Secret)}, Fields: map[string]any{"key_id": admin.ID}}}
	rotatortest.Run(t, rotatortest.Harness{
		Rotator:    apikey.New(apikey.Config{}),
		Resolver:   res,
		Strategies: []rotator.Strategy{rotator.Dual},
		NewCredential: func(t *testing.T) rotator.Credential {
			// A read-only key: it cannot mint or revoke, so every management call
			// must go through the admin credential.
			k := svc.Mint("reader", "read")
			c := newCred(svc, map[string]any{"auth_credential": "test/api/admin", "key_id": k.ID})
			c.Secret = secret.Map{"key": secret.New(k.Secret)}
			return c
		},
		Authenticates: func(t *testing.T, c rotator.Credential) bool { return authenticates(t, svc, c) },
	})
}

func stage(t *testing.T, r rotator.Rotator, cur rotator.Credential, id int64, res rotator.Resolver) (rotator.Credential, error) {
	t.Helper()
	resp, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, Strategy: rotator.Dual, RotationID: id, Resolver: res})
	if err != nil {
		return rotator.Credential{}, err
	}
	p := cur
	p.Version++
	p.Fields = map[string]any{}
	for k, v := range cur.Fields {
		p.Fields[k] = v
	}
	for k, v := range resp.Fields {
		p.Fields[k] = v
	}
	p.Secret = resp.Secret
	return p, nil
}

// The old key keeps working through grace and is refused after Retire.
func TestOldKeyWorksUntilRetire(t *testing.T) {
	svc := apikeytest.NewService(t)
	r := apikey.New(apikey.Config{})
	cur := newCred(svc, nil)
	pend, err := stage(t, r, cur, 41, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: pend}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // consumers still on the old key during grace
		if !authenticates(t, svc, cur) || !authenticates(t, svc, pend) {
			t.Fatalf("during grace (%d): both keys must work", i)
		}
	}
	if _, err := r.Retire(t.Context(), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual}); err != nil {
		t.Fatal(err)
	}
	if authenticates(t, svc, cur) {
		t.Fatal("old key still works after retire")
	}
	if !authenticates(t, svc, pend) {
		t.Fatal("new key refused after retire")
	}
	// The key was deleted by a person meanwhile: retire again is still fine.
	if _, err := r.Retire(t.Context(), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual}); err != nil {
		t.Fatalf("retire of a key already gone: %v", err)
	}
}

// A Stage retried with the same rotation ID gets the same key: the service
// replays the create, even when the first response was lost after the key
// was made.
func TestStageIdempotent(t *testing.T) {
	svc := apikeytest.NewService(t)
	r := apikey.New(apikey.Config{})
	cur := newCred(svc, nil)

	svc.Inject(apikeytest.Fault{Route: apikeytest.RouteCreate, Status: http.StatusBadGateway, AfterCommit: true})
	_, err := stage(t, r, cur, 77, nil)
	if !rotator.Retryable(err) {
		t.Fatalf("lost response: want a retryable error, got %v", err)
	}
	a, err := stage(t, r, cur, 77, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := stage(t, r, cur, 77, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Secret.Equal(b.Secret) || a.Fields["key_id"] != b.Fields["key_id"] {
		t.Fatal("same rotation ID produced two different keys")
	}
	if got := len(svc.Live()); got != 2 {
		t.Fatalf("live keys = %d, want 2 (current + one minted)", got)
	}
	if n, sent := svc.CreateCount(), svc.Count(apikeytest.RouteCreate); n != 1 || sent != 3 {
		t.Fatalf("creates executed = %d of %d sent, want 1 of 3", n, sent)
	}
	c, err := stage(t, r, cur, 78, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Secret.Equal(a.Secret) {
		t.Fatal("a new rotation ID returned the old rotation's key")
	}
}

func TestErrorClasses(t *testing.T) {
	svc := apikeytest.NewService(t)
	r := rotator.Sanitize(apikey.New(apikey.Config{Now: func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }}))
	cur := newCred(svc, nil)

	cases := []struct {
		name       string
		f          apikeytest.Fault
		class      rotator.Class
		retryAfter time.Duration
	}{
		{"429 seconds", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 429, RetryAfter: "7"}, rotator.ClassTransient, 7 * time.Second},
		{"429 date", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 429, RetryAfter: "Tue, 01 Jan 2030 00:00:30 GMT"}, rotator.ClassTransient, 30 * time.Second},
		{"503", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 503, RetryAfter: "2"}, rotator.ClassTransient, 2 * time.Second},
		{"500 no header", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 500}, rotator.ClassTransient, 0},
		{"401", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 401}, rotator.ClassAuth, 0},
		{"403", apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 403}, rotator.ClassPermission, 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc.Inject(tc.f)
			_, err := stage(t, r, cur, int64(1000+i), nil)
			if got := rotator.ClassOf(err); got != tc.class {
				t.Fatalf("class = %s, want %s (%v)", got, tc.class, err)
			}
			if got := rotator.RetryAfter(err); got != tc.retryAfter {
				t.Fatalf("RetryAfter = %v, want %v", got, tc.retryAfter)
			}
			if rotator.Retryable(err) != (tc.class == rotator.ClassTransient) {
				t.Fatalf("Retryable = %v for %s", rotator.Retryable(err), tc.class)
			}
		})
	}

	t.Run("real 403 from a read-only key", func(t *testing.T) {
		k := svc.Mint("reader", "read")
		c := newCred(svc, map[string]any{"key_id": k.ID})
		c.Secret = secret.Map{"key": secret.New(k.Secret)}
		_, err := stage(t, r, c, 2001, nil)
		if rotator.ClassOf(err) != rotator.ClassPermission || rotator.PrivilegeOf(err) == "" {
			t.Fatalf("want permission error naming the step, got %v (privilege %q)", err, rotator.PrivilegeOf(err))
		}
	})
	t.Run("revoked auth key", func(t *testing.T) {
		c := newCred(svc, nil)
		req, _ := http.NewRequest("DELETE", svc.URL()+"/v1/keys/"+c.String("key_id"), nil)
		req.Header.Set("Authorization", "Bearer "+cur.Secret["key"].Reveal())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		_, err = stage(t, r, c, 2002, nil)
		if rotator.ClassOf(err) != rotator.ClassAuth || rotator.Retryable(err) {
			t.Fatalf("want non-retryable auth error, got %v", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		c := newCred(svc, nil)
		c.Fields = apikeytest.Spec("http://127.0.0.1:1")
		_, err := stage(t, r, c, 2003, nil)
		if !rotator.Retryable(err) {
			t.Fatalf("connection refused must be transient, got %v", err)
		}
	})
	t.Run("flaky then fine", func(t *testing.T) {
		svc.Inject(apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 503}, apikeytest.Fault{Route: apikeytest.RouteCreate, Status: 429, RetryAfter: "1"})
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if _, err = stage(t, r, cur, 2004, nil); err == nil || !rotator.Retryable(err) {
				break
			}
		}
		if err != nil {
			t.Fatalf("third attempt: %v", err)
		}
	})
	t.Run("bad spec", func(t *testing.T) {
		c := newCred(svc, nil)
		delete(c.Fields["create"].(map[string]any), "key_pointer")
		_, err := stage(t, r, c, 2005, nil)
		if rotator.ClassOf(err) != rotator.ClassConfig {
			t.Fatalf("want config error, got %v", err)
		}
		c = newCred(svc, nil)
		c.Fields["verify"].(map[string]any)["headers"] = map[string]string{"Authorization": "Bearer {{kye}}"}
		if _, err := r.Verify(t.Context(), rotator.VerifyRequest{Credential: c}); rotator.ClassOf(err) != rotator.ClassConfig || !strings.Contains(err.Error(), "kye") {
			t.Fatalf("want config error naming the typo, got %v", err)
		}
	})
	t.Run("wrong strategy", func(t *testing.T) {
		_, err := r.Stage(t.Context(), rotator.StageRequest{Current: cur, Strategy: rotator.InPlace, RotationID: 9})
		if rotator.ClassOf(err) != rotator.ClassConfig {
			t.Fatalf("want config error, got %v", err)
		}
	})
}

// A crash after the provider minted a key but before the journal recorded it
// leaves a live key nobody knows; Cleanup finds it by its marker and revokes
// it, and never touches keys it did not create.
func TestCleanupRevokesOrphans(t *testing.T) {
	svc := apikeytest.NewService(t)
	r := apikey.New(apikey.Config{})
	cur := newCred(svc, nil)
	human := svc.Mint("someone's laptop", "")
	other := newCred(svc, nil) // another credential's key on the same account
	if _, err := stage(t, r, other, 500, nil); err != nil {
		t.Fatal(err)
	}
	// Two crashed stages: the responses never reached the store.
	for id := int64(501); id <= 502; id++ {
		if _, err := stage(t, r, cur, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	pend, err := stage(t, r, cur, 503, nil) // the one the store did record
	if err != nil {
		t.Fatal(err)
	}
	before := len(svc.Live())
	resp, err := r.Cleanup(t.Context(), rotator.CleanupRequest{Keep: []rotator.Credential{cur, pend}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Revoked != 2 {
		t.Fatalf("revoked %d, want 2", resp.Revoked)
	}
	live := svc.Live()
	if len(live) != before-2 {
		t.Fatalf("live keys %d, want %d", len(live), before-2)
	}
	for _, id := range []string{cur.String("key_id"), pend.String("key_id"), human.ID, other.String("key_id")} {
		if _, ok := live[id]; !ok {
			t.Fatalf("cleanup revoked %s, which it must keep", id)
		}
	}
	if !authenticates(t, svc, cur) || !authenticates(t, svc, pend) {
		t.Fatal("kept keys stopped working")
	}
	resp, err = r.Cleanup(t.Context(), rotator.CleanupRequest{Keep: []rotator.Credential{cur, pend}})
	if err != nil || resp.Revoked != 0 {
		t.Fatalf("second cleanup: revoked %d, err %v; want 0, nil", resp.Revoked, err)
	}

	// A kept version without key_id cannot be told apart from an orphan.
	noID := pend
	noID.Fields = map[string]any{}
	for k, v := range pend.Fields {
		if k != "key_id" {
			noID.Fields[k] = v
		}
	}
	if _, err := r.Cleanup(t.Context(), rotator.CleanupRequest{Keep: []rotator.Credential{cur, noID}}); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("want a refusal, got %v", err)
	}
}

// Revert never revokes the key being served, even when handed a pending
// version that inherited the current key_id (a Stage that never finished).
func TestRevertRefusesCurrentKey(t *testing.T) {
	svc := apikeytest.NewService(t)
	r := apikey.New(apikey.Config{})
	cur := newCred(svc, nil)
	unfinished := cur
	unfinished.Version = 2
	unfinished.Secret = secret.Map{}
	if _, err := r.Revert(t.Context(), rotator.RevertRequest{Current: cur, Pending: unfinished, Strategy: rotator.Dual}); err != nil {
		t.Fatalf("revert of an empty pending: %v", err)
	}
	inherited := cur
	inherited.Version = 2
	inherited.Secret = secret.Map{"key": secret.New("sk_live_some_other_value")}
	if _, err := r.Revert(t.Context(), rotator.RevertRequest{Current: cur, Pending: inherited, Strategy: rotator.Dual}); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("want refusal, got %v", err)
	}
	if _, err := r.Retire(t.Context(), rotator.RetireRequest{Old: inherited, Current: cur, Strategy: rotator.Dual}); rotator.ClassOf(err) != rotator.ClassConfig {
		t.Fatalf("retire: want refusal, got %v", err)
	}
	if !authenticates(t, svc, cur) {
		t.Fatal("current key was revoked")
	}
}

// No failure path may print a key: the service echoes the Authorization
// header, body and URL in its errors, and keys sit in URLs too.
func TestErrorsNeverContainSecrets(t *testing.T) {
	svc := apikeytest.NewService(t)
	svc.SetEcho(true)
	r := apikey.New(apikey.Config{}) // unwrapped: the rotator itself must not leak
	admin := svc.Mint("admin", "")
	res := mapResolver{"admin": {Secret: secret.Map{"key": secret.New(admin.Secret)}}}
	cur := newCred(svc, nil)
	pend, err := stage(t, r, cur, 900, nil)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{cur.Secret["key"].Reveal(), pend.Secret["key"].Reveal(), admin.Secret}

	var errs []error
	collect := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("expected a failure")
		}
		errs = append(errs, err)
	}
	// The service refuses the create and echoes the request.
	svc.SetMaxKeys(0)
	_, err = stage(t, r, cur, 901, nil)
	collect(err)
	svc.SetMaxKeys(10)
	// Secrets in the URL query, the service answers 404 with the URL echoed.
	withQuery := func(c rotator.Credential, auth string) rotator.Credential {
		c.Fields = apikeytest.Spec(svc.URL())
		c.Fields["key_id"] = cur.Fields["key_id"]
		c.Fields["create"].(map[string]any)["url"] = svc.URL() + "/v1/nokeys?token={{auth_key}}&old={{key}}"
		c.Fields["verify"].(map[string]any)["url"] = svc.URL() + "/v1/nome/{{key}}?k={{key}}"
		if auth != "" {
			c.Fields["auth_credential"] = auth
		}
		return c
	}
	_, err = stage(t, r, withQuery(cur, ""), 902, nil)
	collect(err)
	_, err = stage(t, r, withQuery(cur, "admin"), 903, res)
	collect(err)
	_, err = r.Verify(t.Context(), rotator.VerifyRequest{Credential: withQuery(pend, "")})
	collect(err)
	// Unreachable host with the key in the URL: the transport error quotes it.
	unreach := withQuery(pend, "")
	unreach.Fields["verify"].(map[string]any)["url"] = "http://127.0.0.1:1/v1/me?k={{key}}"
	_, err = r.Verify(t.Context(), rotator.VerifyRequest{Credential: unreach})
	collect(err)
	// A verify with the wrong key, echoed back.
	bad := pend
	bad.Secret = secret.Map{"key": secret.New("sk_live_wrong_" + secret.Token(8).Reveal())}
	secrets = append(secrets, bad.Secret["key"].Reveal())
	_, err = r.Verify(t.Context(), rotator.VerifyRequest{Credential: bad})
	collect(err)
	// Revoke with a revoked auth key.
	if _, err := r.Retire(t.Context(), rotator.RetireRequest{Old: cur, Current: pend}); err != nil {
		t.Fatal(err)
	}
	_, err = r.Revert(t.Context(), rotator.RevertRequest{Current: cur, Pending: pend})
	collect(err)

	for _, err := range errs {
		msg := err.Error()
		for _, s := range secrets {
			// Any 10 characters of a key's random part count as a leak.
			for i := len("sk_live_"); i+10 <= len(s); i++ {
				if strings.Contains(msg, s[i:i+10]) {
					t.Fatalf("error leaks (part of) a key: %s", msg)
				}
			}
		}
		if testing.Verbose() {
			t.Logf("note: %s", msg)
		}
	}
	if !strings.Contains(errs[0].Error(), secret.Redacted) {
		t.Fatalf("the echoed Authorization header should show as redacted: %v", errs[0])
	}
}

// The service allows three creates a second; the fourth is refused with 429
// and Retry-After, and succeeds once the rotator waited as told. On a loaded
// machine four creates may not fit in one second, so the test creates until
// it is refused (a few more tries at most) instead of counting on the clock.
func TestRateLimitRetryAfter(t *testing.T) {
	svc := apikeytest.NewService(t)
	svc.SetCreateLimit(3)
	r := apikey.New(apikey.Config{})
	cur := newCred(svc, nil)
	var err error
	id := int64(1)
	for ; id <= 40; id++ {
		if _, err = stage(t, r, cur, id, nil); err != nil {
			break
		}
	}
	wait := rotator.RetryAfter(err)
	if !rotator.Retryable(err) || wait <= 0 || wait > 2*time.Second {
		t.Fatalf("fourth create in a second: want transient with Retry-After, got %v (after %v)", err, wait)
	}
	time.Sleep(wait)
	if _, err := stage(t, r, cur, id, nil); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
}
