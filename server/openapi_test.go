package server

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes keeps openapi.json in step with the routes: every
// registered route is documented, every documented operation is served, and
// an example path of each operation reaches that very route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, raw := range ops {
			var op struct {
				OperationID string                     `json:"operationId"`
				Responses   map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			if op.OperationID == "" || len(op.Responses) == 0 {
				t.Errorf("%s %s: no operationId or responses", m, p)
			}
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	served := map[string]bool{}
	for _, rt := range e.srv.routes {
		key := rt.method + " " + strings.ReplaceAll(rt.path, "{id...}", "{id}")
		served[key] = true
		if !documented[key] {
			t.Errorf("route %s is not in openapi.json", key)
		}
	}
	var keys []string
	for k := range documented {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		if !served[key] {
			t.Errorf("openapi.json documents %s, which no route serves", key)
			continue
		}
		method, path, _ := strings.Cut(key, " ")
		example := strings.NewReplacer("{id}", "prod/db/orders", "{tid}", "tok_0123").Replace(path)
		req := httptest.NewRequest(method, example, nil)
		_, pattern := e.srv.mux.Handler(req)
		want := method + " " + strings.ReplaceAll(path, "{id}", "{id...}")
		if pattern != want {
			t.Errorf("%s %s is routed to %q, want %q", method, example, pattern, want)
		}
	}
}
