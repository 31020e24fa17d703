package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/nebula-credential/nebula-credential/notify"
)

// SubscriptionRequest creates a webhook subscription (POST
// /v1/notify/subscriptions). Durations are Go duration strings.
type SubscriptionRequest struct {
	Name       string   `json:"name,omitempty"`
	URL        string   `json:"url"`
	Prefix     string   `json:"prefix,omitempty"`
	Events     []string `json:"events,omitempty"`
	Format     string   `json:"format,omitempty"`
	ExpiryDays int      `json:"expiry_days,omitempty"`
	GraceWarn  string   `json:"grace_warn,omitempty"`
	OverdueFor string   `json:"overdue_for,omitempty"`
}

// NotifySubscriptions lists the webhook subscriptions the token may manage.
func (c *Client) NotifySubscriptions(ctx context.Context) ([]notify.Subscription, error) {
	var out struct {
		Subscriptions []notify.Subscription `json:"subscriptions"`
	}
	if err := c.call(ctx, request{method: "GET", path: "/v1/notify/subscriptions"}, &out); err != nil {
		return nil, err
	}
	return out.Subscriptions, nil
}

// NotifyAdd creates a subscription and returns it with its signing secret
// (shown this once). The token needs notify on the prefix.
func (c *Client) NotifyAdd(ctx context.Context, r SubscriptionRequest) (*notify.Subscription, string, error) {
	var out struct {
		Subscription  notify.Subscription `json:"subscription"`
		SigningSecret string              `json:"signing_secret"`
	}
	if err := c.call(ctx, request{method: "POST", path: "/v1/notify/subscriptions", body: r}, &out); err != nil {
		return nil, "", err
	}
	return &out.Subscription, out.SigningSecret, nil
}

// NotifyRemove deletes a subscription with its deliveries.
func (c *Client) NotifyRemove(ctx context.Context, id string) error {
	return c.call(ctx, request{method: "DELETE", path: "/v1/notify/subscriptions/" + url.PathEscape(id)}, nil)
}

// NotifyTest queues a test notification and returns its delivery.
func (c *Client) NotifyTest(ctx context.Context, id string) (*notify.Delivery, error) {
	var d notify.Delivery
	if err := c.call(ctx, request{method: "POST", path: "/v1/notify/subscriptions/" + url.PathEscape(id) + "/test"}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// NotifyDelivery returns one delivery.
func (c *Client) NotifyDelivery(ctx context.Context, id int64) (*notify.Delivery, error) {
	var d notify.Delivery
	if err := c.call(ctx, request{method: "GET", path: "/v1/notify/deliveries/" + strconv.FormatInt(id, 10)}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// NotifyDeliveries lists deliveries (state "dead" for the dead-letter
// queue) of subscription ("" for all the token may manage), every page.
func (c *Client) NotifyDeliveries(ctx context.Context, state, subscription string) ([]notify.Delivery, error) {
	out := []notify.Delivery{}
	after := ""
	for {
		q := url.Values{}
		if state != "" {
			q.Set("state", state)
		}
		if subscription != "" {
			q.Set("subscription", subscription)
		}
		if after != "" {
			q.Set("after", after)
		}
		q.Set("limit", "1000")
		var page struct {
			Deliveries []notify.Delivery `json:"deliveries"`
			Next       string            `json:"next"`
		}
		if err := c.call(ctx, request{method: "GET", path: "/v1/notify/deliveries", query: q}, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Deliveries...)
		if page.Next == "" {
			return out, nil
		}
		after = page.Next
	}
}

// NotifyReplay sends dead letters again: ids, or with ids empty every dead
// letter of subscription ("" for all the token may manage).
func (c *Client) NotifyReplay(ctx context.Context, subscription string, ids []int64) ([]notify.Delivery, error) {
	var out struct {
		Deliveries []notify.Delivery `json:"deliveries"`
	}
	body := struct {
		IDs          []int64 `json:"ids,omitempty"`
		Subscription string  `json:"subscription,omitempty"`
	}{ids, subscription}
	if err := c.call(ctx, request{method: "POST", path: "/v1/notify/replay", body: body}, &out); err != nil {
		return nil, err
	}
	return out.Deliveries, nil
}
