package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/audit"
)

// TestNotifyEndpoints: subscriptions need notify on their prefix; listings
// and deliveries show only what the token manages; URLs are redacted and the
// signing secret is shown once.
func TestNotifyEndpoints(t *testing.T) {
	e := newEnv(t)
	prod := e.token("notify:prod")
	reader := e.token("read:*")
	const hook = "https://user:url-password-42@hooks.example.com/a/abcdefghijklmnopqrstu?k=query-secret-42"

	// Without the permission, or outside the prefix: 403.
	e.must(403, "POST", "/v1/notify/subscriptions", reader, map[string]any{"url": hook, "prefix": "prod"})
	e.must(403, "POST", "/v1/notify/subscriptions", prod, map[string]any{"url": hook, "prefix": "dev"})
	e.must(403, "POST", "/v1/notify/subscriptions", prod, map[string]any{"url": hook})
	e.must(400, "POST", "/v1/notify/subscriptions", prod, map[string]any{"url": "ftp://x", "prefix": "prod"})
	e.must(400, "POST", "/v1/notify/subscriptions", prod, map[string]any{"url": hook, "prefix": "prod", "events": []string{"nope"}})

	r := e.must(201, "POST", "/v1/notify/subscriptions", prod, map[string]any{"url": hook, "prefix": "prod/db", "name": "db", "events": []string{"rotation_failed"}})
	var created SubscriptionCreated
	if err := json.Unmarshal(r.body, &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.SigningSecret, "whsec_") || created.Subscription.Prefix != "prod/db" {
		t.Fatalf("created: %s", r.body)
	}
	all := e.must(201, "POST", "/v1/notify/subscriptions", e.admin, map[string]any{"url": "http://127.0.0.1:9/x", "format": "slack"})
	allID := all.json(t)["subscription"].(map[string]any)["id"].(string)

	// The prod token lists only its own; admin lists both. No secret anywhere.
	l := e.must(200, "GET", "/v1/notify/subscriptions", prod, nil)
	var list SubscriptionList
	if err := json.Unmarshal(l.body, &list); err != nil || len(list.Subscriptions) != 1 || list.Subscriptions[0].ID != created.Subscription.ID {
		t.Fatalf("prod list: %s", l.body)
	}
	la := e.must(200, "GET", "/v1/notify/subscriptions", e.admin, nil)
	for _, body := range []string{string(l.body), string(la.body)} {
		for _, s := range []string{"url-password-42", "query-secret-42", "abcdefghijklmnopqrstu", created.SigningSecret} {
			if strings.Contains(body, s) {
				t.Errorf("listing reveals %q: %s", s, body)
			}
		}
	}
	if !strings.Contains(string(la.body), allID) {
		t.Errorf("admin list: %s", la.body)
	}
	e.must(200, "GET", "/v1/notify/subscriptions", reader, nil) // empty, not an error

	// Test, deliveries, one delivery: each within the grant.
	tr := e.must(202, "POST", "/v1/notify/subscriptions/"+created.Subscription.ID+"/test", prod, nil)
	did := int64(tr.json(t)["id"].(float64))
	e.must(403, "POST", "/v1/notify/subscriptions/"+allID+"/test", prod, nil)
	e.must(403, "POST", "/v1/notify/subscriptions/sub_missing/test", prod, nil)
	e.must(404, "POST", "/v1/notify/subscriptions/sub_missing/test", e.admin, nil)
	e.must(202, "POST", "/v1/notify/subscriptions/"+allID+"/test", e.admin, nil)
	d := e.must(200, "GET", "/v1/notify/deliveries", prod, nil)
	var dl DeliveryList
	if err := json.Unmarshal(d.body, &dl); err != nil || len(dl.Deliveries) != 1 || dl.Deliveries[0].ID != did {
		t.Fatalf("prod deliveries: %s", d.body)
	}
	e.must(200, "GET", fmt.Sprintf("/v1/notify/deliveries/%d", did), prod, nil)
	e.must(403, "GET", fmt.Sprintf("/v1/notify/deliveries/%d", did+1), prod, nil)
	e.must(400, "GET", "/v1/notify/deliveries?state=bogus", prod, nil)
	e.must(200, "GET", "/v1/notify/deliveries?state=dead", prod, nil)
	// Replaying a pending delivery is refused; one of another's is forbidden.
	e.must(400, "POST", "/v1/notify/replay", prod, map[string]any{"ids": []int64{did}})
	e.must(403, "POST", "/v1/notify/replay", prod, map[string]any{"ids": []int64{did + 1}})
	e.must(200, "POST", "/v1/notify/replay", prod, map[string]any{})

	// Remove: forbidden for another's, then gone.
	e.must(403, "DELETE", "/v1/notify/subscriptions/"+allID, prod, nil)
	e.must(200, "DELETE", "/v1/notify/subscriptions/"+created.Subscription.ID, prod, nil)
	e.must(403, "DELETE", "/v1/notify/subscriptions/"+created.Subscription.ID, prod, nil)
	e.must(404, "DELETE", "/v1/notify/subscriptions/"+created.Subscription.ID, e.admin, nil)

	// Every call is audited; no audit entry holds the URL's secrets.
	recs, err := audit.List(t.Context(), e.m.Store(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rec := range recs {
		b, _ := json.Marshal(rec)
		p := string(b)
		if strings.Contains(p, "notify.") {
			n++
		}
		for _, s := range []string{"url-password-42", "query-secret-42", "abcdefghijklmnopqrstu", created.SigningSecret} {
			if strings.Contains(p, s) {
				t.Errorf("audit entry reveals %q: %s", s, p)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d notify audit entries", n)
	}
	if strings.Contains(e.logs.String(), "url-password-42") || strings.Contains(e.logs.String(), created.SigningSecret) {
		t.Error("logs reveal a subscription secret")
	}
}
