package console_test

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// TestNotificationsPage lists the subscriptions a token manages, redacted,
// and the dead letters.
func TestNotificationsPage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	svc := &notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}
	prodSub, key, err := svc.Add(ctx, notify.AddRequest{URL: secret.New("https://u:page-password-7@hooks.example.com/h/abcdefghijklmnop"), Prefix: "prod", Name: "prod-hook"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Add(ctx, notify.AddRequest{URL: secret.New("https://hooks.example.com/dev"), Prefix: "dev", Name: "dev-hook"}); err != nil {
		t.Fatal(err)
	}
	// A dead letter of the prod subscription.
	d, err := svc.Test(ctx, prodSub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Store().Update(ctx, func(tx store.Tx) error {
		row, err := tx.GetDelivery(ctx, d.ID)
		if err != nil {
			return err
		}
		row.State, row.Attempts, row.LastError = store.DeliveryDead, 10, "receiver answered 500 Internal Server Error"
		return tx.UpdateDelivery(ctx, row)
	}); err != nil {
		t.Fatal(err)
	}

	b := e.browser()
	b.signIn(e.token("notify:prod"))
	p := b.get("/ui/notifications")
	if p.status != 200 {
		t.Fatalf("notifications page: %d %s", p.status, p.body)
	}
	for _, want := range []string{"prod-hook", "https://xxxxx@hooks.example.com/h/xxxxx", d.EventID, "receiver answered 500", "Replay all dead letters"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"dev-hook", "page-password-7", "abcdefghijklmnop", key.Reveal()} {
		if strings.Contains(p.body, bad) {
			t.Errorf("page shows %q", bad)
		}
	}
	// A token without notify sees an empty page, not an error.
	b2 := e.browser()
	b2.signIn(e.token("read:*"))
	if p := b2.get("/ui/notifications"); p.status != 200 || strings.Contains(p.body, "prod-hook") {
		t.Errorf("read-only token: %d, lists prod-hook: %v", p.status, strings.Contains(p.body, "prod-hook"))
	}
}

// TestNotifyManage adds, tests, replays and removes subscriptions through
// the console's forms: the API's notify permission decides, every POST
// needs the CSRF token, the signing secret is shown once and the URL never
// comes back unredacted, not even in a refused form.
func TestNotifyManage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const hookPass, hookPath = "manage-hook-pass-9", "Tz9qK3mVb8sLw2Xr"
	hookURL := "https://u:" + hookPass + "@hooks.example.com/h/" + hookPath

	b := e.browser()
	b.signIn(e.token("notify:prod", "read:*"))
	page0 := b.get("/ui/notifications")
	if page0.status != 200 || !strings.Contains(page0.body, `id="add"`) {
		t.Fatalf("notifications page with notify:prod: %d, add form: %v", page0.status, strings.Contains(page0.body, `id="add"`))
	}
	form := func(kv ...string) url.Values {
		v := url.Values{"csrf": {b.csrf}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	list := func() []notify.Subscription {
		subs, err := (&notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}).List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return subs
	}

	// Without the CSRF token nothing happens.
	if p := b.post("/ui/notify/add", url.Values{"url": {hookURL}, "prefix": {"prod"}}); p.status != 403 || len(list()) != 0 {
		t.Fatalf("add without CSRF: %d, %d subscriptions", p.status, len(list()))
	}
	// A prefix the token does not cover: the API's 403, the form comes back without the URL.
	p := b.post("/ui/notify/add", form("url", hookURL, "prefix", "dev", "name", "dev-hook"))
	if p.status != 403 || !strings.Contains(p.body, "no notify grant covering dev") || !strings.Contains(p.body, `value="dev-hook"`) {
		t.Fatalf("add under dev with notify:prod: %d %s", p.status, p.body)
	}
	// A bad URL: 400, the error redacts it and the form does not echo it.
	p2 := b.post("/ui/notify/add", form("url", "ftp://u:"+hookPass+"@x/h/"+hookPath, "prefix", "prod"))
	if p2.status != 400 || !strings.Contains(p2.body, "http:// or https://") {
		t.Fatalf("add with an ftp URL: %d %s", p2.status, p2.body)
	}
	for _, pg := range []page{p, p2} {
		if strings.Contains(pg.body, hookPass) || strings.Contains(pg.body, hookPath) {
			t.Fatalf("a refused form renders the URL's secrets back: %s", pg.body)
		}
	}
	if n := len(list()); n != 0 {
		t.Fatalf("%d subscriptions after refused adds", n)
	}

	// Added: the secret is on this answer only.
	p = b.post("/ui/notify/add", form("url", hookURL, "prefix", "prod", "name", "prod-hook", "format", "slack",
		"events", notify.KindCommitted, "events", notify.KindFailed, "grace_warn", "2h"))
	if p.status != 201 {
		t.Fatalf("add: %d %s", p.status, p.body)
	}
	m := regexp.MustCompile(`id="signing-secret">(whsec_[A-Za-z0-9_-]+)<`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no signing secret on the created page: %s", p.body)
	}
	key := m[1]
	subs := list()
	if len(subs) != 1 || subs[0].Prefix != "prod" || subs[0].Format != notify.FormatSlack || subs[0].Name != "prod-hook" ||
		len(subs[0].Events) != 2 || time.Duration(subs[0].GraceWarn) != 2*time.Hour {
		t.Fatalf("stored: %+v", subs)
	}
	sid := subs[0].ID
	seen := []string{p.body}
	for _, path := range []string{"/ui/notifications", "/ui/notifications?subscription=" + sid, "/ui/notify/remove/" + sid, "/ui/audit"} {
		pg := b.get(path)
		if pg.status != 200 {
			t.Fatalf("%s: %d %s", path, pg.status, pg.body)
		}
		if strings.Contains(pg.body, key) {
			t.Fatalf("%s shows the signing secret again", path)
		}
		seen = append(seen, pg.body)
	}
	for _, body := range seen {
		if strings.Contains(body, hookPass) || strings.Contains(body, hookPath) {
			t.Fatalf("a page shows the URL's credentials: %s", body)
		}
	}
	if !strings.Contains(seen[1], "https://xxxxx@hooks.example.com/h/xxxxx") {
		t.Fatal("the list lacks the redacted URL")
	}

	// A test notification queued; then made a dead letter and replayed.
	p = b.post("/ui/notify/test/"+sid, form())
	if p.status != 303 || !strings.Contains(p.header.Get("Location"), "queued+test+notification") {
		t.Fatalf("test: %d %v %s", p.status, p.header, p.body)
	}
	ds, _ := (&notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}).Deliveries(ctx, store.DeliveryFilter{SubscriptionID: sid})
	if len(ds) != 1 {
		t.Fatalf("deliveries after test: %+v", ds)
	}
	if err := e.m.Store().Update(ctx, func(tx store.Tx) error {
		row, err := tx.GetDelivery(ctx, ds[0].ID)
		if err != nil {
			return err
		}
		row.State, row.Attempts = store.DeliveryDead, 10
		return tx.UpdateDelivery(ctx, row)
	}); err != nil {
		t.Fatal(err)
	}
	if pg := b.get("/ui/notifications"); !strings.Contains(pg.body, fmt.Sprintf(`id="replay-%d"`, ds[0].ID)) {
		t.Fatal("the dead letter has no replay button")
	}
	if p := b.post("/ui/notify/replay", url.Values{"id": {strconv.FormatInt(ds[0].ID, 10)}}); p.status != 403 {
		t.Fatalf("replay without CSRF: %d", p.status)
	}
	p = b.post("/ui/notify/replay", form("id", strconv.FormatInt(ds[0].ID, 10)))
	if p.status != 303 {
		t.Fatalf("replay: %d %s", p.status, p.body)
	}
	got, _ := (&notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}).GetDelivery(ctx, ds[0].ID)
	if got.State != store.DeliveryPending || got.Attempts != 0 {
		t.Fatalf("after replay: %+v", got)
	}

	// Another token's view: a subscription outside its grants cannot be
	// removed, replayed or seen.
	other := e.browser()
	other.signIn(e.token("notify:dev", "read:*"))
	if pg := other.get("/ui/notify/remove/" + sid); pg.status != 404 {
		t.Fatalf("remove page of another prefix's subscription: %d", pg.status)
	}
	if pg := other.post("/ui/notify/remove/"+sid, url.Values{"csrf": {other.csrf}}); pg.status != 403 {
		t.Fatalf("removing another prefix's subscription: %d %s", pg.status, pg.body)
	}
	if pg := other.post("/ui/notify/replay", url.Values{"csrf": {other.csrf}, "id": {strconv.FormatInt(ds[0].ID, 10)}}); pg.status != 403 {
		t.Fatalf("replaying another prefix's delivery: %d", pg.status)
	}
	// A token without any notify grant is offered no form.
	ro := e.browser()
	ro.signIn(e.token("read:*"))
	if pg := ro.get("/ui/notifications"); strings.Contains(pg.body, `id="add"`) {
		t.Fatal("a token without notify is offered the add form")
	}

	// Removed after the confirmation page.
	if p := b.post("/ui/notify/remove/"+sid, url.Values{}); p.status != 403 || len(list()) != 1 {
		t.Fatalf("remove without CSRF: %d", p.status)
	}
	p = b.post("/ui/notify/remove/"+sid, form())
	if p.status != 303 || len(list()) != 0 {
		t.Fatalf("remove: %d, %d left", p.status, len(list()))
	}
	// The audit log names the console's operations, with the URL redacted.
	var recs []string
	if err := e.m.Store().View(ctx, func(tx store.Tx) error {
		rs, err := tx.ListAudit(ctx, 0, 1000)
		for _, r := range rs {
			recs = append(recs, string(r.Payload))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(recs, "\n")
	for _, op := range []string{"notify.add", "notify.test", "notify.replay", "notify.remove"} {
		if !strings.Contains(all, op) {
			t.Errorf("audit lacks %s", op)
		}
	}
	if strings.Contains(all, hookPass) || strings.Contains(all, hookPath) || strings.Contains(all, key) {
		t.Fatal("the audit log holds a URL credential or the signing secret")
	}
}

// TestNotifyPageCaps: long queues and delivery lists are cut to 100 rows
// with a count and a hint that works.
func TestNotifyPageCaps(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	svc := &notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}
	sub, _, err := svc.Add(ctx, notify.AddRequest{URL: secret.New("https://hooks.example.com/x"), Prefix: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	for range 101 {
		if _, err := svc.Test(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	b.signIn(e.token("notify:prod"))
	p := b.get("/ui/notifications?subscription=" + sub.ID)
	if p.status != 200 {
		t.Fatalf("%d %s", p.status, p.body)
	}
	for _, want := range []string{"The oldest 100 of 101 are shown", "The newest 100 are shown", "GET /v1/notify/deliveries?subscription=" + sub.ID} {
		if !strings.Contains(p.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(p.body, `<tr data-id="`); n != 1+100+100 {
		t.Errorf("%d rows, want 1 subscription, 100 deliveries, 100 queued", n)
	}
	if p := b.get("/ui/notifications?subscription=sub_nope"); p.status != 404 {
		t.Errorf("unknown subscription: %d", p.status)
	}
}
