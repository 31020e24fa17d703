package server

import (
	"encoding/json"
	"strings"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// TestConsumerTimingWarnings: a pool reports a drain timeout longer than the
// grace; PUT /v1/policy answers with the warning and its fix, GET
// /v1/consumers shows what was reported, doctor finds it, and a grace that
// covers it warns no more. Bad timings are refused.
func TestConsumerTimingWarnings(t *testing.T) {
	e := newEnv(t)
	id := "prod/app/key"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("s1"))
	pool := e.token("read:prod/app")
	rep := credential.ConsumerReport{ID: "orders-pool", Name: "orders", Host: "h1", Kind: "pool",
		Credentials: []credential.ConsumerDelivery{{ID: id, Version: 1, ActionOK: true, RefreshSeconds: 5, DrainTimeoutSeconds: 300}}}
	e.must(200, "POST", "/v1/consumers", pool, rep)

	var cs struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}
	if err := json.Unmarshal(e.must(200, "GET", "/v1/consumers?id="+id, e.admin, nil).body, &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Consumers) != 1 || cs.Consumers[0].RefreshSeconds != 5 || cs.Consumers[0].DrainTimeoutSeconds != 300 {
		t.Fatalf("consumers: %+v", cs.Consumers)
	}

	var pol struct {
		Warnings []rotation.Finding `json:"warnings"`
	}
	if err := json.Unmarshal(e.must(200, "PUT", "/v1/policy/"+id, e.admin, map[string]any{"grace": "30s"}).body, &pol); err != nil {
		t.Fatal(err)
	}
	if len(pol.Warnings) != 1 || !strings.Contains(pol.Warnings[0].Title, "drain timeout 5m0s of consumer orders-pool (pool on h1)") ||
		pol.Warnings[0].Fix != "nebula-credential policy set "+id+" --grace 5m5s" {
		t.Fatalf("warnings: %+v", pol.Warnings)
	}
	var rep2 rotation.Report
	if err := json.Unmarshal(e.must(200, "GET", "/v1/doctor/"+id, e.admin, nil).body, &rep2); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range rep2.Findings {
		found = found || f.Severity == "warning" && f.Fix == pol.Warnings[0].Fix
	}
	if !found {
		t.Fatalf("doctor findings: %+v", rep2.Findings)
	}

	// Following the fix: no warning left (the answer always has the list).
	r := e.must(200, "PUT", "/v1/policy/"+id, e.admin, map[string]any{"grace": "5m5s"})
	if !strings.Contains(string(r.body), `"warnings":[]`) {
		t.Fatalf("after the fix: %s", r.body)
	}

	for _, bad := range []float64{-1, 400 * 24 * 3600} {
		rep.Credentials[0].DrainTimeoutSeconds = bad
		e.must(400, "POST", "/v1/consumers", pool, rep)
	}
}
