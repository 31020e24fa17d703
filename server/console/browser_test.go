package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	credential "github.com/nebula-credential/nebula-credential"
)

// The end-to-end tests drive Debian's Chromium (headless) against the real
// server. Without chromium they skip, except under CI=true, where .ci/run
// installs it and a missing browser is a failure. Screenshots of every page
// go to the test's artifact directory: keep them with
//
//	go test ./server/console -run Browser -artifacts -outputdir /tmp/console-shots

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: .ci/run installs Debian's chromium package (apt-get install -y chromium)")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium); the browser tests need it")
	return ""
}

// shooter drives one tab and screenshots every page it visits.
type shooter struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int
}

func newBrowser(t *testing.T) (context.Context, string) {
	t.Helper()
	path := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	// One generous deadline for the whole test: waits end on the event
	// they wait for, never on a timer.
	ctx, cancel2 := context.WithTimeout(actx, 3*time.Minute)
	t.Cleanup(cancel2)
	bctx, cancel3 := chromedp.NewContext(ctx)
	t.Cleanup(cancel3)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return bctx, t.ArtifactDir()
}

func (s *shooter) tab(t *testing.T, parent context.Context) *shooter {
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	return &shooter{t: t, ctx: ctx, dir: s.dir}
}

func (s *shooter) run(steps ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	if err := chromedp.Do(s.ctx, steps...); err != nil {
		s.t.Fatal(err)
	}
}

func get[T any](s *shooter, a chromedp.Action[T]) T {
	s.t.Helper()
	v, err := chromedp.Run(s.ctx, a)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

// shot writes a full-page screenshot named after the step.
func (s *shooter) shot(name string) {
	s.t.Helper()
	buf := get(s, chromedp.FullScreenshot(100))
	s.n++
	file := filepath.Join(s.dir, fmt.Sprintf("%s-%02d-%s.png", strings.ReplaceAll(s.t.Name(), "/", "_"), s.n, name))
	if err := os.WriteFile(file, buf, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *shooter) text(sel string) string {
	s.t.Helper()
	return strings.TrimSpace(get(s, chromedp.Text(chromedp.CSS(sel))))
}

func evalJS[T any](s *shooter, js string) T {
	s.t.Helper()
	return get(s, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

func (s *shooter) signIn(base, token string) {
	s.t.Helper()
	s.run(
		chromedp.Navigate(base+"/ui/login"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
	)
	s.shot("login")
	s.run(
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#attention")),
	)
}

// waitFor polls a JavaScript condition until it holds, within the test's deadline.
func (s *shooter) waitFor(cond string) {
	s.t.Helper()
	get(s, chromedp.Poll[any](cond, chromedp.WithPollingInterval(100*time.Millisecond)))
}

func TestBrowser(t *testing.T) {
	bctx, dir := newBrowser(t)
	e := newEnv(t)
	e.putPG("prod/cache", "pw-browser-cache-1")
	e.putPG("prod/db/orders", "pw-browser-orders-1")
	e.putPG("prod/db/users", "pw-browser-users-1")
	if _, err := e.m.Rotate(context.Background(), "prod/cache", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.failRotation("prod/db/orders")
	base := e.ts.URL
	root := &shooter{dir: dir}

	t.Run("FailingRotationRolledBackLive", func(t *testing.T) {
		s := root.tab(t, bctx)
		s.signIn(base, e.admin)
		s.shot("overview")
		first := evalJS[string](s, `document.querySelector("#attention .card").dataset.id`)
		if first != "prod/db/orders" {
			t.Fatalf("first item needing attention is %q, want prod/db/orders", first)
		}
		if txt := s.text("#attention .card"); !strings.Contains(txt, "Fix") || !strings.Contains(txt, "resolve") {
			t.Fatalf("the failing rotation shows no fix: %q", txt)
		}
		// The same page at phone width.
		s.run(chromedp.EmulateViewport(390, 844))
		s.shot("overview-phone")
		s.run(chromedp.EmulateViewport(1280, 900))

		s.run(chromedp.Click(chromedp.CSS(`#attention .card h3 a`)), chromedp.WaitVisible(chromedp.CSS("#state")))
		s.shot("credential")
		if st := s.text("#state"); st != "needs_attention" {
			t.Fatalf("state %q", st)
		}
		if txt := s.text("#doctor"); !strings.Contains(txt, "Fix") {
			t.Fatalf("no doctor report with a fix: %q", txt)
		}
		s.run(chromedp.Click(chromedp.CSS("#action-abort")), chromedp.WaitVisible(chromedp.CSS("#confirm")))
		s.shot("confirm-rollback")
		if what := s.text("#what"); !strings.Contains(what, "reverted") {
			t.Fatalf("the confirmation does not say what will happen: %q", what)
		}
		s.run(chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#done")))
		s.shot("rolled-back")
		if st := s.text("#state"); st == "needs_attention" {
			t.Fatalf("still needs attention after the rollback")
		}
		c, _ := e.m.Get(context.Background(), "prod/db/orders", credential.GetOptions{})
		if c.State == credential.StateNeedsAttention || c.Version != 1 {
			t.Fatalf("store: state %s v%d", c.State, c.Version)
		}

		// Live: a rotation made elsewhere shows up without a reload, and
		// its grace period counts down.
		evalJS[bool](s, `window.__marker = "kept"; true`)
		s.waitFor(`document.getElementById("live").textContent === "live"`)
		if _, err := e.m.Rotate(context.Background(), "prod/db/orders", credential.RotateOptions{}); err != nil {
			t.Fatal(err)
		}
		s.waitFor(`document.getElementById("state").textContent.trim() === "grace"`)
		if marker := evalJS[string](s, `window.__marker`); marker != "kept" {
			t.Fatal("the page reloaded instead of updating in place")
		}
		left1 := evalJS[string](s, `document.getElementById("grace-left").textContent`)
		s.waitFor(fmt.Sprintf(`document.getElementById("grace-left").textContent !== %q`, left1))
		s.shot("grace-live")
		if !strings.Contains(s.text("#grace-left"), "left") {
			t.Fatalf("grace countdown: %q", s.text("#grace-left"))
		}
	})

	t.Run("NoRollbackGrantNoButtonAnd403", func(t *testing.T) {
		e.failRotation("prod/db/users")
		tok := e.token("rotate:prod")
		s := root.tab(t, bctx)
		s.signIn(base, tok)
		s.shot("overview")
		s.run(chromedp.Navigate(base+"/ui/credential/prod/db/users"), chromedp.WaitVisible(chromedp.CSS("#state")))
		s.shot("credential")
		n := evalJS[int](s, `document.querySelectorAll("#action-abort, #action-rollback, a[href*='/ui/confirm/rollback/'], #reveal").length`)
		if n != 0 {
			t.Fatalf("%d rollback or reveal controls offered to a token without rollback and read", n)
		}
		status := evalJS[int](s, `fetch("/ui/act/abort/prod/db/users", {method: "POST", body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value})}).then(r => r.status)`)
		if status != 403 {
			t.Fatalf("posting a rollback anyway: %d, want 403", status)
		}
		s.run(chromedp.Navigate(base+"/ui/confirm/abort/prod/db/users"), chromedp.WaitVisible(chromedp.CSS("main")))
		s.shot("confirm-page-anyway")
	})

	t.Run("PostWithoutCSRFRefused", func(t *testing.T) {
		s := root.tab(t, bctx)
		s.signIn(base, e.admin)
		status := evalJS[int](s, `fetch("/ui/act/rotate/prod/cache", {method: "POST", body: new URLSearchParams({reason: "no csrf"})}).then(r => r.status)`)
		if status != 403 {
			t.Fatalf("post without CSRF: %d, want 403", status)
		}
		s.run(chromedp.Navigate(base+"/ui/credentials"), chromedp.WaitVisible(chromedp.CSS("#credentials")))
		s.shot("list")
	})

	t.Run("RevealIsAudited", func(t *testing.T) {
		s := root.tab(t, bctx)
		s.signIn(base, e.admin)
		s.run(chromedp.Navigate(base+"/ui/credential/prod/cache"), chromedp.WaitVisible(chromedp.CSS("#reveal")))
		cur, _ := e.m.Get(context.Background(), "prod/cache", credential.GetOptions{})
		pw := cur.Secret["password"].Reveal()
		html := get(s, chromedp.OuterHTML(chromedp.CSS("html")))
		if strings.Contains(html, pw) {
			t.Fatal("the secret is on the page before reveal")
		}
		s.run(chromedp.Click(chromedp.CSS("#reveal")), chromedp.WaitVisible(chromedp.CSS(".secret.revealed")))
		if got := s.text(".secret.revealed code"); got != pw {
			t.Fatal("the revealed value is not the current secret")
		}
		s.run(chromedp.Navigate(base+"/ui/audit?action=credential.get&id=prod/cache"), chromedp.WaitVisible(chromedp.CSS("#audit")))
		s.shot("audit")
		if txt := s.text("#audit tbody"); !strings.Contains(txt, "reveal") {
			t.Fatalf("the audit page does not show the reveal: %q", txt)
		}
		s.run(chromedp.Click(chromedp.CSS("#verify")), chromedp.WaitVisible(chromedp.CSS("#verified")))
		s.shot("audit-verified")
		if txt := s.text("#verified"); !strings.Contains(txt, "intact") {
			t.Fatalf("verification: %q", txt)
		}
	})
}
