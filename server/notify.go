package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Webhook subscriptions (package notify). A token manages the subscriptions
// whose prefix its notify grants cover, and sees their deliveries.

func (s *Server) notifyRoutes() []*route {
	return []*route{
		{method: "GET", path: "/v1/notify/subscriptions", op: "notify.list", audited: true, handle: s.notifyList},
		{method: "POST", path: "/v1/notify/subscriptions", op: "notify.add", audited: true, handle: s.notifyAdd},
		{method: "DELETE", path: "/v1/notify/subscriptions/{sid}", op: "notify.remove", audited: true, handle: s.notifyRemove},
		{method: "POST", path: "/v1/notify/subscriptions/{sid}/test", op: "notify.test", audited: true, handle: s.notifyTest},
		{method: "GET", path: "/v1/notify/deliveries", op: "notify.deliveries", audited: true, handle: s.notifyDeliveries},
		{method: "GET", path: "/v1/notify/deliveries/{did}", op: "notify.delivery", audited: true, handle: s.notifyDelivery},
		{method: "POST", path: "/v1/notify/replay", op: "notify.replay", audited: true, handle: s.notifyReplay},
	}
}

func (s *Server) notifySvc() *notify.Service {
	return &notify.Service{Store: s.m.Store(), Keys: s.m.SubscriptionKeys(), Clock: s.clock}
}

// notifyErr maps package notify's errors onto the API's.
func notifyErr(err error) error {
	if errors.Is(err, notify.ErrInvalid) {
		return invalidf("%s", err.Error())
	}
	return err
}

// mayNotify checks the notify permission on a subscription's prefix.
func (rq *request) mayNotify(prefix string) error {
	if acl.Allowed(rq.tok.Grants, acl.Notify, prefix) {
		return nil
	}
	what, hint := "every credential", "*"
	if prefix != "" {
		what, hint = prefix, prefix
	}
	return errorf(http.StatusForbidden, CodeForbidden, "token %s has no notify grant covering %s: ask an admin for one (e.g. `nebula-credential token create --grant notify:%s`)", rq.tok.ID, what, hint)
}

// subscription reads the subscription of the path and checks the grant.
// A subscription the token may not manage is reported as forbidden whether
// or not it exists.
func (rq *request) subscription() (*notify.Subscription, error) {
	id := rq.r.PathValue("sid")
	rq.detail = "subscription " + id
	sub, err := rq.s.notifySvc().Get(rq.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if aerr := rq.mayNotify(""); aerr != nil {
			return nil, aerr
		}
	}
	if err != nil {
		return nil, err
	}
	if err := rq.mayNotify(sub.Prefix); err != nil {
		return nil, err
	}
	return sub, nil
}

// allowedSubs returns the IDs of the subscriptions the token may manage.
func (rq *request) allowedSubs() (map[string]notify.Subscription, error) {
	subs, err := rq.s.notifySvc().List(rq.ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]notify.Subscription{}
	for _, sub := range subs {
		if acl.Allowed(rq.tok.Grants, acl.Notify, sub.Prefix) {
			out[sub.ID] = sub
		}
	}
	return out, nil
}

func (s *Server) notifyList(rq *request) error {
	subs, err := rq.allowedSubs()
	if err != nil {
		return err
	}
	list, err := s.notifySvc().List(rq.ctx)
	if err != nil {
		return err
	}
	out := []notify.Subscription{}
	for _, sub := range list {
		if _, ok := subs[sub.ID]; ok {
			out = append(out, sub)
		}
	}
	return rq.respond(http.StatusOK, SubscriptionList{Subscriptions: out})
}

// SubscriptionList is the body of GET /v1/notify/subscriptions.
type SubscriptionList struct {
	Subscriptions []notify.Subscription `json:"subscriptions"`
}

// SubscriptionRequest is the body of POST /v1/notify/subscriptions.
type SubscriptionRequest struct {
	Name       string   `json:"name,omitempty"`
	URL        string   `json:"url"`
	Prefix     string   `json:"prefix,omitempty"`
	Events     []string `json:"events,omitempty"`
	Format     string   `json:"format,omitempty"`
	ExpiryDays int      `json:"expiry_days,omitempty"`
	GraceWarn  string   `json:"grace_warn,omitempty"`  // Go duration
	OverdueFor string   `json:"overdue_for,omitempty"` // Go duration
}

// SubscriptionCreated answers POST /v1/notify/subscriptions: the signing
// secret is shown this once.
type SubscriptionCreated struct {
	Subscription  notify.Subscription `json:"subscription"`
	SigningSecret string              `json:"signing_secret"`
}

func parseDur(name, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, invalidf("%s must be a duration like 1h or 30m", name)
	}
	return d, nil
}

func (s *Server) notifyAdd(rq *request) error {
	var req SubscriptionRequest
	if err := rq.decode(&req, false); err != nil {
		return err
	}
	if err := (acl.Grant{Permission: acl.Notify, Prefix: req.Prefix}).Validate(); err != nil {
		return invalidf("prefix: %s", err.Error())
	}
	if err := rq.mayNotify(req.Prefix); err != nil {
		return err
	}
	gw, err := parseDur("grace_warn", req.GraceWarn)
	if err != nil {
		return err
	}
	od, err := parseDur("overdue_for", req.OverdueFor)
	if err != nil {
		return err
	}
	sub, key, err := s.notifySvc().Add(rq.ctx, notify.AddRequest{Name: req.Name, URL: secret.New(req.URL), Prefix: req.Prefix,
		Events: req.Events, Format: req.Format, ExpiryDays: req.ExpiryDays, GraceWarn: gw, OverdueFor: od})
	if err != nil {
		return notifyErr(err)
	}
	rq.detail = "subscription " + sub.ID + " to " + sub.URL
	return rq.respond(http.StatusCreated, SubscriptionCreated{Subscription: *sub, SigningSecret: key.Reveal()})
}

func (s *Server) notifyRemove(rq *request) error {
	if err := rq.rejectBody(); err != nil {
		return err
	}
	sub, err := rq.subscription()
	if err != nil {
		return err
	}
	if err := s.notifySvc().Remove(rq.ctx, sub.ID); err != nil {
		return notifyErr(err)
	}
	return rq.respond(http.StatusOK, struct {
		Removed string `json:"removed"`
	}{sub.ID})
}

func (s *Server) notifyTest(rq *request) error {
	if err := rq.rejectBody(); err != nil {
		return err
	}
	sub, err := rq.subscription()
	if err != nil {
		return err
	}
	d, err := s.notifySvc().Test(rq.ctx, sub.ID)
	if err != nil {
		return notifyErr(err)
	}
	if s.cfg.Notify != nil {
		s.cfg.Notify.Kick()
	}
	return rq.respond(http.StatusAccepted, d)
}

// DeliveryList is the body of GET /v1/notify/deliveries.
type DeliveryList struct {
	Deliveries []notify.Delivery `json:"deliveries"`
	Next       string            `json:"next,omitempty"` // cursor for after=
}

func (s *Server) notifyDeliveries(rq *request) error {
	state := rq.query("state")
	switch state {
	case "", store.DeliveryPending, store.DeliveryDelivered, store.DeliveryDead:
	default:
		return invalidf("state must be pending, delivered or dead")
	}
	limit, err := rq.intQuery("limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	var after int64
	if a := rq.query("after"); a != "" {
		if after, err = strconv.ParseInt(a, 10, 64); err != nil || after < 0 {
			return invalidf("after must be a delivery ID")
		}
	}
	subID := rq.query("subscription")
	allowed, err := rq.allowedSubs()
	if err != nil {
		return err
	}
	if subID != "" {
		if _, ok := allowed[subID]; !ok {
			return rq.mayNotify("") // forbidden unless notify:* (then: nothing listed)
		}
	}
	out := []notify.Delivery{}
	next := ""
	for len(out) < limit {
		page, err := s.notifySvc().Deliveries(rq.ctx, store.DeliveryFilter{State: state, SubscriptionID: subID, After: after, Limit: limit})
		if err != nil {
			return err
		}
		for _, d := range page {
			after = d.ID
			if _, ok := allowed[d.SubscriptionID]; ok && len(out) < limit {
				out = append(out, d)
			}
		}
		if len(page) < limit {
			break
		}
		if len(out) == limit {
			next = strconv.FormatInt(after, 10)
		}
	}
	return rq.respond(http.StatusOK, DeliveryList{Deliveries: out, Next: next})
}

func (s *Server) notifyDelivery(rq *request) error {
	id, err := strconv.ParseInt(rq.r.PathValue("did"), 10, 64)
	if err != nil {
		return invalidf("the delivery ID must be a number")
	}
	d, err := s.notifySvc().GetDelivery(rq.ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			if aerr := rq.mayNotify(""); aerr != nil {
				return aerr
			}
		}
		return err
	}
	allowed, err := rq.allowedSubs()
	if err != nil {
		return err
	}
	if _, ok := allowed[d.SubscriptionID]; !ok {
		return rq.mayNotify("")
	}
	return rq.respond(http.StatusOK, d)
}

// ReplayRequest is the body of POST /v1/notify/replay: the dead letters to
// send again, by ID, or every dead letter of a subscription ("" for every
// subscription the token may manage).
type ReplayRequest struct {
	IDs          []int64 `json:"ids,omitempty"`
	Subscription string  `json:"subscription,omitempty"`
}

func (s *Server) notifyReplay(rq *request) error {
	var req ReplayRequest
	if err := rq.decode(&req, false); err != nil {
		return err
	}
	allowed, err := rq.allowedSubs()
	if err != nil {
		return err
	}
	svc := s.notifySvc()
	ids := req.IDs
	if len(ids) == 0 {
		// Every dead letter of the subscriptions the token manages.
		if req.Subscription != "" {
			if _, ok := allowed[req.Subscription]; !ok {
				if err := rq.mayNotify(""); err != nil {
					return err
				}
				return invalidf("no subscription %s", req.Subscription)
			}
		}
		dead, err := svc.Deliveries(rq.ctx, store.DeliveryFilter{State: store.DeliveryDead, SubscriptionID: req.Subscription})
		if err != nil {
			return err
		}
		for _, d := range dead {
			if _, ok := allowed[d.SubscriptionID]; ok {
				ids = append(ids, d.ID)
			}
		}
		if len(ids) == 0 {
			return rq.respond(http.StatusOK, DeliveryList{Deliveries: []notify.Delivery{}})
		}
	} else {
		for _, id := range ids {
			d, err := svc.GetDelivery(rq.ctx, id)
			if err == nil {
				if _, ok := allowed[d.SubscriptionID]; ok {
					continue
				}
			}
			if aerr := rq.mayNotify(""); aerr != nil {
				return aerr
			}
			if err != nil {
				return err
			}
		}
	}
	out, err := svc.Replay(rq.ctx, "", ids)
	if err != nil {
		return notifyErr(err)
	}
	if s.cfg.Notify != nil {
		s.cfg.Notify.Kick()
	}
	return rq.respond(http.StatusOK, DeliveryList{Deliveries: out})
}
