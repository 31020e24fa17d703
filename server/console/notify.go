package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/notify"
)

// The Notifications page manages webhook subscriptions through the API
// (/v1/notify/), with the session's token: the API's notify permission,
// audit entries and validation apply unchanged. Two rules are the
// console's own:
//
//   - a subscription's URL is never rendered back: listings show the
//     API's redacted form, and a form that failed validation comes back
//     with the URL field empty;
//   - the signing secret is shown once, on the answer of the POST that
//     created the subscription (Cache-Control: no-store, like every page).

// notifyData is the webhook page.
type notifyData struct {
	Subscriptions []notify.Subscription
	Dead          []notify.Delivery // the oldest maxListed
	Pending       []notify.Delivery // the oldest maxListed
	DeadCount     int
	PendingCount  int
	// Selected is the subscription whose deliveries are listed (?subscription=).
	Selected   *notify.Subscription
	Deliveries []notify.Delivery // newest first, at most maxListed
	More       bool              // more deliveries than listed
	CanManage  bool              // the token has a notify grant
	Kinds      []string
	Formats    []string
	Form       notifyForm
	FormError  string
	Done       string // what the last action did (?done=)
}

// notifyForm is the add form as submitted, without the URL.
type notifyForm struct {
	Name, Prefix, Format  string
	Events                []string
	ExpiryDays            string
	GraceWarn, OverdueFor string
}

func (f notifyForm) Has(kind string) bool { return slices.Contains(f.Events, kind) }

// notifyCreated is the answer of a successful add.
type notifyCreated struct {
	Sub    *notify.Subscription
	Secret string
}

// maxListed bounds the deliveries listed for one subscription.
const maxListed = 100

func canNotify(p *Principal) bool {
	for _, g := range p.Grants {
		if g.Permission == acl.Notify || g.Permission == acl.Admin {
			return true
		}
	}
	return false
}

// notifications shows webhook subscriptions, the queue and the dead letters,
// and (with ?subscription=) one subscription's recent deliveries.
func (c *Console) notifications(rq *req) error {
	d, err := c.notifyPage(rq)
	if err != nil {
		return err
	}
	c.renderNotify(rq, http.StatusOK, d)
	return nil
}

func (c *Console) notifyPage(rq *req) (*notifyData, error) {
	api := c.api(rq)
	subs, err := api.NotifySubscriptions(rq.ctx)
	if err != nil {
		return nil, apiError(err)
	}
	dead, err := api.NotifyDeliveries(rq.ctx, "dead", "")
	if err != nil {
		return nil, apiError(err)
	}
	pending, err := api.NotifyDeliveries(rq.ctx, "pending", "")
	if err != nil {
		return nil, apiError(err)
	}
	d := &notifyData{Subscriptions: subs, DeadCount: len(dead), PendingCount: len(pending), CanManage: canNotify(rq.p),
		Kinds: notify.Kinds(), Formats: []string{notify.FormatJSON, notify.FormatSlack},
		Form: notifyForm{Format: notify.FormatJSON}}
	d.Dead, d.Pending = dead[:min(len(dead), maxListed)], pending[:min(len(pending), maxListed)]
	if sid := rq.r.URL.Query().Get("subscription"); sid != "" {
		for i := range subs {
			if subs[i].ID == sid {
				d.Selected = &subs[i]
			}
		}
		if d.Selected == nil {
			return nil, &Error{Status: http.StatusNotFound, Message: "no subscription " + strconv.Quote(sid) + " that this token may manage"}
		}
		all, err := api.NotifyDeliveries(rq.ctx, "", sid)
		if err != nil {
			return nil, apiError(err)
		}
		slices.Reverse(all)
		if len(all) > maxListed {
			all, d.More = all[:maxListed], true
		}
		d.Deliveries = all
	}
	return d, nil
}

func (c *Console) renderNotify(rq *req, status int, d *notifyData) {
	d.Done = rq.r.URL.Query().Get("done")
	c.render(rq.w, status, "notifications", c.newPage(rq, "Notifications", "notifications", d))
}

// notifyAdd creates a subscription and shows its signing secret once. A
// refusal re-renders the form with the error and without the URL.
func (c *Console) notifyAdd(rq *req) error {
	f := rq.r.PostForm
	form := notifyForm{Name: strings.TrimSpace(f.Get("name")), Prefix: strings.TrimSpace(f.Get("prefix")),
		Format: f.Get("format"), Events: f["events"], ExpiryDays: strings.TrimSpace(f.Get("expiry_days")),
		GraceWarn: strings.TrimSpace(f.Get("grace_warn")), OverdueFor: strings.TrimSpace(f.Get("overdue_for"))}
	req := client.SubscriptionRequest{Name: form.Name, URL: strings.TrimSpace(f.Get("url")), Prefix: form.Prefix,
		Events: form.Events, Format: form.Format, GraceWarn: form.GraceWarn, OverdueFor: form.OverdueFor}
	var err error
	if form.ExpiryDays != "" {
		if req.ExpiryDays, err = strconv.Atoi(form.ExpiryDays); err != nil || req.ExpiryDays < 0 {
			err = &Error{Status: http.StatusBadRequest, Message: "expiry days must be a whole number of days"}
		}
	}
	if err == nil && req.URL == "" {
		err = &Error{Status: http.StatusBadRequest, Message: "the URL is required: the receiver's http:// or https:// address"}
	}
	var sub *notify.Subscription
	var key string
	if err == nil {
		sub, key, err = c.api(rq).NotifyAdd(rq.ctx, req)
	}
	if err != nil {
		e := apiError(err)
		var ce *Error
		if !errors.As(e, &ce) || ce.Status >= 500 || ce.Status == http.StatusUnauthorized {
			return e
		}
		d, perr := c.notifyPage(rq)
		if perr != nil {
			return perr
		}
		d.Form, d.FormError = form, ce.Message
		c.renderNotify(rq, ce.Status, d)
		return nil
	}
	c.render(rq.w, http.StatusCreated, "notifycreated", c.newPage(rq, "Subscription created", "notifications", &notifyCreated{Sub: sub, Secret: key}))
	return nil
}

// notifyConfirmRemove says what removing a subscription does.
func (c *Console) notifyConfirmRemove(rq *req) error {
	sid := rq.r.PathValue("sid")
	subs, err := c.api(rq).NotifySubscriptions(rq.ctx)
	if err != nil {
		return apiError(err)
	}
	for i := range subs {
		if subs[i].ID == sid {
			c.render(rq.w, http.StatusOK, "notifyremove", c.newPage(rq, "Remove "+sid, "notifications", &subs[i]))
			return nil
		}
	}
	return &Error{Status: http.StatusNotFound, Message: "no subscription " + strconv.Quote(sid) + " that this token may manage"}
}

func (c *Console) notifyRemove(rq *req) error {
	sid := rq.r.PathValue("sid")
	if err := c.api(rq).NotifyRemove(rq.ctx, sid); err != nil {
		return apiError(err)
	}
	return c.notifyDone(rq, "", "removed subscription "+sid)
}

// notifyTest queues a test notification.
func (c *Console) notifyTest(rq *req) error {
	sid := rq.r.PathValue("sid")
	d, err := c.api(rq).NotifyTest(rq.ctx, sid)
	if err != nil {
		return apiError(err)
	}
	return c.notifyDone(rq, sid, "queued test notification "+d.EventID+" (delivery "+strconv.FormatInt(d.ID, 10)+")")
}

// notifyReplay sends dead letters again: the one in id, or all of them
// (all=1), optionally of one subscription.
func (c *Console) notifyReplay(rq *req) error {
	var ids []int64
	if s := rq.r.PostFormValue("id"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return &Error{Status: http.StatusBadRequest, Message: "id must be a delivery ID"}
		}
		ids = []int64{id}
	} else if rq.r.PostFormValue("all") == "" {
		return &Error{Status: http.StatusBadRequest, Message: "choose a dead letter to replay, or replay all"}
	}
	sid := rq.r.PostFormValue("subscription")
	out, err := c.api(rq).NotifyReplay(rq.ctx, sid, ids)
	if err != nil {
		return apiError(err)
	}
	msg := "replayed " + strconv.Itoa(len(out)) + " dead letter(s)"
	if len(out) == 1 {
		msg = "replayed delivery " + strconv.FormatInt(out[0].ID, 10) + " (" + out[0].EventID + ")"
	}
	return c.notifyDone(rq, sid, msg)
}

func (c *Console) notifyDone(rq *req, sid, msg string) error {
	q := url.Values{"done": {msg}}
	if sid != "" {
		q.Set("subscription", sid)
	}
	http.Redirect(rq.w, rq.r, "/ui/notifications?"+q.Encode(), http.StatusSeeOther)
	return nil
}
