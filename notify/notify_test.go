package notify_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

func ptr[T any](v T) *T { return &v }

func grace(d time.Duration) *rotation.Duration { g := rotation.Duration(d); return &g }

// TestEveryKindDeliveredOnce produces every kind of notification through
// the real engine and store and checks that a receiver on 127.0.0.1 gets
// each exactly once, signed, and without any secret in any payload.
func TestEveryKindDeliveredOnce(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t)
	// The URL carries a credential of its own: it must not leak either.
	hookURL := "http://hookuser:hook-password-123@" + rcv.addr + "/hooks/abcdefghijklmnopqrstuvwx?token=query-secret-456"
	sub, key := e.subscribe(hookURL, func(r *notify.AddRequest) {
		r.GraceWarn, r.OverdueFor, r.ExpiryDays = 2*time.Hour, time.Hour, 14
	})
	if strings.Contains(sub.URL, "hook-password") || strings.Contains(sub.URL, "query-secret") || strings.Contains(sub.URL, "abcdefghijklmnop") {
		t.Fatalf("listed URL is not redacted: %s", sub.URL)
	}
	ctx := e.ctx

	// rotation_committed and, later, grace_ending (grace 1h < GraceWarn 2h).
	e.putGeneric("app/grace", "initial-secret-grace", func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Grace: grace(time.Hour)}
	})
	if _, err := e.m.Rotate(ctx, "app/grace", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	// rolled_back: a person rolls back during grace.
	e.putGeneric("app/rb", "initial-secret-rb", func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Grace: grace(time.Hour)}
	})
	if _, err := e.m.Rotate(ctx, "app/rb", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Rollback(ctx, "app/rb", credential.RollbackOptions{}); err != nil {
		t.Fatal(err)
	}
	// rotation_failed: the target refuses to stage.
	pg := func(id, pw string, s *credential.Settings) {
		e.target.AddUser("app", secret.FromStrings(map[string]string{"password": pw}))
		if _, err := e.m.Put(ctx, id, credential.PutRequest{Type: credential.Postgres, Fields: map[string]any{"host": "127.0.0.1", "username": "app"},
			Secret: secret.FromStrings(map[string]string{"password": pw}), Settings: s}); err != nil {
			t.Fatal(err)
		}
	}
	pg("db/failed", "pg-secret-failed", nil)
	// Twice: staging is tried in the plan, then as its own step.
	fail := rotatortest.Failure{Class: rotator.ClassAuth, Message: "denied for $SECRET"}
	e.target.FailNext("stage", fail, fail)
	if _, err := e.m.Rotate(ctx, "db/failed", credential.RotateOptions{}); err == nil {
		t.Fatal("rotation with a failing stage succeeded")
	}
	// needs_attention: verify fails and automatic rollback is off.
	pg("db/attention", "pg-secret-attention", &credential.Settings{AutoRollback: ptr(false)})
	e.target.FailNext("verify", rotatortest.Failure{Class: rotator.ClassAuth, Message: "login failed for $SECRET"})
	if _, err := e.m.Rotate(ctx, "db/attention", credential.RotateOptions{}); err == nil {
		t.Fatal("rotation with a failing verify succeeded")
	}
	// reauth_required: the provider rejects the refresh token.
	pg("db/reauth", "pg-secret-reauth", nil)
	grant := rotatortest.Failure{Class: rotator.ClassInvalidGrant, Message: "invalid_grant"}
	e.target.FailNext("stage", grant, grant)
	if _, err := e.m.Rotate(ctx, "db/reauth", credential.RotateOptions{}); err == nil {
		t.Fatal("rotation with invalid_grant succeeded")
	}
	// consumers_behind: a consumer stays on the old version until grace ends.
	e.putGeneric("app/cons", "initial-secret-cons", func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Grace: grace(time.Minute)}
	})
	rot, err := e.m.Rotate(ctx, "app/cons", credential.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	if err := e.m.Store().Update(ctx, func(tx store.Tx) error {
		now := e.clk.Now()
		return tx.PutConsumer(ctx, &store.Consumer{ID: "web-1", CredentialID: "app/cons", Name: "web", Host: "h1", Kind: "agent",
			Version: rot.FromVersion, ActionOK: true, FirstSeen: now, LastSeen: now})
	}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * time.Minute)
	if _, err := e.m.Engine().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	// certificate_expiring: the current version expires in 2 days (< 14).
	e.putGeneric("tls/web", "cert-key-secret", func(r *credential.PutRequest) {
		r.ExpiresAt = ptr(e.clk.Now().Add(48 * time.Hour))
	})
	// policy_overdue: due hourly, and 3h pass without the scheduler.
	e.putGeneric("app/due", "initial-secret-due", func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Policies: []rotation.Policy{{Kind: "periodic", Interval: rotation.Duration(time.Hour)}}}
	})
	e.clk.Advance(3 * time.Hour)

	// The dispatcher starts now: everything so far waited in the outbox.
	d := e.dispatcher(nil)
	// The periodic check, run twice (as by two servers): reported once.
	for range 2 {
		if err := d.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d.Kick()

	type kc struct{ kind, id string }
	want := map[kc]bool{
		{notify.KindCommitted, "app/grace"}: true, {notify.KindCommitted, "app/rb"}: true, {notify.KindCommitted, "app/cons"}: true,
		{notify.KindRolledBack, "app/rb"}: true, {notify.KindFailed, "db/failed"}: true,
		{notify.KindNeedsAttention, "db/attention"}: true, {notify.KindReauthRequired, "db/reauth"}: true,
		{notify.KindGraceEnding, "app/grace"}: true, {notify.KindConsumersStale, "app/cons"}: true,
		{notify.KindCertExpiring, "tls/web"}: true, {notify.KindOverdue, "app/due"}: true,
	}
	kinds := map[string]bool{}
	for k := range want {
		kinds[k.kind] = true
	}
	if len(kinds) != len(notify.Kinds()) {
		t.Fatalf("the test covers %d kinds of %d", len(kinds), len(notify.Kinds()))
	}
	has := func(ds []delivery) bool {
		seen := map[kc]bool{}
		for _, d := range ds {
			p := payloadOf(t, d)
			if want[kc{p.Kind, p.CredentialID}] {
				seen[kc{p.Kind, p.CredentialID}] = true
			}
		}
		return len(seen) == len(want)
	}
	rcv.waitFor("one notification of every kind", has)
	// Let anything extra arrive: the queue must drain completely.
	waitDrained(t, e)
	got := rcv.deliveries()

	if len(got) != len(want) {
		t.Errorf("got %d deliveries, want %d", len(got), len(want))
	}
	for id, n := range delivered(got) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	secrets := append(e.secrets("app/grace", "app/rb", "db/failed", "db/attention", "db/reauth", "app/cons", "tls/web", "app/due"),
		"hook-password-123", "query-secret-456", "abcdefghijklmnopqrstuvwx", string(key))
	if len(secrets) < 12 {
		t.Fatalf("only %d secrets to search for", len(secrets))
	}
	for _, d := range got {
		p := payloadOf(t, d)
		if p.Schema != notify.Schema || p.ID == "" || p.Summary == "" || p.At.IsZero() {
			t.Errorf("incomplete payload: %s", d.body)
		}
		if k := d.header.Get(notify.HeaderIdempotencyKey); k != p.ID {
			t.Errorf("Idempotency-Key %q, payload id %q", k, p.ID)
		}
		if h := d.header.Get(notify.HeaderEvent); h != p.Kind {
			t.Errorf("%s header %q, payload kind %q", notify.HeaderEvent, h, p.Kind)
		}
		if err := notify.Verify(key, d.header.Get(notify.HeaderSignature), d.body, e.clk.Now(), 0); err != nil {
			t.Errorf("signature of %s: %v", p.ID, err)
		}
		for _, s := range secrets {
			if strings.Contains(string(d.body), s) || strings.Contains(fmt.Sprint(d.header), s) {
				t.Errorf("delivery %s contains a secret %q: %s", p.ID, s[:4], d.body)
			}
		}
		if !want[kc{p.Kind, p.CredentialID}] {
			t.Errorf("unexpected notification %s for %s", p.Kind, p.CredentialID)
		}
	}
	for _, s := range secrets {
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("logs contain a secret %q", s[:4])
		}
	}
}

// waitDrained waits until nothing is pending and the outbox is empty.
func waitDrained(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		var st *store.NotifyStats
		if err := e.m.Store().View(e.ctx, func(tx store.Tx) error {
			var err error
			st, err = tx.NotifyStats(e.ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if st.Outbox == 0 && st.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// commits rotates a generic credential n times (grace 0) and returns the
// number of committed-rotation events.
func commits(t *testing.T, e *env, id string, n int) {
	t.Helper()
	e.putGeneric(id, "initial-"+id, func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Grace: grace(0)}
	})
	for range n {
		if _, err := e.m.Rotate(e.ctx, id, credential.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReceiverDownThenBack(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	e.subscribe(rcv.url("/hook"), nil)
	rcv.stop()
	d := e.dispatcher(func(c *notify.DispatcherConfig) { c.MaxAttempts = 1000 })
	commits(t, e, "app/down", 10)
	// Attempts fail while it is down.
	deadline := time.Now().Add(waitLimit)
	for {
		ds, err := e.svc.Deliveries(e.ctx, store.DeliveryFilter{State: store.DeliveryPending})
		if err != nil {
			t.Fatal(err)
		}
		failed := 0
		for _, d := range ds {
			if d.Attempts >= 2 {
				failed++
			}
		}
		if failed == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries did not fail while the receiver was down: %+v", ds)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := metric(t, d, "nebula_credential_notify_queue_depth"); v != 10 {
		t.Errorf("queue depth %v while the receiver is down, want 10", v)
	}
	if v := metric(t, d, "nebula_credential_notify_oldest_undelivered_age_seconds"); v <= 0 {
		t.Errorf("oldest undelivered age %v while the receiver is down", v)
	}
	if v := counterAtLeast(t, d, `nebula_credential_notify_deliveries_total{kind="rotation_committed",result="failed"}`, 20); v < 20 {
		t.Errorf("failed attempts %v, want at least 20", v)
	}
	rcv.start()
	got := rcv.waitFor("10 notifications", func(ds []delivery) bool { return len(delivered(ds)) == 10 })
	waitDrained(t, e)
	for id, n := range delivered(got) {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if v := metric(t, d, "nebula_credential_notify_queue_depth"); v != 0 {
		t.Errorf("queue depth %v after delivery", v)
	}
	if v := metric(t, d, "nebula_credential_notify_oldest_undelivered_age_seconds"); v != 0 {
		t.Errorf("oldest undelivered age %v with nothing undelivered", v)
	}
	if v := counterAtLeast(t, d, `nebula_credential_notify_deliveries_total{kind="rotation_committed",result="delivered"}`, 10); v != 10 {
		t.Errorf("delivered %v, want 10", v)
	}
}

func TestDeadLetterAfterExactlyNAttemptsThenReplay(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	rcv.status.Store(500)
	sub, _ := e.subscribe(rcv.url("/hook"), nil)
	const n = 4
	disp := e.dispatcher(func(c *notify.DispatcherConfig) { c.MaxAttempts = n })
	commits(t, e, "app/dead", 1)
	var dead []notify.Delivery
	deadline := time.Now().Add(waitLimit)
	for len(dead) == 0 {
		var err error
		if dead, err = e.svc.Deliveries(e.ctx, store.DeliveryFilter{State: store.DeliveryDead}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if dead[0].Attempts != n || dead[0].LastStatus != 500 || dead[0].SubscriptionID != sub.ID {
		t.Errorf("dead letter: %+v", dead[0])
	}
	// Exactly n requests reached the receiver, all with the same key.
	got := rcv.deliveries()
	if len(got) != n {
		t.Fatalf("receiver got %d requests, want exactly %d", len(got), n)
	}
	for _, d := range got {
		if d.header.Get(notify.HeaderIdempotencyKey) != dead[0].EventID {
			t.Errorf("Idempotency-Key %q, want %q", d.header.Get(notify.HeaderIdempotencyKey), dead[0].EventID)
		}
	}
	if v := metric(t, disp, "nebula_credential_notify_dead_letters "); v != 1 {
		t.Errorf("dead letters gauge %v, want 1", v)
	}
	if v := counterAtLeast(t, disp, "nebula_credential_notify_dead_letters_total", 1); v != 1 {
		t.Errorf("dead letters counter %v, want 1", v)
	}
	// Replaying a pending or unknown delivery is refused.
	if _, err := e.svc.Replay(e.ctx, "", []int64{dead[0].ID + 1000}); err == nil {
		t.Error("replay of an unknown delivery succeeded")
	}
	rcv.status.Store(200)
	re, err := e.svc.Replay(e.ctx, sub.ID, nil)
	if err != nil || len(re) != 1 {
		t.Fatalf("replay: %v %+v", err, re)
	}
	e.waitState(dead[0].ID, store.DeliveryDelivered)
	got = rcv.deliveries()
	if len(got) != n+1 || !got[n].ok || got[n].header.Get(notify.HeaderIdempotencyKey) != dead[0].EventID {
		t.Errorf("after replay the receiver got %d requests; last ok=%v", len(got), got[len(got)-1].ok)
	}
	if _, err := e.svc.Replay(e.ctx, "", []int64{dead[0].ID}); err == nil {
		t.Error("replay of a delivered delivery succeeded")
	}
}

// TestCircuitBreaker: after BreakerFailures failures the endpoint is not
// tried during the cooldown, and no attempts are spent meanwhile.
func TestCircuitBreaker(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	rcv.status.Store(503)
	e.subscribe(rcv.url("/hook"), nil)
	e.dispatcher(func(c *notify.DispatcherConfig) {
		c.MaxAttempts, c.BreakerFailures, c.BreakerCooldown = 1000, 3, time.Hour
	})
	commits(t, e, "app/breaker", 5)
	rcv.waitFor("3 attempts", func(ds []delivery) bool { return len(ds) >= 3 })
	// Give the dispatcher many polls; the breaker holds further attempts back.
	deadline := time.Now().Add(waitLimit)
	for {
		ds, err := e.svc.Deliveries(e.ctx, store.DeliveryFilter{State: store.DeliveryPending})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, d := range ds {
			total += d.Attempts
		}
		// All five were considered at least once by the breaker: each is
		// due after the cooldown.
		waiting := 0
		for _, d := range ds {
			if d.DueAt != nil && time.Until(*d.DueAt) > 30*time.Minute {
				waiting++
			}
		}
		if waiting == 5 {
			if total > 3+notifyConcurrency {
				t.Errorf("%d attempts with the breaker open after 3 failures", total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries not held by the breaker: %+v", ds)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(rcv.deliveries()); n > 3+notifyConcurrency {
		t.Errorf("receiver got %d requests with the breaker open", n)
	}
}

// notifyConcurrency is the default per-endpoint limit: that many attempts
// may already be in flight when the breaker opens.
const notifyConcurrency = 4

// TestTwoDispatchersOneStore: two dispatchers (two servers) on one store
// deliver every notification exactly once between them.
func TestTwoDispatchersOneStore(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	e.subscribe(rcv.url("/hook"), nil)
	e.dispatcher(func(c *notify.DispatcherConfig) { c.Owner = "a" })
	e.dispatcher(func(c *notify.DispatcherConfig) { c.Owner = "b" })
	commits(t, e, "app/two", 30)
	rcv.waitFor("30 notifications", func(ds []delivery) bool { return len(delivered(ds)) == 30 })
	waitDrained(t, e)
	for id, n := range delivered(rcv.deliveries()) {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

func TestTestNotificationAndFilters(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	slack, _ := e.subscribe(rcv.url("/slack"), func(r *notify.AddRequest) {
		r.Format, r.Prefix, r.Events = notify.FormatSlack, "prod", []string{notify.KindCommitted}
	})
	e.dispatcher(nil)
	commits(t, e, "dev/x", 1)  // prefix does not match
	commits(t, e, "prod/x", 1) // matches
	d, err := e.svc.Test(e.ctx, slack.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(d.ID, store.DeliveryDelivered)
	got := rcv.waitFor("2 notifications", func(ds []delivery) bool { return len(delivered(ds)) == 2 })
	waitDrained(t, e)
	got = rcv.deliveries()
	if len(got) != 2 {
		t.Fatalf("got %d deliveries, want the commit of prod/x and the test", len(got))
	}
	var texts []string
	for _, d := range got {
		var m map[string]any
		if err := jsonUnmarshal(d.body, &m); err != nil || len(m) != 1 || m["text"] == nil {
			t.Errorf("not a Slack message: %s", d.body)
		}
		texts = append(texts, fmt.Sprint(m["text"]))
	}
	slices.Sort(texts)
	if !strings.Contains(strings.Join(texts, "\n"), "prod/x: rotated to version 2") || !strings.Contains(strings.Join(texts, "\n"), "test notification") {
		t.Errorf("Slack texts: %q", texts)
	}
	// Removing a subscription drops its deliveries; a second remove says so.
	if err := e.svc.Remove(e.ctx, slack.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(e.ctx, slack.ID); err == nil {
		t.Error("second remove succeeded")
	}
	if ds, _ := e.svc.Deliveries(e.ctx, store.DeliveryFilter{}); len(ds) != 0 {
		t.Errorf("deliveries left after remove: %+v", ds)
	}
}

func TestAddValidates(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []notify.AddRequest{
		{URL: secret.New("ftp://example.com/x")},
		{URL: secret.New("/relative")},
		{URL: secret.New("http://example.com/"), Format: "xml"},
		{URL: secret.New("http://example.com/"), Events: []string{"nope"}},
		{URL: secret.New("http://example.com/"), ExpiryDays: -1},
	} {
		if _, _, err := e.svc.Add(e.ctx, tc); err == nil {
			t.Errorf("Add(%+v) succeeded", tc)
		}
	}
	if subs, _ := e.svc.List(e.ctx); len(subs) != 0 {
		t.Errorf("invalid requests stored subscriptions: %+v", subs)
	}
}

// TestKeyRotateRewrapsSubscriptions: `key rotate` re-wraps subscriptions,
// drops the old key, and the subscription still opens and delivers.
func TestKeyRotateRewrapsSubscriptions(t *testing.T) {
	e := newEnv(t)
	e.realTime()
	rcv := newReceiver(t)
	sub, key := e.subscribe(rcv.url("/hook"), nil)
	res, err := e.m.RotateKEK(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) != 1 {
		t.Fatalf("key rotate kept the old key: %+v", res)
	}
	e.dispatcher(nil)
	d, err := e.svc.Test(e.ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(d.ID, store.DeliveryDelivered)
	got := rcv.deliveries()
	if len(got) != 1 || notify.Verify(key, got[0].header.Get(notify.HeaderSignature), got[0].body, time.Now(), 0) != nil {
		t.Errorf("after key rotate: %d deliveries", len(got))
	}
}

// TestConditionReportedOnceAcrossPrune: a condition that lasts longer than
// the retention of delivered rows (a certificate expiring in 10 days, a
// credential left overdue) is not reported again once the delivered
// rotation events are pruned.
func TestConditionReportedOnceAcrossPrune(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t)
	e.subscribe(rcv.url("/hook"), func(r *notify.AddRequest) { r.ExpiryDays = 14 })
	commits(t, e, "app/witness", 1) // an event's delivery: pruned after Retention
	e.putGeneric("tls/web", "cert-key-prune", func(r *credential.PutRequest) {
		r.ExpiresAt = ptr(e.clk.Now().Add(10 * 24 * time.Hour))
	})
	e.putGeneric("app/due", "initial-secret-due-prune", func(r *credential.PutRequest) {
		r.Settings = &credential.Settings{Policies: []rotation.Policy{{Kind: "periodic", Interval: rotation.Duration(time.Hour)}}}
	})
	e.clk.Advance(3 * time.Hour)
	d := e.dispatcher(nil)
	if err := d.Check(e.ctx); err != nil {
		t.Fatal(err)
	}
	d.Kick()
	rcv.waitFor("the commit and both conditions", func(ds []delivery) bool { return len(ds) >= 3 })
	waitDrained(t, e)

	// Eight days later (past the 7-day retention): the event's row is
	// pruned, both conditions still hold.
	e.clk.Advance(8 * 24 * time.Hour)
	d.Kick()
	deadline := time.Now().Add(waitLimit)
	for {
		ds, err := e.svc.Deliveries(e.ctx, store.DeliveryFilter{State: store.DeliveryDelivered})
		if err != nil {
			t.Fatal(err)
		}
		witness := false
		for _, x := range ds {
			witness = witness || x.Kind == notify.KindCommitted
		}
		if !witness {
			if len(ds) != 2 {
				t.Fatalf("after the prune %d condition rows are left, want 2", len(ds))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivered event was never pruned")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 2 {
		if err := d.Check(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	d.Kick()
	waitDrained(t, e)
	if got := rcv.deliveries(); len(got) != 3 {
		for _, x := range got {
			t.Logf("%s", x.body)
		}
		t.Fatalf("%d deliveries, want 3: a condition was reported again after the prune", len(got))
	}
}
