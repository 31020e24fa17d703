package client

import (
	"context"
	"net/url"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
)

// ImportItem is one credential of an Import batch.
type ImportItem struct {
	ID        string               `json:"id"`
	Type      credential.Type      `json:"type"`
	Fields    map[string]any       `json:"fields,omitempty"`
	Secret    map[string]string    `json:"secret"`
	ExpiresAt *time.Time           `json:"expires_at,omitempty"`
	Settings  *credential.Settings `json:"settings,omitempty"`
	Reason    string               `json:"reason,omitempty"`
}

// ImportResult is the outcome of one item: its new version, or the error
// code and message of why it was not written.
type ImportResult struct {
	ID      string `json:"id"`
	Version int    `json:"version,omitempty"`
	Code    string `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Import stores up to 1000 credentials in one request and one transaction on
// the server (POST /v1/import), each checked as Put would check it (write on
// its ID). Failed items are reported in their results; the others are
// written. Results are in the order of items.
func (c *Client) Import(ctx context.Context, items []ImportItem) ([]ImportResult, error) {
	return c.importItems(ctx, items, false)
}

// ImportDryRun reports what Import would do (POST /v1/import?dry_run=true):
// each result has the version the item would get (1: a new credential) or
// why it would be refused. Nothing is written.
func (c *Client) ImportDryRun(ctx context.Context, items []ImportItem) ([]ImportResult, error) {
	return c.importItems(ctx, items, true)
}

func (c *Client) importItems(ctx context.Context, items []ImportItem, dryRun bool) ([]ImportResult, error) {
	var out struct {
		Results []ImportResult `json:"results"`
	}
	req := request{method: "POST", path: "/v1/import", body: map[string]any{"items": items}}
	if dryRun {
		req.query = url.Values{"dry_run": {"true"}}
	}
	if err := c.call(ctx, req, &out); err != nil {
		return nil, err
	}
	return out.Results, nil
}
