package console_test

import (
	"context"
	"strings"
	"testing"

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
	for _, want := range []string{"prod-hook", "https://xxxxx@hooks.example.com/h/xxxxx", d.EventID, "receiver answered 500", "notify replay --all"} {
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
