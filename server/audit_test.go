package server

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/nebula-credential/nebula-credential/audit"
	_ "github.com/nebula-credential/nebula-credential/store/sqlite" // registers the "sqlite" driver
)

// auditedSession makes some API traffic and returns the number of entries.
func auditedSession(e *env) int64 {
	e.t.Helper()
	e.must(200, "PUT", "/v1/credentials/prod/a", e.admin, genericBody("s1"))
	e.must(200, "GET", "/v1/credentials/prod/a?reveal=true", e.admin, nil)
	e.must(200, "POST", "/v1/rotate/prod/a", e.admin, nil)
	e.must(403, "GET", "/v1/credentials/prod/a", e.token("read:dev"), nil)
	e.must(200, "GET", "/v1/history/prod/a", e.admin, nil)
	n, err := audit.Verify(e.t.Context(), e.m.Store(), nil)
	if err != nil {
		e.t.Fatalf("intact log does not verify: %v", err)
	}
	if n < 10 {
		e.t.Fatalf("only %d entries", n)
	}
	return n
}

// tamper runs SQL directly on the SQLite file, as an attacker with file
// access would.
func (e *env) tamper(stmts ...string) {
	e.t.Helper()
	db, err := sql.Open("sqlite", e.dbPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

func wantProblem(t *testing.T, e *env, anchor []byte, seq int64) {
	t.Helper()
	_, err := audit.Verify(t.Context(), e.m.Store(), anchor)
	var p *audit.Problem
	if !errors.As(err, &p) {
		t.Fatalf("Verify = %v, want a problem at %d", err, seq)
	}
	if p.Seq != seq {
		t.Errorf("problem at %d (%s), want %d", p.Seq, p.Reason, seq)
	}
	// The API reports it too.
	q := "/v1/audit/verify"
	if anchor != nil {
		q += "?anchor=" + hex.EncodeToString(anchor)
	}
	r := e.must(200, "GET", q, e.admin, nil).json(t)
	if r["ok"] != false || r["seq"] != float64(seq) {
		t.Errorf("API verify: %v", r)
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	t.Run("edit", func(t *testing.T) {
		e := newEnv(t)
		auditedSession(e)
		e.tamper(`UPDATE audit SET payload = CAST(replace(CAST(payload AS TEXT), '"ok"', '"no"') AS BLOB) WHERE seq = 5`)
		wantProblem(t, e, nil, 5)
	})
	t.Run("edit with recomputed hash", func(t *testing.T) {
		e := newEnv(t)
		auditedSession(e)
		// Rewriting one entry and its own hash breaks the next link.
		var payload, prev []byte
		db, err := sql.Open("sqlite", e.dbPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT payload, prev_hash FROM audit WHERE seq = 4`).Scan(&payload, &prev); err != nil {
			t.Fatal(err)
		}
		payload = append(payload[:len(payload)-1], []byte(`,"x":1}`)...)
		if _, err := db.Exec(`UPDATE audit SET payload = ?, hash = ? WHERE seq = 4`, payload, audit.Hash(4, prev, payload)); err != nil {
			t.Fatal(err)
		}
		db.Close()
		wantProblem(t, e, nil, 5)
	})
	t.Run("delete", func(t *testing.T) {
		e := newEnv(t)
		auditedSession(e)
		e.tamper(`DELETE FROM audit WHERE seq = 6`)
		wantProblem(t, e, nil, 6)
	})
	t.Run("reorder", func(t *testing.T) {
		e := newEnv(t)
		auditedSession(e)
		e.tamper(
			`UPDATE audit SET seq = -1 WHERE seq = 4`,
			`UPDATE audit SET seq = 4 WHERE seq = 5`,
			`UPDATE audit SET seq = 5 WHERE seq = -1`,
		)
		wantProblem(t, e, nil, 4)
	})
	t.Run("truncate", func(t *testing.T) {
		e := newEnv(t)
		n := auditedSession(e)
		recs, err := audit.List(t.Context(), e.m.Store(), n-1, 1)
		if err != nil || len(recs) != 1 {
			t.Fatal(recs, err)
		}
		anchor, _ := hex.DecodeString(recs[0].Hash)
		// The anchor of the intact log verifies.
		if _, err := audit.Verify(t.Context(), e.m.Store(), anchor); err != nil {
			t.Fatal(err)
		}
		e.tamper(`DELETE FROM audit WHERE seq > ` + itoa(n-3))
		// Without the anchor a truncated chain looks whole; with it, not.
		if _, err := audit.Verify(t.Context(), e.m.Store(), nil); err != nil {
			t.Fatalf("truncated chain without anchor: %v", err)
		}
		_, err = audit.Verify(t.Context(), e.m.Store(), anchor)
		var p *audit.Problem
		if !errors.As(err, &p) {
			t.Fatalf("truncation not detected: %v", err)
		}
	})
}

func itoa(n int64) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestAuditEntriesThroughAPI: entries name the token and carry the request ID.
func TestAuditEntriesThroughAPI(t *testing.T) {
	e := newEnv(t)
	before, _ := audit.Verify(t.Context(), e.m.Store(), nil)
	r := e.must(200, "PUT", "/v1/credentials/prod/a", e.admin, genericBody("s1"))
	reqID := r.header.Get("X-Request-ID")
	recs, err := audit.List(t.Context(), e.m.Store(), before, 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, rec := range recs {
		if rec.RequestID != reqID || rec.CredentialID != "prod/a" || rec.Outcome != "ok" {
			t.Errorf("entry %+v", rec)
		}
		if len(rec.Actor) < 7 || rec.Actor[:6] != "token:" {
			t.Errorf("actor %q", rec.Actor)
		}
		actions = append(actions, rec.Action)
	}
	// The Manager's entry (in the write's transaction), then the server's.
	if len(actions) != 2 || actions[0] != "put" || actions[1] != "credential.put" {
		t.Errorf("actions %v, want [put credential.put]", actions)
	}
}

// TestAuditFailClosed: when the audit entry cannot be written, the request
// fails and no secret is returned.
func TestAuditFailClosed(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/prod/a", e.admin, genericBody("the-secret-value"))
	// A trigger makes every audit insert fail.
	e.tamper(`CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit disabled'); END`)
	r := e.do("GET", "/v1/credentials/prod/a?reveal=true", e.admin, nil)
	if r.status != 500 || r.code() != CodeAuditFailed {
		t.Fatalf("read without audit: %d %s", r.status, r.body)
	}
	if string(r.body) != "" && contains(r.body, "the-secret-value") {
		t.Fatal("secret returned without an audit entry")
	}
	r = e.do("PUT", "/v1/credentials/prod/a", e.admin, genericBody("new-value"))
	if r.status != 500 || r.code() != CodeAuditFailed {
		t.Fatalf("write without audit: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/rotate/prod/a", e.admin, nil)
	if r.status != 500 {
		t.Fatalf("rotate without audit: %d %s", r.status, r.body)
	}
	e.tamper(`DROP TRIGGER no_audit`)
	got := e.must(200, "GET", "/v1/credentials/prod/a?reveal=true", e.admin, nil).json(t)
	if got["version"] != 1.0 {
		t.Errorf("a write happened without its audit entry: %v", got)
	}
}

func contains(b []byte, s string) bool {
	return len(s) > 0 && string(b) != "" && indexOf(string(b), s) >= 0
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
