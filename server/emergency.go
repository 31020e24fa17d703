package server

import (
	"fmt"
	"net/http"
	"strings"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// endGrace answers POST /v1/grace/{id} with {"end": true}: the running grace
// period ends now and the previous version is retired on the target. The
// caller was authorised for rotate.
func (s *Server) endGrace(rq *request, id string, b graceBody) error {
	if b.Extend != 0 {
		return invalidf(`give "extend" or "end", not both`)
	}
	rq.detail = "end grace"
	r, err := s.m.EndGrace(rq.ctx, id, rotation.EndGraceOptions{Reason: b.Reason})
	return rq.rotationResult(r, err)
}

// rotateNow answers POST /v1/rotate/{id} with {"now": true}: the emergency
// rotation of a leaked secret. It needs the rotate grant (checked by the
// caller) and the explicit flag; it is audited as an emergency.
func (s *Server) rotateNow(rq *request, id string, b rotateBody) error {
	if b.Grace != nil {
		return invalidf(`"now" rotates with zero grace: leave out "grace"`)
	}
	rq.detail = "emergency"
	res, err := s.m.RotateNow(rq.ctx, id, credential.EmergencyOptions{Reason: b.Reason, NoValidate: b.NoValidate, Wait: b.Wait})
	info := res.Info()
	if err != nil {
		ae := classify(err)
		if info != nil && info.Rotation != nil {
			ae.rotation = info.Rotation
		}
		return ae
	}
	var vs []string
	for _, r := range info.Revoked {
		vs = append(vs, fmt.Sprint(r.Version))
	}
	rq.detail = strings.TrimSpace("emergency: revoked " + strings.Join(vs, ","))
	return rq.respond(http.StatusOK, info)
}
