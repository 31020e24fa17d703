package console

import (
	"github.com/nebula-credential/nebula-credential/notify"
	"net/http"
)

// notifyData is the webhook page: the subscriptions the token manages and
// their dead letters (URLs redacted by the API).
type notifyData struct {
	Subscriptions []notify.Subscription
	Dead          []notify.Delivery
}

// notifications shows webhook subscriptions and the dead-letter queue.
// Changes are made with `nebula-credential notify` (shown on the page).
func (c *Console) notifications(rq *req) error {
	api := c.api(rq)
	subs, err := api.NotifySubscriptions(rq.ctx)
	if err != nil {
		return apiError(err)
	}
	dead, err := api.NotifyDeliveries(rq.ctx, "dead", "")
	if err != nil {
		return apiError(err)
	}
	c.render(rq.w, http.StatusOK, "notifications", c.newPage(rq, "Notifications", "notifications", &notifyData{Subscriptions: subs, Dead: dead}))
	return nil
}
