package client

import (
	"context"
	"time"
)

// Binding is a recorded binding of a credential to an admin credential.
type Binding struct {
	Field string    `json:"field"`
	Admin string    `json:"admin"`
	By    string    `json:"by"`
	At    time.Time `json:"at"`
}

// Approve records the binding of credential id, as it is now, to the admin
// credentials it names. The token needs write on id and use on each admin.
func (c *Client) Approve(ctx context.Context, id string) ([]Binding, error) {
	p, err := idPath("/v1/approve/", id)
	if err != nil {
		return nil, err
	}
	var out struct {
		Bindings []Binding `json:"bindings"`
	}
	if err := c.call(ctx, request{method: "POST", path: p}, &out); err != nil {
		return nil, err
	}
	return out.Bindings, nil
}
