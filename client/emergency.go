package client

import (
	"context"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// EndGrace ends the running grace period of id at once: the previous version
// is retired on the target now. It needs the rotate grant.
func (c *Client) EndGrace(ctx context.Context, id, reason string) (*Rotation, error) {
	body := map[string]any{"end": true}
	if reason != "" {
		body["reason"] = reason
	}
	return c.rotationCall(ctx, "/v1/grace/", id, body)
}

// RotateNow is the emergency rotation of a leaked secret: any running grace
// period ends at once, then id rotates with zero grace. It needs the rotate
// grant. On failure the error is an *Error; the result holds the new
// rotation's row when the server reported it.
func (c *Client) RotateNow(ctx context.Context, id string, opts credential.EmergencyOptions) (*rotation.EmergencyInfo, error) {
	p, err := idPath("/v1/rotate/", id)
	if err != nil {
		return nil, err
	}
	body := map[string]any{"now": true}
	if opts.Reason != "" {
		body["reason"] = opts.Reason
	}
	if opts.NoValidate {
		body["no_validate"] = true
	}
	if opts.Wait {
		body["wait"] = true
	}
	var out rotation.EmergencyInfo
	if err := c.call(ctx, request{method: "POST", path: p, body: body}, &out); err != nil {
		if r := rotationOf(err); r != nil {
			return &rotation.EmergencyInfo{Rotation: r, Revoked: []rotation.Revoked{}}, err
		}
		return nil, err
	}
	return &out, nil
}
