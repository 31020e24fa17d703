package server

import (
	_ "embed"
	"net/http"
)

// openapiJSON is the OpenAPI 3 description of the API. TestOpenAPIMatchesRoutes
// keeps it in step with the registered routes.
//
//go:embed openapi.json
var openapiJSON []byte

func (s *Server) openapi(rq *request) error {
	rq.w.Header().Set("Content-Type", "application/json")
	rq.w.Header().Set("Cache-Control", "public, max-age=300")
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(openapiJSON)
	return nil
}
