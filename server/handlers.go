package server

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// table lists every route. The OpenAPI test checks it against openapi.json.
func (s *Server) table() []*route {
	return []*route{
		{method: "GET", path: "/healthz", op: "healthz", public: true, handle: s.healthz},
		{method: "GET", path: "/readyz", op: "readyz", public: true, handle: s.readyz},
		{method: "GET", path: "/metrics", op: "metrics", public: true, handle: s.metricsHandler},
		{method: "GET", path: "/v1/openapi.json", op: "openapi", public: true, handle: s.openapi},

		{method: "GET", path: "/v1/credentials", op: "credential.list", audited: true, handle: s.list},
		{method: "GET", path: "/v1/credentials/{id...}", op: "credential.get", audited: true, handle: s.get},
		{method: "PUT", path: "/v1/credentials/{id...}", op: "credential.put", audited: true, handle: s.put},
		{method: "DELETE", path: "/v1/credentials/{id...}", op: "credential.delete", audited: true, handle: s.delete},
		{method: "POST", path: "/v1/import", op: "credential.import", audited: true, timeout: longTimeout, handle: s.importBatch},
		{method: "GET", path: "/v1/history/{id...}", op: "credential.history", audited: true, handle: s.history},
		{method: "POST", path: "/v1/rotate/{id...}", op: "credential.rotate", audited: true, timeout: longTimeout, handle: s.rotate},
		{method: "POST", path: "/v1/rollback/{id...}", op: "credential.rollback", audited: true, timeout: longTimeout, handle: s.rollback},
		{method: "GET", path: "/v1/policy/{id...}", op: "policy.get", audited: true, handle: s.getPolicy},
		{method: "PUT", path: "/v1/policy/{id...}", op: "policy.put", audited: true, handle: s.putPolicy},
		{method: "POST", path: "/v1/grace/{id...}", op: "grace.extend", audited: true, timeout: longTimeout, handle: s.grace},
		{method: "GET", path: "/v1/doctor/{id...}", op: "credential.doctor", audited: true, timeout: longTimeout, handle: s.doctor},
		{method: "POST", path: "/v1/resolve/{id...}", op: "rotation.resolve", audited: true, timeout: longTimeout, handle: s.resolve},
		{method: "POST", path: "/v1/retry/{id...}", op: "rotation.retry", audited: true, timeout: longTimeout, handle: s.retry},
		{method: "GET", path: "/v1/rotations", op: "rotation.list", audited: true, handle: s.rotations},
		{method: "POST", path: "/v1/approve/{id...}", op: "binding.approve", audited: true, handle: s.approve},

		{method: "GET", path: "/v1/tokens", op: "token.list", audited: true, handle: s.listTokens},
		{method: "POST", path: "/v1/tokens", op: "token.create", audited: true, handle: s.createToken},
		{method: "DELETE", path: "/v1/tokens/{tid}", op: "token.revoke", audited: true, handle: s.revokeToken},

		{method: "POST", path: "/v1/backup", op: "backup", audited: true, timeout: longTimeout, handle: s.backup},
		{method: "POST", path: "/v1/restore", op: "restore", audited: true, timeout: longTimeout, handle: s.restore},
		{method: "GET", path: "/v1/audit", op: "audit.list", audited: true, handle: s.auditList},
		{method: "GET", path: "/v1/audit/verify", op: "audit.verify", audited: true, timeout: longTimeout, handle: s.auditVerify},
		{method: "GET", path: "/v1/keys", op: "key.list", audited: true, handle: s.keys},
		{method: "POST", path: "/v1/keys/rotate", op: "key.rotate", audited: true, timeout: longTimeout, handle: s.rotateKeys},

		{method: "GET", path: "/v1/watch", op: "watch", audited: true, timeout: noTimeout, handle: s.watch},

		{method: "POST", path: "/v1/consumers", op: "consumer.report", audited: true, handle: s.reportConsumer},
		{method: "GET", path: "/v1/consumers", op: "consumer.list", audited: true, handle: s.listConsumers},

		{method: "GET", path: "/v1/status", op: "status", audited: true, handle: s.status},
	}
}

// pathID is the credential ID of the request path, validated.
func (rq *request) pathID() (string, error) {
	id := rq.r.PathValue("id")
	rq.id = id
	if err := credential.ValidateID(id); err != nil {
		return "", err
	}
	return id, nil
}

func (rq *request) query(name string) string {
	if rq.params == nil { // not through serveRoute
		rq.params = rq.r.URL.Query()
	}
	return rq.params.Get(name)
}

func (rq *request) boolQuery(name string) (bool, error) {
	v := rq.query(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalidf("query parameter %s must be true or false", name)
	}
	return b, nil
}

func (rq *request) intQuery(name string, def, lo, hi int) (int, error) {
	v := rq.query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, invalidf("query parameter %s must be a whole number from %d to %d", name, lo, hi)
	}
	return n, nil
}

func (rq *request) decode(dst any, allowEmpty bool) error {
	return decodeJSON(rq.w, rq.r, rq.s.cfg.MaxBodyBytes, dst, allowEmpty)
}

// rejectBody refuses a body on routes that take none, so that a client
// sending parameters in the wrong place hears about it.
func (rq *request) rejectBody() error {
	var empty struct{}
	return rq.decode(&empty, true)
}

func (s *Server) healthz(rq *request) error {
	writeJSON(rq.w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(rq *request) error {
	out := map[string]string{"store": "ok", "scheduler": "running"}
	ok := true
	if err := s.m.Store().Ping(rq.ctx); err != nil {
		out["store"] = "unreachable"
		ok = false
		s.log.Warn("readyz: store ping failed", "err", err)
	}
	if !s.m.Engine().Running() {
		out["scheduler"] = "stopped"
		ok = false
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
		out["status"] = "unavailable"
	} else {
		out["status"] = "ok"
	}
	writeJSON(rq.w, status, out)
	return nil
}

func (s *Server) get(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	reveal, err := rq.boolQuery("reveal")
	if err != nil {
		return err
	}
	if reveal {
		rq.detail = "reveal"
		err = rq.authorize(acl.Read, id)
	} else {
		err = rq.see(id)
	}
	if err != nil {
		return err
	}
	version, err := rq.intQuery("version", 0, 1, 1<<31-1)
	if err != nil {
		return err
	}
	label := rq.query("label")
	rq.auditEarly()
	c, err := s.m.Get(rq.ctx, id, credential.GetOptions{Version: version, Label: label})
	if err != nil {
		return err
	}
	return rq.respondCredential(http.StatusOK, c, reveal)
}

func (s *Server) put(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Write, id); err != nil {
		return err
	}
	var b putBody
	if err := rq.decode(&b, false); err != nil {
		return err
	}
	if b.Type == "" {
		return invalidf(`body: "type" is required (postgres, mysql, redis, api_key, oauth2, certificate, generic)`)
	}
	req := credential.PutRequest{Type: b.Type, Fields: b.Fields, Secret: secret.FromStrings(b.Secret), ExpiresAt: b.ExpiresAt, Settings: b.Settings, Actor: rq.tok.Actor(), Reason: b.Reason}
	c, err := s.m.Put(rq.ctx, id, req)
	if err != nil {
		return err
	}
	rq.detail = fmt.Sprintf("version %d", c.Version)
	return rq.respond(http.StatusOK, c.Wire(false))
}

func (s *Server) delete(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	purge, err := rq.boolQuery("purge")
	if err != nil {
		return err
	}
	if purge {
		rq.detail = "purge"
		err = rq.authorize(acl.Delete, id)
	} else {
		err = rq.authorize(acl.Write, id)
	}
	if err != nil {
		return err
	}
	if purge {
		if err := s.m.Purge(rq.ctx, id); err != nil {
			return err
		}
		return rq.respond(http.StatusOK, map[string]any{"id": id, "purged": true})
	}
	if err := s.m.Delete(rq.ctx, id, rq.tok.Actor()); err != nil {
		return err
	}
	return rq.respond(http.StatusOK, map[string]any{"id": id, "deleted": true})
}

// list pages through credentials, keeping those the token may see. The
// cursor it returns is always a visible ID, so paging reveals nothing else.
func (s *Server) list(rq *request) error {
	limit, err := rq.intQuery("limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	deleted, err := rq.boolQuery("deleted")
	if err != nil {
		return err
	}
	// Pages start at what the answer needs and grow while the grants filter
	// items out.
	opts := credential.ListOptions{Prefix: rq.query("prefix"), Type: credential.Type(rq.query("type")), After: rq.query("after"), Limit: limit + 1, IncludeDeleted: deleted}
	rq.detail = "prefix=" + opts.Prefix
	rq.auditEarly()
	out := []credential.Summary{}
	next := ""
	for {
		page, more, err := s.m.List(rq.ctx, opts)
		if err != nil {
			return err
		}
		for _, c := range page {
			if !acl.Visible(rq.tok.Grants, c.ID) {
				continue
			}
			if len(out) == limit {
				next = out[len(out)-1].ID
				break
			}
			out = append(out, c)
		}
		if next != "" || more == "" {
			break
		}
		opts.After = more
		opts.Limit = min(1000, opts.Limit*4)
	}
	return rq.respond(http.StatusOK, map[string]any{"credentials": out, "next": next})
}

func (s *Server) history(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.see(id); err != nil {
		return err
	}
	limit, err := rq.intQuery("limit", 100, 1, 10000)
	if err != nil {
		return err
	}
	rq.auditEarly()
	vs, err := s.m.Versions(rq.ctx, id)
	if err != nil {
		return err
	}
	hs, err := s.m.History(rq.ctx, id, limit)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []credential.VersionInfo{}
	}
	if hs == nil {
		hs = []credential.HistoryEntry{}
	}
	return rq.respond(http.StatusOK, map[string]any{"id": id, "versions": vs, "events": hs})
}

// rotationResult answers a rotate-like operation: the journal row, or an
// error that carries it.
func (rq *request) rotationResult(r *store.Rotation, err error) error {
	if err != nil {
		ae := classify(err)
		if r != nil {
			ae.rotation = toRotation(r)
			if ae.code == CodeRetryScheduled && r.DueAt.After(rq.s.clock()) {
				ae.retryAfter = r.DueAt.Sub(rq.s.clock())
			}
		}
		if ae.graceEndsAt != nil {
			ae.retryAfter = max(ae.graceEndsAt.Sub(rq.s.clock()), time.Second)
		}
		return ae
	}
	if r != nil {
		rq.detail = strings.TrimSpace(rq.detail + fmt.Sprintf(" rotation %d at %s", r.ID, r.Step))
	}
	return rq.respond(http.StatusOK, toRotation(r))
}

func (s *Server) rotate(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Rotate, id); err != nil {
		return err
	}
	var b rotateBody
	if err := rq.decode(&b, true); err != nil {
		return err
	}
	if b.Now {
		return s.rotateNow(rq, id, b)
	}
	opts := credential.RotateOptions{Reason: b.Reason, NoValidate: b.NoValidate, Wait: b.Wait, Actor: rq.tok.Actor()}
	if b.Grace != nil {
		d := time.Duration(*b.Grace)
		if d < 0 {
			return invalidf(`"grace" must not be negative`)
		}
		opts.Grace = &d
	}
	r, err := s.m.Rotate(rq.ctx, id, opts)
	return rq.rotationResult(r, err)
}

func (s *Server) rollback(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Rollback, id); err != nil {
		return err
	}
	var b rollbackBody
	if err := rq.decode(&b, true); err != nil {
		return err
	}
	if b.ToVersion < 0 {
		return invalidf(`"to_version" must be a positive version number`)
	}
	if b.ToVersion > 0 {
		// The engine refuses this without a sentinel; answer 409 ourselves.
		vs, err := s.m.Versions(rq.ctx, id)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if v.Version == b.ToVersion && slices.Contains(v.Labels, credential.LabelCurrent) {
				return errorf(http.StatusConflict, CodeConflict, "version %d of %s is already current", v.Version, id)
			}
		}
	}
	r, err := s.m.Rollback(rq.ctx, id, credential.RollbackOptions{ToVersion: b.ToVersion, Reason: b.Reason, Wait: b.Wait, Actor: rq.tok.Actor()})
	return rq.rotationResult(r, err)
}

func (s *Server) policyOf(rq *request, id string) (*policyJSON, error) {
	st, err := s.m.GetSettings(rq.ctx, id)
	if err != nil {
		return nil, err
	}
	c, err := s.m.Get(rq.ctx, id, credential.GetOptions{})
	if err != nil {
		return nil, err
	}
	ws, err := s.m.PolicyFindings(rq.ctx, id)
	if err != nil {
		return nil, err
	}
	return &policyJSON{ID: id, Settings: st, NextRotationAt: c.NextDueAt, Grace: st.GraceOrDefault().String(),
		Validate: st.ValidateOrDefault(), AutoRollback: st.AutoRollbackOrDefault(), Retention: st.RetentionOrDefault(), Warnings: ws}, nil
}

func (s *Server) getPolicy(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.see(id); err != nil {
		return err
	}
	rq.auditEarly()
	p, err := s.policyOf(rq, id)
	if err != nil {
		return err
	}
	return rq.respond(http.StatusOK, p)
}

func (s *Server) putPolicy(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Write, id); err != nil {
		return err
	}
	var st credential.Settings
	if err := rq.decode(&st, false); err != nil {
		return err
	}
	if err := st.Validate(); err != nil {
		return invalidf("settings: %v", err)
	}
	if err := s.m.SetSettings(rq.ctx, id, st); err != nil {
		return err
	}
	p, err := s.policyOf(rq, id)
	if err != nil {
		return err
	}
	return rq.respond(http.StatusOK, p)
}

func (s *Server) grace(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Rotate, id); err != nil {
		return err
	}
	var b graceBody
	if err := rq.decode(&b, false); err != nil {
		return err
	}
	if b.End {
		return s.endGrace(rq, id, b)
	}
	if b.Extend <= 0 {
		return invalidf(`"extend" must be a positive duration like "30m": grace is never shortened`)
	}
	open, err := s.openRotation(rq, id)
	if err != nil {
		return err
	}
	if open.Step != rotation.StepGrace || open.GraceEndsAt == nil {
		return errorf(http.StatusConflict, CodeConflict, "rotation %d of %s is at step %s, not in its grace period", open.ID, id, open.Step)
	}
	r, err := s.m.ExtendGrace(rq.ctx, id, time.Duration(b.Extend))
	return rq.rotationResult(r, err)
}

// openRotation returns the open rotation of id, or a not-found error that
// says whether the credential exists.
func (s *Server) openRotation(rq *request, id string) (*store.Rotation, error) {
	rs, err := s.m.Rotations(rq.ctx, id, true, 1)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		if _, err := s.m.Versions(rq.ctx, id); err != nil {
			return nil, err
		}
		return nil, errorf(http.StatusNotFound, CodeNotFound, "%s has no open rotation (see GET /v1/rotations?id=%s)", id, id)
	}
	return &rs[0], nil
}

func (s *Server) doctor(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.see(id); err != nil {
		return err
	}
	rep, err := s.m.Doctor(rq.ctx, id)
	if err != nil {
		return err
	}
	rq.detail = fmt.Sprintf("healthy=%v", rep.Healthy)
	return rq.respond(http.StatusOK, rep)
}

func (s *Server) resolve(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Rotate, id); err != nil {
		return err
	}
	var b resolveBody
	if err := rq.decode(&b, true); err != nil {
		return err
	}
	if b.Keep < 0 {
		return invalidf(`"keep" must be a positive version number`)
	}
	// The engine's refusals here carry no sentinel; check first so that
	// they are 4xx answers rather than 500s.
	open, err := s.openRotation(rq, id)
	if err != nil {
		return err
	}
	if open.Step != rotation.StepNeedsAttention && open.Step != rotation.StepReauthRequired {
		return errorf(http.StatusConflict, CodeConflict, "rotation %d of %s is at step %s; only a rotation that needs attention can be resolved", open.ID, id, open.Step)
	}
	if b.Keep != 0 && b.Keep != open.FromVersion && b.Keep != open.ToVersion {
		return invalidf(`"keep" must be version %d or %d`, open.FromVersion, open.ToVersion)
	}
	r, err := s.m.Engine().Resolve(rq.ctx, id, b.Keep, b.Force)
	return rq.rotationResult(r, err)
}

func (s *Server) retry(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	var b retryBody
	if err := rq.decode(&b, true); err != nil {
		return err
	}
	perm := acl.Rotate
	if b.Rollback {
		perm = acl.Rollback
	}
	if err := rq.authorize(perm, id); err != nil {
		return err
	}
	r, err := s.m.Engine().Retry(rq.ctx, id, b.Rollback)
	return rq.rotationResult(r, err)
}

func (s *Server) rotations(rq *request) error {
	id := rq.query("id")
	open, err := rq.boolQuery("open")
	if err != nil {
		return err
	}
	limit, err := rq.intQuery("limit", 50, 1, 1000)
	if err != nil {
		return err
	}
	if id != "" {
		if err := credential.ValidateID(id); err != nil {
			return err
		}
		if err := rq.see(id); err != nil {
			return err
		}
		if _, err := s.m.Versions(rq.ctx, id); err != nil {
			return err
		}
	}
	rq.auditEarly()
	rs, err := s.m.Rotations(rq.ctx, id, open, limit)
	if err != nil {
		return err
	}
	out := []*Rotation{}
	for i := range rs {
		if acl.Visible(rq.tok.Grants, rs[i].CredentialID) {
			out = append(out, toRotation(&rs[i]))
		}
	}
	return rq.respond(http.StatusOK, map[string]any{"rotations": out})
}

func (s *Server) listTokens(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	ts, err := ListTokens(rq.ctx, s.m.Store())
	if err != nil {
		return err
	}
	out := make([]tokenJSON, 0, len(ts))
	for i := range ts {
		out = append(out, toTokenJSON(&ts[i]))
	}
	return rq.respond(http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) createToken(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	var b tokenBody
	if err := rq.decode(&b, false); err != nil {
		return err
	}
	req := TokenRequest{Name: b.Name, Now: s.clock()}
	for _, g := range b.Grants {
		gr, err := acl.ParseGrant(g)
		if err != nil {
			return invalidf("grants: %v", err)
		}
		req.Grants = append(req.Grants, gr)
	}
	if b.TTL != nil {
		if *b.TTL <= 0 {
			return invalidf(`"ttl" must be a positive duration like "30d"`)
		}
		req.TTL = time.Duration(*b.TTL)
	}
	tok, val, err := CreateToken(rq.ctx, s.m.Store(), req)
	if err != nil {
		return err
	}
	rq.detail = "created " + tok.ID
	return rq.respond(http.StatusCreated, createdTokenJSON{tokenJSON: toTokenJSON(tok), Token: val.Reveal()})
}

func (s *Server) revokeToken(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	id := rq.r.PathValue("tid")
	rq.detail = "token " + id
	if err := RevokeToken(rq.ctx, s.m.Store(), id, s.clock()); err != nil {
		return err
	}
	s.forgetToken(id)
	return rq.respond(http.StatusOK, map[string]any{"id": id, "revoked": true})
}

// countingWriter notes whether the response has started.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// backup streams the encrypted backup file. Its outcome is audited before
// the first byte is sent; the counts follow in trailers, and a failure after
// the response started is reported in the X-Backup-Error trailer (the file is
// then incomplete and restore refuses it).
func (s *Server) backup(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	if err := rq.rejectBody(); err != nil {
		return err
	}
	if err := rq.s.auditOutcome(rq, "ok"); err != nil {
		return s.auditFailed(rq, err)
	}
	h := rq.w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="nebula-credential.backup"`)
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", "X-Backup-Credentials, X-Backup-Versions, X-Backup-Error")
	cw := &countingWriter{w: rq.w}
	info, err := s.m.Backup(rq.ctx, cw, nil)
	if err != nil {
		if cw.n == 0 {
			h.Del("Trailer")
			h.Del("Content-Disposition")
			return err
		}
		rq.responded = true
		h.Set("X-Backup-Error", classify(err).code)
		return err
	}
	rq.responded = true
	if cw.n == 0 {
		rq.w.WriteHeader(http.StatusOK)
	}
	h.Set("X-Backup-Credentials", strconv.Itoa(info.Credentials))
	h.Set("X-Backup-Versions", strconv.Itoa(info.Versions))
	return nil
}

func (s *Server) restore(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	only := rq.query("only")
	if only != "" {
		if err := credential.ValidateID(only); err != nil {
			return err
		}
		rq.detail = "only " + only
	}
	body := http.MaxBytesReader(rq.w, rq.r.Body, s.cfg.MaxBackupBytes)
	info, err := s.m.Restore(rq.ctx, body, credential.RestoreOptions{Only: only, SkipBusy: rq.query("skip_busy") == "true"})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "backup larger than %d bytes: raise the server's limit", s.cfg.MaxBackupBytes)
		}
		return err
	}
	return rq.respond(http.StatusOK, map[string]any{"credentials": info.Credentials, "versions": info.Versions, "backup_created_at": info.CreatedAt, "skipped": info.Skipped})
}

// auditList pages through the audit log. A store-wide admin sees every
// entry; other tokens see the entries about credentials their grants cover.
func (s *Server) auditList(rq *request) error {
	afterQ := rq.query("after")
	var after int64
	if afterQ != "" {
		n, err := strconv.ParseInt(afterQ, 10, 64)
		if err != nil || n < 0 {
			return invalidf("query parameter after must be a sequence number")
		}
		after = n
	}
	limit, err := rq.intQuery("limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	all := acl.Allowed(rq.tok.Grants, acl.Admin, "")
	out := []audit.Record{}
	next := after
	for scanned := 0; len(out) < limit && scanned < 10*limit; {
		page, err := audit.List(rq.ctx, s.m.Store(), next, limit)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		scanned += len(page)
		for _, r := range page {
			if len(out) == limit {
				break
			}
			next = r.Seq
			if r.Action == "audit.list" && r.CredentialID == "" && (r.Outcome == "ok" || r.Outcome == "allowed") {
				// Reads of the log itself are in the chain (audit verify,
				// backups) but not in this listing: each page read appends
				// one, and a client paging to an empty page must get there.
				continue
			}
			// Only a valid ID is matched against grants: the raw ID of a
			// rejected request ("prod/../staging/x") is not under "prod/".
			if all || (r.CredentialID != "" && credential.ValidateID(r.CredentialID) == nil && acl.Visible(rq.tok.Grants, r.CredentialID)) {
				out = append(out, r)
			}
		}
	}
	return rq.respond(http.StatusOK, map[string]any{"entries": out, "next": next})
}

func (s *Server) auditVerify(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	var anchor []byte
	if a := rq.query("anchor"); a != "" {
		b, err := hex.DecodeString(a)
		if err != nil {
			return invalidf("query parameter anchor must be a hex hash")
		}
		anchor = b
	}
	n, err := audit.Verify(rq.ctx, s.m.Store(), anchor)
	var p *audit.Problem
	if errors.As(err, &p) {
		rq.detail = p.Error()
		return rq.respond(http.StatusOK, map[string]any{"ok": false, "checked": n, "seq": p.Seq, "reason": p.Reason})
	}
	if err != nil {
		return err
	}
	return rq.respond(http.StatusOK, map[string]any{"ok": true, "checked": n})
}

func (s *Server) keys(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	ks, err := s.m.Keys(rq.ctx)
	if err != nil {
		return err
	}
	if ks == nil {
		ks = []credential.KeyInfo{}
	}
	return rq.respond(http.StatusOK, map[string]any{"keys": ks})
}

func (s *Server) rotateKeys(rq *request) error {
	if err := rq.authorize(acl.Admin, ""); err != nil {
		return err
	}
	if err := rq.rejectBody(); err != nil {
		return err
	}
	res, err := s.m.RotateKEK(rq.ctx, nil)
	if err != nil {
		return err
	}
	if res.Dropped == nil {
		res.Dropped = []string{}
	}
	return rq.respond(http.StatusOK, res)
}
