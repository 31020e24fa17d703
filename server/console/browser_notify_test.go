package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/store"
)

// hookReceiver is a real webhook receiver on 127.0.0.1: it answers status
// and records what it got.
type hookReceiver struct {
	status atomic.Int32
	url    string

	mu   sync.Mutex
	got  []hookRequest
	cond chan struct{}
}

type hookRequest struct {
	header http.Header
	body   []byte
	status int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	h := &hookReceiver{cond: make(chan struct{})}
	h.status.Store(http.StatusNoContent)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		code := int(h.status.Load())
		h.mu.Lock()
		h.got = append(h.got, hookRequest{header: r.Header.Clone(), body: b, status: code})
		close(h.cond)
		h.cond = make(chan struct{})
		h.mu.Unlock()
		w.WriteHeader(code)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h.url = "http://" + ln.Addr().String()
	return h
}

// waitFor waits, within ctx (the test's one deadline), until f holds.
func (h *hookReceiver) waitFor(t *testing.T, ctx context.Context, what string, f func([]hookRequest) bool) []hookRequest {
	t.Helper()
	for {
		h.mu.Lock()
		got, ch := append([]hookRequest(nil), h.got...), h.cond
		h.mu.Unlock()
		if f(got) {
			return got
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; got %d requests", what, ctx.Err(), len(got))
		}
	}
}

func payloadOf(t *testing.T, r hookRequest) notify.Payload {
	t.Helper()
	var p notify.Payload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("payload %q: %v", r.body, err)
	}
	return p
}

// TestBrowserNotifications adds a webhook subscription from the console
// against a real receiver, sees a rotation's notification delivered, lets
// the next one fail into the dead-letter queue, replays it from the page,
// and removes the subscription.
func TestBrowserNotifications(t *testing.T) {
	bctx, dir := newBrowser(t)
	e := newEnvNotify(t, true)
	e.putPG("prod/hooked", "pw-browser-hooked-1")
	base := e.ts.URL
	hook := newHookReceiver(t)
	// The URL holds a credential: it must never be rendered back.
	const hookPass, hookPath = "hook-pass-browser-5", "Qw7Er9Ty2Ui4Op6A"
	hookURL := strings.Replace(hook.url, "http://", "http://bob:"+hookPass+"@", 1) + "/in/" + hookPath
	svc := &notify.Service{Store: e.m.Store(), Keys: e.m.SubscriptionKeys()}
	zero := time.Duration(0)
	noGrace := credential.RotateOptions{Grace: &zero} // retired at once: the next rotation may follow

	s := (&shooter{dir: dir}).tab(t, bctx)
	s.signIn(base, e.token("notify:prod", "read:prod", "rotate:prod"))
	s.run(chromedp.Navigate(base+"/ui/notifications"), chromedp.WaitVisible(chromedp.CSS("#add")))
	s.shot("notifications-empty")
	s.run(
		chromedp.SendKeys(chromedp.CSS("#url"), hookURL),
		chromedp.SendKeys(chromedp.CSS("#name"), "oncall"),
		chromedp.SendKeys(chromedp.CSS("#prefix"), "prod"),
		chromedp.Click(chromedp.CSS(`input[name=events][value=rotation_committed]`)),
	)
	s.shot("add-form")
	s.run(chromedp.Click(chromedp.CSS("#add-submit")), chromedp.WaitVisible(chromedp.CSS("#signing-secret")))
	s.shot("created")
	key := s.text("#signing-secret")
	if !strings.HasPrefix(key, "whsec_") {
		t.Fatalf("signing secret %q", key)
	}
	subs, err := svc.List(context.Background())
	if err != nil || len(subs) != 1 {
		t.Fatalf("subscriptions: %v %v", subs, err)
	}
	sid := subs[0].ID
	pages := []string{get(s, chromedp.OuterHTML(chromedp.CSS("html")))}

	// A rotation: its notification reaches the receiver, signed with the
	// secret the page showed.
	s.run(chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#deliveries")))
	if _, err := e.m.Rotate(context.Background(), "prod/hooked", noGrace); err != nil {
		t.Fatal(err)
	}
	got := hook.waitFor(t, s.ctx, "the rotation's notification", func(rs []hookRequest) bool { return len(rs) >= 1 })
	first := payloadOf(t, got[0])
	if first.Kind != notify.KindCommitted || first.CredentialID != "prod/hooked" || first.Version != 2 {
		t.Fatalf("first notification %+v", first)
	}
	if err := notify.Verify([]byte(key), got[0].header.Get(notify.HeaderSignature), got[0].body, time.Now(), 0); err != nil {
		t.Fatalf("the signature does not verify with the secret the console showed: %v", err)
	}
	if u, p, ok := basicAuth(got[0].header); !ok || u != "bob" || p != hookPass {
		t.Fatal("the receiver did not get the URL's credentials")
	}
	// The console shows it delivered (the page is reloaded until the
	// dispatcher has recorded the outcome).
	delivered := fmt.Sprintf(`tr[data-event=%q][data-state=delivered]`, first.ID)
	s.reloadUntil(base+"/ui/notifications?subscription="+sid, delivered)
	s.shot("delivered")
	pages = append(pages, get(s, chromedp.OuterHTML(chromedp.CSS("html"))))

	// The receiver fails: the next notification is a dead letter after
	// two attempts.
	hook.status.Store(http.StatusInternalServerError)
	if _, err := e.m.Rotate(context.Background(), "prod/hooked", noGrace); err != nil {
		t.Fatal(err)
	}
	got = hook.waitFor(t, s.ctx, "two failed attempts", func(rs []hookRequest) bool { return len(rs) >= 3 })
	second := payloadOf(t, got[1])
	if second.Kind != notify.KindCommitted || second.Version != 3 || payloadOf(t, got[2]).ID != second.ID {
		t.Fatalf("failed attempts: %+v", second)
	}
	deadRow := fmt.Sprintf(`#dead-letters tr[data-event=%q]`, second.ID)
	s.reloadUntil(base+"/ui/notifications", deadRow)
	s.shot("dead-letter")
	dead, err := svc.Deliveries(context.Background(), store.DeliveryFilter{State: store.DeliveryDead})
	if err != nil || len(dead) != 1 || dead[0].EventID != second.ID || dead[0].Attempts != 2 {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}

	// The receiver recovers; a replay from the page delivers it, with the same event ID.
	hook.status.Store(http.StatusNoContent)
	s.run(chromedp.Click(chromedp.CSS(fmt.Sprintf("#replay-%d", dead[0].ID))), chromedp.WaitVisible(chromedp.CSS("#done")))
	s.shot("replayed")
	got = hook.waitFor(t, s.ctx, "the replayed notification", func(rs []hookRequest) bool { return len(rs) >= 4 })
	if p := payloadOf(t, got[3]); p.ID != second.ID || got[3].header.Get(notify.HeaderIdempotencyKey) != second.ID {
		t.Fatalf("replayed %+v, want event %s", p, second.ID)
	}
	s.reloadUntil(base+"/ui/notifications?subscription="+sid, fmt.Sprintf(`tr[data-event=%q][data-state=delivered]`, second.ID))
	s.shot("replay-delivered")
	pages = append(pages, get(s, chromedp.OuterHTML(chromedp.CSS("html"))))

	// Removed after its confirmation page.
	s.run(chromedp.Click(chromedp.CSS("#remove-"+sid)), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	s.shot("confirm-remove")
	pages = append(pages, get(s, chromedp.OuterHTML(chromedp.CSS("html"))))
	s.run(chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#done")))
	if n := evalJS[int](s, `document.querySelectorAll("#subscriptions tr[data-id]").length`); n != 0 {
		t.Fatalf("%d subscriptions listed after remove", n)
	}
	if subs, _ := svc.List(context.Background()); len(subs) != 0 {
		t.Fatalf("store still has %d subscriptions", len(subs))
	}

	// No page but the creation answer held the signing secret, none the
	// URL's credentials, and no payload a credential's secret.
	for i, html := range pages {
		if strings.Contains(html, hookPass) || strings.Contains(html, hookPath) {
			t.Fatalf("page %d shows the URL's credentials", i)
		}
		if i > 0 && strings.Contains(html, key) {
			t.Fatalf("page %d shows the signing secret again", i)
		}
	}
	for _, r := range got {
		for _, sec := range e.allSecrets() {
			if strings.Contains(string(r.body), sec) {
				t.Fatal("a payload holds a credential's secret")
			}
		}
	}
}

func basicAuth(h http.Header) (string, string, bool) {
	r := &http.Request{Header: h}
	return r.BasicAuth()
}

// reloadUntil loads path until an element matches sel, within the test's deadline.
func (s *shooter) reloadUntil(path, sel string) {
	s.t.Helper()
	for {
		s.run(chromedp.Navigate(path), chromedp.WaitVisible(chromedp.CSS("main")))
		if evalJS[bool](s, fmt.Sprintf(`document.querySelector(%q) !== null`, sel)) {
			return
		}
		select {
		case <-s.ctx.Done():
			s.t.Fatalf("%s never showed %s", path, sel)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
