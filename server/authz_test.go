package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
)

// endpoint is one operation and the permission it needs.
type endpoint struct {
	method, path string // path with %s for the credential ID
	body         string
	// need: a permission, "any" (metadata: any grant covering the ID) or
	// "global" (admin on *).
	need string
}

var endpoints = []endpoint{
	{"GET", "/v1/credentials/%s", "", "any"},
	{"GET", "/v1/credentials/%s?reveal=true", "", "read"},
	{"PUT", "/v1/credentials/%s", `{"type":"generic","secret":{"k":"v2"}}`, "write"},
	{"DELETE", "/v1/credentials/%s", "", "write"},
	{"DELETE", "/v1/credentials/%s?purge=true", "", "delete"},
	{"GET", "/v1/history/%s", "", "any"},
	{"POST", "/v1/rotate/%s", "", "rotate"},
	{"POST", "/v1/rollback/%s", "", "rollback"},
	{"GET", "/v1/policy/%s", "", "any"},
	{"PUT", "/v1/policy/%s", `{"grace":"1m"}`, "write"},
	{"POST", "/v1/grace/%s", `{"extend":"1m"}`, "rotate"},
	{"GET", "/v1/doctor/%s", "", "any"},
	{"POST", "/v1/resolve/%s", "", "rotate"},
	{"POST", "/v1/retry/%s", "", "rotate"},
	{"POST", "/v1/retry/%s", `{"rollback":true}`, "rollback"},
	{"GET", "/v1/rotations?id=%s", "", "any"},
	{"GET", "/v1/tokens", "", "global"},
	{"POST", "/v1/tokens", `{"name":"x","grants":["read:a"]}`, "global"},
	{"DELETE", "/v1/tokens/tok_000000000000", "", "global"},
	{"POST", "/v1/backup", "", "global"},
	{"POST", "/v1/restore", "", "global"},
	{"GET", "/v1/audit/verify", "", "global"},
	{"GET", "/v1/keys", "", "global"},
	{"POST", "/v1/keys/rotate", "", "global"},
}

func (ep endpoint) url(id string) string {
	if strings.Contains(ep.path, "%s") {
		return fmt.Sprintf(ep.path, id)
	}
	return ep.path
}

// TestAuthorizationMatrix: each permission × each endpoint × a grant inside
// and outside the credential's prefix.
func TestAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	const id = "prod/db/x"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("v1"))
	denials := 0
	for _, perm := range acl.Permissions() {
		for _, where := range []string{"inside", "outside", "sibling"} {
			prefix := map[string]string{"inside": "prod/db", "outside": "dev", "sibling": "prod/d"}[where]
			tok := e.token(string(perm) + ":" + prefix)
			for _, ep := range endpoints {
				// use lets a token bind credentials to an admin credential;
				// it shows nothing, not even metadata.
				allowed := where == "inside" && ep.need != "global" &&
					(ep.need == "any" && perm != acl.Use || ep.need == string(perm) || perm == acl.Admin)
				r := e.do(ep.method, ep.url(id), tok, ep.body)
				name := fmt.Sprintf("%s:%s %s %s", perm, prefix, ep.method, ep.url(id))
				if allowed && r.status == 403 {
					t.Errorf("%s: denied: %s", name, r.body)
				}
				if !allowed {
					denials++
					if r.status != 403 || r.code() != CodeForbidden {
						t.Errorf("%s: %d %s, want 403 forbidden", name, r.status, r.body)
					}
				}
				if r.status == 500 {
					t.Errorf("%s: 500: %s", name, r.body)
				}
			}
			// Restore the credential for the next token: end any grace a
			// rotate or retry above left open (a put during grace is 409).
			e.do("POST", "/v1/grace/"+id, e.admin, `{"end":true}`)
			e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("v1"))
			e.do("POST", "/v1/rollback/"+id, e.admin, nil)
		}
	}
	// The store-wide endpoints work with admin on everything.
	for _, ep := range endpoints {
		if ep.need != "global" {
			continue
		}
		if r := e.do(ep.method, ep.url(id), e.admin, ep.body); r.status == 403 {
			t.Errorf("admin:* %s %s: %s", ep.method, ep.path, r.body)
		}
	}
	// Every denial is in the audit log.
	recs, err := audit.List(t.Context(), e.m.Store(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Outcome == "denied" && strings.HasPrefix(r.Actor, "token:") {
			n++
		}
	}
	if n != denials {
		t.Errorf("%d denials audited, want %d", n, denials)
	}
}

// TestNoExistenceOracle: a token without access gets the same answer for an
// existing and a missing credential, on every endpoint.
func TestNoExistenceOracle(t *testing.T) {
	e := newEnv(t)
	existing, missing := "prod/db/x", "prod/db/nothing"
	e.must(200, "PUT", "/v1/credentials/"+existing, e.admin, genericBody("v1"))
	for _, grant := range []string{"read:dev", "rotate:prod/db/y", "admin:dev"} {
		tok := e.token(grant)
		for _, ep := range endpoints {
			if ep.need == "global" {
				continue
			}
			a := e.do(ep.method, ep.url(existing), tok, ep.body)
			b := e.do(ep.method, ep.url(missing), tok, ep.body)
			norm := func(r resp, id string) string {
				var body errorBody
				_ = json.Unmarshal(r.body, &body)
				body.Error.RequestID = ""
				body.Error.Message = strings.ReplaceAll(body.Error.Message, id, "ID")
				out, _ := json.Marshal(body)
				return fmt.Sprintf("%d %s", r.status, out)
			}
			if na, nb := norm(a, existing), norm(b, missing); na != nb {
				t.Errorf("%s %s %s: existing %s, missing %s", grant, ep.method, ep.path, na, nb)
			}
			if a.status != 403 {
				t.Errorf("%s %s %s: %d, want 403", grant, ep.method, ep.path, a.status)
			}
		}
		// Listing shows nothing of prod/db to it, and its cursor gives nothing away.
		r := e.must(200, "GET", "/v1/credentials?prefix=prod/", tok, nil)
		if strings.Contains(string(r.body), existing) {
			t.Errorf("%s lists %s: %s", grant, existing, r.body)
		}
	}
	// A token that sees metadata but may not read still gets 403 for the
	// secret of both.
	tok := e.token("rotate:prod/db")
	a := e.do("GET", "/v1/credentials/"+existing+"?reveal=true", tok, nil)
	b := e.do("GET", "/v1/credentials/"+missing+"?reveal=true", tok, nil)
	if a.status != 403 || b.status != 403 {
		t.Errorf("reveal without read: %d / %d", a.status, b.status)
	}
	// With access, the difference is visible: 200 and 404.
	e.must(200, "GET", "/v1/credentials/"+existing, tok, nil)
	e.must(404, "GET", "/v1/credentials/"+missing, tok, nil)
}

func TestListFiltersByGrants(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a/1", "a/2", "b/1", "b/2", "c/1", "c/2", "c/3"} {
		e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("v"))
	}
	tok := e.token("read:a", "rotate:c/2", "write:c/3")
	var ids []string
	after := ""
	for range 10 {
		r := e.must(200, "GET", "/v1/credentials?limit=2&after="+after, tok, nil)
		page := r.json(t)
		for _, c := range page["credentials"].([]any) {
			ids = append(ids, c.(map[string]any)["id"].(string))
		}
		after = page["next"].(string)
		if after == "" {
			break
		}
		if !acl.Visible(mustGrants(t, "read:a", "rotate:c/2", "write:c/3"), after) {
			t.Errorf("cursor %q is not visible to the token", after)
		}
	}
	if got := strings.Join(ids, " "); got != "a/1 a/2 c/2 c/3" {
		t.Errorf("listed %q", got)
	}
}

func mustGrants(t *testing.T, s ...string) []acl.Grant {
	var out []acl.Grant
	for _, x := range s {
		g, err := acl.ParseGrant(x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}
