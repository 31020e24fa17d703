package server

import (
	"net/http"

	"github.com/nebula-credential/nebula-credential/acl"
)

// approve records the binding of a credential, as it is now, to the admin
// credentials it names (POST /v1/approve/{id}). The token needs write on the
// credential (approving rebinds it) and use on every admin it names (checked
// by the Manager with the request's principal, like every binding).
func (s *Server) approve(rq *request) error {
	id, err := rq.pathID()
	if err != nil {
		return err
	}
	if err := rq.authorize(acl.Write, id); err != nil {
		return err
	}
	if err := rq.rejectBody(); err != nil {
		return err
	}
	recs, err := s.m.ApproveBindings(rq.ctx, id)
	if err != nil {
		return err
	}
	type binding struct {
		Field string `json:"field"`
		Admin string `json:"admin"`
		By    string `json:"by"`
		At    string `json:"at"`
	}
	out := make([]binding, len(recs))
	for i, r := range recs {
		out[i] = binding{Field: r.Field, Admin: r.Admin, By: r.By, At: r.At.UTC().Format("2006-01-02T15:04:05.000000Z07:00")}
	}
	return rq.respond(http.StatusOK, map[string]any{"id": id, "bindings": out})
}
