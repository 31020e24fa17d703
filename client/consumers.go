package client

import (
	"context"
	"net/url"

	credential "github.com/nebula-credential/nebula-credential"
)

// ReportConsumer registers a consumer or sends its heartbeat: the version of
// each credential it delivered and whether the action after delivery
// succeeded. The token needs read on every credential reported. The answer
// says how often to report again.
func (c *Client) ReportConsumer(ctx context.Context, r credential.ConsumerReport) (*credential.ConsumerAck, error) {
	for _, d := range r.Credentials {
		if err := credential.ValidateID(d.ID); err != nil {
			return nil, err
		}
	}
	if r.Credentials == nil {
		r.Credentials = []credential.ConsumerDelivery{}
	}
	var ack credential.ConsumerAck
	if err := c.call(ctx, request{method: "POST", path: "/v1/consumers", body: r}, &ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// Consumers lists the consumers of credential id ("" for every credential the
// token's grants cover) with the version each confirmed.
func (c *Client) Consumers(ctx context.Context, id string) ([]credential.ConsumerInfo, error) {
	q := url.Values{}
	if id != "" {
		if err := credential.ValidateID(id); err != nil {
			return nil, err
		}
		q.Set("id", id)
	}
	var out struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/consumers", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Consumers, nil
}

// Status returns the server instances sharing the store (alive or dead by
// heartbeat) and the lease holder of each open rotation the token's grants
// cover (GET /v1/status).
func (c *Client) Status(ctx context.Context) (*credential.ClusterStatus, error) {
	var out credential.ClusterStatus
	if err := c.call(ctx, request{method: "GET", path: "/v1/status"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
