package server

import (
	"fmt"
	"net/http"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/secret"
)

// MaxImportItems bounds the credentials of one POST /v1/import.
const MaxImportItems = 1000

// importBody is a batch of puts.
type importBody struct {
	Items []importItem `json:"items"`
}

type importItem struct {
	ID string `json:"id"`
	putBody
}

// ImportResult is the outcome of one item of POST /v1/import.
type ImportResult struct {
	ID      string `json:"id"`
	Version int    `json:"version,omitempty"`
	Code    string `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
}

// importBatch writes a batch of credentials in one transaction, each as PUT
// /v1/credentials/{id} would: write on its ID, the same Manager checks
// (bindings to admin credentials included), its own history and audit entry.
// An item that fails is reported in its result; the others are written.
func (s *Server) importBatch(rq *request) error {
	var b importBody
	if err := rq.decode(&b, false); err != nil {
		return err
	}
	if len(b.Items) == 0 {
		return invalidf(`body: "items" must hold at least one credential`)
	}
	if len(b.Items) > MaxImportItems {
		return invalidf(`body: at most %d items per request, got %d: split the batch`, MaxImportItems, len(b.Items))
	}
	out := make([]ImportResult, len(b.Items))
	var (
		items []credential.PutItem
		index []int
	)
	for i, it := range b.Items {
		out[i].ID = it.ID
		if err := credential.ValidateID(it.ID); err != nil {
			out[i].Code, out[i].Error = classify(err).code, err.Error()
			continue
		}
		if !acl.Allowed(rq.tok.Grants, acl.Write, it.ID) {
			ae := errorf(http.StatusForbidden, CodeForbidden, "token %s has no write grant covering %s: ask an admin for one (e.g. `nebula-credential token create --grant write:%s`)", rq.tok.ID, it.ID, it.ID)
			out[i].Code, out[i].Error = ae.code, ae.msg
			continue
		}
		if it.Type == "" {
			out[i].Code, out[i].Error = CodeInvalid, `"type" is required (postgres, mysql, redis, api_key, oauth2, certificate, generic)`
			continue
		}
		items = append(items, credential.PutItem{ID: it.ID, PutRequest: credential.PutRequest{Type: it.Type, Fields: it.Fields, Secret: secret.FromStrings(it.Secret), ExpiresAt: it.ExpiresAt, Settings: it.Settings, Actor: rq.tok.Actor(), Reason: it.Reason}})
		index = append(index, i)
	}
	dryRun, err := rq.boolQuery("dry_run")
	if err != nil {
		return err
	}
	put := s.m.PutMany
	if dryRun {
		put = s.m.PutManyDryRun
	}
	res, err := put(rq.ctx, items)
	if err != nil {
		return err
	}
	written, failed := 0, 0
	for k, r := range res {
		i := index[k]
		if r.Err != nil {
			ae := classify(r.Err)
			out[i].Code, out[i].Error = ae.code, ae.msg
			continue
		}
		out[i].Version = r.Version
	}
	for _, o := range out {
		if o.Error != "" {
			failed++
		} else {
			written++
		}
	}
	if dryRun {
		rq.detail = fmt.Sprintf("dry run: %d would be written, %d refused", written, failed)
		return rq.respond(http.StatusOK, map[string]any{"results": out, "written": 0, "would_write": written, "failed": failed, "dry_run": true})
	}
	rq.detail = fmt.Sprintf("%d written, %d failed", written, failed)
	return rq.respond(http.StatusOK, map[string]any{"results": out, "written": written, "failed": failed})
}
