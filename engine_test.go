package credential_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// clock is an injected clock for time-driven behaviour.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is a manager on a temp SQLite store with the fake target registered as
// type "generic"'s sibling: credentials of type mysql go to the fake target.
type env struct {
	t     *testing.T
	dir   string
	tg    *rotatortest.Target
	clock *clock
	m     *credential.Manager
	cfg   func(*credential.Config)
}

const fakeType = credential.MySQL // any registered type; the fake target stands in for MySQL

func newEnv(t *testing.T, tweak func(*credential.Config)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: newClock(), cfg: tweak}
	e.tg = rotatortest.NewTarget(filepath.Join(e.dir, "target.json"))
	e.open(true)
	t.Cleanup(func() { e.m.Close() })
	return e
}

func (e *env) config(create bool) credential.Config {
	st, err := sqlite.Open(context.Background(), filepath.Join(e.dir, "creds.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	reg := rotator.NewRegistry()
	reg.Register(string(fakeType), e.tg.Rotator())
	cfg := credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(e.dir, "creds.key"), Create: create, Rotators: reg, Clock: e.clock.Now,
		Engine: rotation.Config{Rand: func(n int64) int64 { return n - 1 }}}
	if e.cfg != nil {
		e.cfg(&cfg)
	}
	return cfg
}

func (e *env) open(create bool) {
	e.t.Helper()
	m, err := credential.Open(context.Background(), e.config(create))
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
}

func (e *env) reopen() {
	e.t.Helper()
	e.m.Close()
	e.open(false)
}

// put stores a fake-target credential whose password the target accepts.
func (e *env) put(id string, settings *credential.Settings) *credential.Credential {
	e.t.Helper()
	pw, _ := secret.PasswordPolicy{}.Generate()
	sec := secret.Map{"password": pw}
	c, err := e.m.Put(context.Background(), id, credential.PutRequest{Type: fakeType, Fields: map[string]any{"host": "fake", "username": strings.ReplaceAll(id, "/", "_")}, Secret: sec, Settings: settings})
	if err != nil {
		e.t.Fatal(err)
	}
	e.tg.AddUser(strings.ReplaceAll(id, "/", "_"), sec)
	return c
}

func (e *env) get(id string, label string) *credential.Credential {
	e.t.Helper()
	c, err := e.m.Get(context.Background(), id, credential.GetOptions{Label: label})
	if err != nil {
		e.t.Fatalf("get %s %s: %v", id, label, err)
	}
	return c
}

func (e *env) auth(c *credential.Credential) bool {
	return e.tg.Authenticates(rotator.Credential{ID: c.ID, Fields: c.Fields, Secret: c.Secret})
}

func (e *env) tick() {
	e.t.Helper()
	if _, err := e.m.Engine().Tick(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func dur(d time.Duration) *time.Duration { return &d }

func TestRotateGraceRetire(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("app/db", nil)
	var events []string
	var mu sync.Mutex
	e.m.Engine().Subscribe(func(ev rotation.Event) { mu.Lock(); events = append(events, ev.Kind); mu.Unlock() })

	r, err := e.m.Rotate(context.Background(), "app/db", credential.RotateOptions{Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != rotation.StepGrace || r.GraceEndsAt == nil || !r.GraceEndsAt.Equal(e.clock.Now().Add(5*time.Minute)) {
		t.Fatalf("after rotate: step %s grace %v", r.Step, r.GraceEndsAt)
	}
	cur, prev := e.get("app/db", "current"), e.get("app/db", "previous")
	if cur.Version != 2 || prev.Version != 1 || cur.State != credential.StateGrace {
		t.Fatalf("labels: current %d previous %d state %s", cur.Version, prev.Version, cur.State)
	}
	if !e.auth(cur) || !e.auth(v1) {
		t.Fatal("both versions must authenticate during grace")
	}
	// Not retired before grace ends, even across a restart.
	e.clock.Advance(4 * time.Minute)
	e.reopen()
	e.m.Engine().Subscribe(func(ev rotation.Event) { mu.Lock(); events = append(events, ev.Kind); mu.Unlock() })
	e.tick()
	if !e.auth(v1) {
		t.Fatal("old version retired before grace ended")
	}
	e.clock.Advance(time.Minute)
	e.tick()
	if e.auth(v1) || !e.auth(cur) {
		t.Fatal("after grace: old must fail, new must work")
	}
	if c := e.get("app/db", "current"); c.State != credential.StateActive {
		t.Fatalf("state after retire: %s", c.State)
	}
	if _, err := e.m.Get(context.Background(), "app/db", credential.GetOptions{Label: "previous"}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("previous label after retire: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{rotation.EventStarted, rotation.EventCurrentChanged, rotation.EventRetired} {
		found := false
		for _, k := range events {
			found = found || k == want
		}
		if !found {
			t.Errorf("missing event %s in %v", want, events)
		}
	}
}

func TestZeroGraceRetiresAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(0)})
	if err != nil || r.Step != rotation.StepRetired || r.Open {
		t.Fatalf("rotate: %v %+v", err, r)
	}
	if e.auth(v1) || !e.auth(e.get("a", "current")) {
		t.Fatal("zero grace: old must be gone, new must work")
	}
}

func TestRetryWithBackoffThenCommit(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.tg.FailNext("apply", rotatortest.Failure{Class: rotator.ClassTransient}, rotatortest.Failure{Class: rotator.ClassTransient})
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	if !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatalf("want retry scheduled, got %v", err)
	}
	// Full jitter with Rand = n-1: the delay is the cap of attempt 1 (1s).
	if got := r.DueAt.Sub(e.clock.Now()); got != time.Second {
		t.Fatalf("first backoff %v, want 1s", got)
	}
	if c := e.get("a", "current"); c.Version != 1 || c.State != credential.StateRotating {
		t.Fatalf("during retry: v%d %s", c.Version, c.State)
	}
	e.tick() // not due yet
	if e.tg.Calls("apply") != 1 {
		t.Fatalf("apply retried before due: %d", e.tg.Calls("apply"))
	}
	e.clock.Advance(time.Second)
	e.tick()
	rs, _ := e.m.Rotations(context.Background(), "a", true, 1)
	if len(rs) != 1 || rs[0].Attempt != 2 || rs[0].DueAt.Sub(e.clock.Now()) != 2*time.Second {
		t.Fatalf("second backoff: %+v", rs)
	}
	e.clock.Advance(2 * time.Second)
	e.tick()
	if c := e.get("a", "current"); c.Version != 2 || !e.auth(c) {
		t.Fatalf("after retries: v%d", c.Version)
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	b := rotation.Backoff{}
	for attempt := 1; attempt <= 12; attempt++ {
		capd := min(time.Second<<(attempt-1), 5*time.Minute)
		if got := b.Delay(attempt, func(n int64) int64 { return n - 1 }); got != capd {
			t.Errorf("attempt %d: max delay %v, want %v", attempt, got, capd)
		}
		if got := b.Delay(attempt, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("attempt %d: min delay %v", attempt, got)
		}
	}
}

func TestRetriesExhaustedRollBack(t *testing.T) {
	e := newEnv(t, func(c *credential.Config) {})
	v1 := e.put("a", &credential.Settings{Backoff: rotation.Backoff{Attempts: 2}})
	e.tg.SetDown(true)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.tg.SetDown(false)
	e.tg.FailNext("stage", rotatortest.Failure{Class: rotator.ClassTransient})
	e.tick()
	rs, _ := e.m.Rotations(context.Background(), "a", false, 1)
	if rs[0].Step != rotation.StepRolledBack || rs[0].Open || rs[0].ErrorClass != string(rotator.ClassTransient) {
		t.Fatalf("after attempts: %+v", rs[0])
	}
	if c := e.get("a", "current"); c.Version != 1 || !e.auth(v1) {
		t.Fatal("current must stay version 1")
	}
}

func TestVerifyFailureRollsBack(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected, Message: "login refused for $SECRET"})
	_, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	var re *rotation.RotationError
	if !errors.As(err, &re) || !re.RolledBack {
		t.Fatalf("want rolled back RotationError, got %v", err)
	}
	c := e.get("a", "current")
	if c.Version != 1 || !e.auth(v1) || e.tg.Accepted("a") != 1 {
		t.Fatalf("after rollback: current v%d, accepted %d", c.Version, e.tg.Accepted("a"))
	}
	if _, err := e.m.Get(context.Background(), "a", credential.GetOptions{Label: "pending"}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatal("pending label survived rollback")
	}
	// The pending secret never appears in errors, history or the journal.
	pend, _ := e.m.Get(context.Background(), "a", credential.GetOptions{Version: 2})
	hs, _ := e.m.History(context.Background(), "a", 10)
	rs, _ := e.m.Rotations(context.Background(), "a", false, 10)
	text := err.Error() + rs[0].LastError
	for _, h := range hs {
		text += h.Detail
	}
	if strings.Contains(text, pend.Secret["password"].Reveal()) || !strings.Contains(text, "[REDACTED]") {
		t.Fatalf("secret leaked or not scrubbed: %s", text)
	}
}

func TestRejectedSecretIsRegenerated(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.tg.FailNext("apply", rotatortest.Failure{Class: rotator.ClassRejected, Message: "password does not meet policy"})
	r, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.tg.Calls("stage") != 2 || r.Step != rotation.StepGrace {
		t.Fatalf("stage calls %d, step %s", e.tg.Calls("stage"), r.Step)
	}
	if c := e.get("a", "current"); !e.auth(c) {
		t.Fatal("regenerated secret does not authenticate")
	}
}

func TestRevertFailureNeedsAttention(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
	e.tg.FailNext("revert", rotatortest.Failure{Class: rotator.ClassPermission, Message: "permission denied"})
	_, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	if err == nil || !strings.Contains(err.Error(), "needs_attention") {
		t.Fatalf("want needs_attention, got %v", err)
	}
	c := e.get("a", "current")
	if c.State != credential.StateNeedsAttention || c.Version != 1 {
		t.Fatalf("state %s v%d", c.State, c.Version)
	}
	// Both versions stay stored.
	if _, err := e.m.Get(context.Background(), "a", credential.GetOptions{Version: 2}); err != nil {
		t.Fatal("pending version lost")
	}
	rs, _ := e.m.Rotations(context.Background(), "a", true, 1)
	_, recovery := rotation.Recovery(&rs[0])
	if !strings.Contains(recovery, "rotations resolve a --keep 1") {
		t.Fatalf("recovery steps: %q", recovery)
	}
	rep, err := e.m.Doctor(context.Background(), "a")
	if err != nil || rep.Healthy || !strings.Contains(rep.Findings[0].Title, "rollback failed") {
		t.Fatalf("doctor: %v %+v", err, rep)
	}
	// The engine leaves it alone; a person resolves it.
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, credential.ErrRotationInProgress) {
		t.Fatalf("rotate while needs_attention: %v", err)
	}
	if _, err := e.m.Engine().Resolve(context.Background(), "a", 1, false); err != nil {
		t.Fatal(err)
	}
	rep, _ = e.m.Doctor(context.Background(), "a")
	if !rep.Healthy {
		t.Fatalf("after resolve: %+v", rep.Findings)
	}
}

func TestAutoRollbackOffNeedsAttention(t *testing.T) {
	off := false
	e := newEnv(t, nil)
	e.put("a", &credential.Settings{AutoRollback: &off})
	e.tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err == nil {
		t.Fatal("want error")
	}
	if c := e.get("a", "current"); c.State != credential.StateNeedsAttention || c.Version != 1 {
		t.Fatalf("%s v%d", c.State, c.Version)
	}
	if _, err := e.m.Engine().Retry(context.Background(), "a", true); err == nil {
		t.Fatal("retry --rollback should report the rolled-back rotation")
	}
	if c := e.get("a", "current"); c.State != credential.StateActive || e.tg.Accepted("a") != 1 {
		t.Fatalf("after retry --rollback: %s accepted %d", c.State, e.tg.Accepted("a"))
	}
}

func TestNoValidateOmitsVerify(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{NoValidate: true}); err != nil {
		t.Fatal(err)
	}
	if e.tg.Calls("verify") != 0 {
		t.Fatal("verify called with --no-validate")
	}
}

func TestRollbackDuringGrace(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	v2 := e.get("a", "current")
	if _, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{Reason: "bad deploy"}); err != nil {
		t.Fatal(err)
	}
	c := e.get("a", "current")
	if c.Version != 1 || !e.auth(v1) || e.auth(v2) || c.State != credential.StateActive {
		t.Fatalf("after rollback: v%d %s v1ok=%v v2ok=%v", c.Version, c.State, e.auth(v1), e.auth(v2))
	}
	hs, _ := e.m.History(context.Background(), "a", 10)
	if hs[0].Action != "rollback" || hs[0].Reason != "bad deploy" || hs[0].FromVersion != 2 || hs[0].ToVersion != 1 {
		t.Fatalf("history: %+v", hs[0])
	}
	// After grace there is nothing to roll back to without re-applying.
	if _, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{}); !errors.Is(err, rotation.ErrGraceEnded) {
		t.Fatalf("want ErrGraceEnded, got %v", err)
	}
}

func TestRollbackToVersionAfterGrace(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	for range 2 {
		if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(0)}); err != nil {
			t.Fatal(err)
		}
	}
	if e.auth(v1) {
		t.Fatal("v1 should be retired")
	}
	r, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{ToVersion: 1})
	if err != nil || r.Kind != rotation.KindRestore {
		t.Fatalf("restore: %v %+v", err, r)
	}
	if c := e.get("a", "current"); c.Version != 1 || !e.auth(v1) {
		t.Fatalf("current v%d", c.Version)
	}
	e.clock.Advance(6 * time.Minute)
	e.tick()
	if e.tg.Accepted("a") != 1 {
		t.Fatalf("after restore grace: %d secrets accepted", e.tg.Accepted("a"))
	}
	if _, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{ToVersion: 99}); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestGraceExtendNeverShortens(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	r, _ := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	end := *r.GraceEndsAt
	if _, err := e.m.ExtendGrace(context.Background(), "a", -time.Minute); err == nil {
		t.Fatal("negative extension accepted")
	}
	r, err := e.m.ExtendGrace(context.Background(), "a", 10*time.Minute)
	if err != nil || !r.GraceEndsAt.Equal(end.Add(10*time.Minute)) {
		t.Fatalf("extend: %v %v", err, r.GraceEndsAt)
	}
	e.clock.Advance(6 * time.Minute)
	e.tick()
	if !e.auth(v1) {
		t.Fatal("retired at the old grace end")
	}
	e.clock.Advance(10 * time.Minute)
	e.tick()
	if e.auth(v1) {
		t.Fatal("not retired after the extended grace end")
	}
}

func TestOneRotationAtATime(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.tg.SetDelay(20 * time.Millisecond)
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		ok, blocked int
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, credential.ErrRotationInProgress):
				blocked++
			default:
				t.Errorf("unexpected: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || blocked != 15 {
		t.Fatalf("ok=%d blocked=%d", ok, blocked)
	}
	if e.get("a", "current").Version != 2 {
		t.Fatal("more than one rotation ran")
	}
}

func TestPutRefusedDuringRotation(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	_, err := e.m.Put(context.Background(), "a", credential.PutRequest{Type: fakeType, Fields: map[string]any{"host": "h", "username": "a"}, Secret: secret.Map{"password": secret.New("x-123456789")}})
	if !errors.Is(err, credential.ErrRotationInProgress) {
		t.Fatalf("put during grace: %v", err)
	}
}

func TestFencingStopsAStaleWriter(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	e.tg.FailNext("apply", rotatortest.Failure{Class: rotator.ClassTransient})
	r, _ := e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	stale := *r
	// Another process claims the rotation.
	err := e.m.Store().Update(context.Background(), func(tx store.Tx) error {
		_, err := tx.ClaimRotation(context.Background(), r.ID, "other", e.clock.Now().Add(time.Hour), e.clock.Now().Add(2*time.Hour))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	stale.Step = rotation.StepVerified
	err = e.m.Store().Update(context.Background(), func(tx store.Tx) error { return tx.UpdateRotation(context.Background(), &stale) })
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("stale write: %v", err)
	}
}

func TestPeriodicPolicySchedulesOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", &credential.Settings{Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(24 * time.Hour)}}})
	c := e.get("a", "current")
	if c.NextDueAt == nil || !c.NextDueAt.Equal(e.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("next due %v", c.NextDueAt)
	}
	e.clock.Advance(23 * time.Hour)
	e.tick()
	if e.get("a", "current").Version != 1 {
		t.Fatal("rotated early")
	}
	e.clock.Advance(time.Hour)
	e.reopen() // a restart neither misses nor duplicates
	e.tick()
	e.tick()
	if v := e.get("a", "current").Version; v != 2 {
		t.Fatalf("version %d after due, want exactly one rotation", v)
	}
	next := e.get("a", "current").NextDueAt
	if next == nil || !next.Equal(e.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("rescheduled to %v", next)
	}
	rs, _ := e.m.Rotations(context.Background(), "a", false, 10)
	if len(rs) != 1 || rs[0].Actor != "scheduler" {
		t.Fatalf("rotations: %d", len(rs))
	}
}

func TestRecoverAfterAbandonedRotation(t *testing.T) {
	// A process that dies leaves a row with a live lease; once the lease
	// expires, the next open resumes it.
	e := newEnv(t, func(c *credential.Config) { c.Engine.AfterStep = nil })
	e.put("a", nil)
	var stop bool
	e.m.Close()
	cfg := e.config(false)
	cfg.Engine.Owner = "elsewhere:1:x"
	cfg.Engine.AfterStep = func(_, step string) {
		if step == rotation.StepApplied {
			stop = true
			panic("simulated crash")
		}
	}
	m, err := credential.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		m.Rotate(context.Background(), "a", credential.RotateOptions{})
	}()
	if !stop {
		t.Fatal("crash hook not reached")
	}
	m.Close()
	e.open(false)
	if c := e.get("a", "current"); c.Version != 1 || c.State != credential.StateRotating {
		t.Fatalf("lease still live: v%d %s", c.Version, c.State)
	}
	e.clock.Advance(3 * time.Minute)
	e.reopen()
	c := e.get("a", "current")
	if c.Version != 2 || c.State != credential.StateGrace || !e.auth(c) {
		t.Fatalf("after recovery: v%d %s", c.Version, c.State)
	}
}

func TestNextDuePolicies(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	exp := t0.Add(100 * time.Hour)
	tests := []struct {
		name string
		pols []rotation.Policy
		in   rotation.DueInput
		want *time.Time
	}{
		{"manual", []rotation.Policy{{Kind: rotation.Manual}}, rotation.DueInput{LastRotatedAt: t0}, nil},
		{"periodic", []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(90 * 24 * time.Hour)}}, rotation.DueInput{LastRotatedAt: t0}, ptr(t0.Add(90 * 24 * time.Hour))},
		{"before expiry default 0.8", []rotation.Policy{{Kind: rotation.BeforeExpiry}}, rotation.DueInput{LastRotatedAt: t0, CreatedAt: t0, ExpiresAt: &exp}, ptr(t0.Add(80 * time.Hour))},
		{"before expiry min remaining", []rotation.Policy{{Kind: rotation.BeforeExpiry, Fraction: 0.9, MinRemaining: rotation.Duration(30 * time.Hour)}}, rotation.DueInput{LastRotatedAt: t0, CreatedAt: t0, ExpiresAt: &exp}, ptr(t0.Add(70 * time.Hour))},
		{"before expiry without expiry", []rotation.Policy{{Kind: rotation.BeforeExpiry}}, rotation.DueInput{LastRotatedAt: t0, CreatedAt: t0}, nil},
		{"cron", []rotation.Policy{{Kind: rotation.Scheduled, Cron: "0 3 * * *"}}, rotation.DueInput{LastRotatedAt: t0, Now: t0}, ptr(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC))},
		{"cron window missed", []rotation.Policy{{Kind: rotation.Scheduled, Cron: "0 3 * * *", Window: rotation.Duration(time.Hour)}}, rotation.DueInput{LastRotatedAt: t0, Now: time.Date(2026, 3, 2, 5, 0, 0, 0, time.UTC)}, ptr(time.Date(2026, 3, 3, 3, 0, 0, 0, time.UTC))},
		{"earliest wins", []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(90 * 24 * time.Hour)}, {Kind: rotation.BeforeExpiry}}, rotation.DueInput{LastRotatedAt: t0, CreatedAt: t0, ExpiresAt: &exp}, ptr(t0.Add(80 * time.Hour))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rotation.Settings{Policies: tt.pols}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			got := s.NextDue(tt.in)
			if (got == nil) != (tt.want == nil) || got != nil && !got.Equal(*tt.want) {
				t.Fatalf("got %v want %v", got, tt.want)
			}
		})
	}
}

func TestPeriodicJitterOnlyEarlier(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s := rotation.Settings{Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(90 * 24 * time.Hour), Jitter: rotation.Duration(48 * time.Hour)}}}
	due := t0.Add(90 * 24 * time.Hour)
	spread := map[time.Time]bool{}
	for i := range 200 {
		id := "cred/" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		got := *s.NextDue(rotation.DueInput{ID: id, LastRotatedAt: t0})
		if got.After(due) || got.Before(due.Add(-48*time.Hour)) {
			t.Fatalf("%s: %v outside [due-48h, due]", id, got)
		}
		again := *s.NextDue(rotation.DueInput{ID: id, LastRotatedAt: t0})
		if !again.Equal(got) {
			t.Fatal("jitter not deterministic across restarts")
		}
		spread[got] = true
	}
	if len(spread) < 100 {
		t.Fatalf("jitter spreads only %d distinct times", len(spread))
	}
}

func TestSettingsValidate(t *testing.T) {
	bad := []rotation.Settings{
		{Policies: []rotation.Policy{{Kind: "weekly"}}},
		{Policies: []rotation.Policy{{Kind: rotation.Periodic}}},
		{Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(time.Hour), Jitter: rotation.Duration(2 * time.Hour)}}},
		{Policies: []rotation.Policy{{Kind: rotation.Scheduled, Cron: "not a cron"}}},
		{Policies: []rotation.Policy{{Kind: rotation.BeforeExpiry, Fraction: 1.5}}},
		{Retention: -1},
	}
	for i, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%d: accepted %+v", i, s)
		}
	}
}

func ptr(t time.Time) *time.Time { return &t }

func TestScheduledPolicyWindow(t *testing.T) {
	e := newEnv(t, nil) // clock starts 2026-01-01 12:00 UTC
	e.put("a", &credential.Settings{Policies: []rotation.Policy{{Kind: rotation.Scheduled, Cron: "0 3 * * *", Window: rotation.Duration(time.Hour)}}})
	due := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	if c := e.get("a", "current"); c.NextDueAt == nil || !c.NextDueAt.Equal(due) {
		t.Fatalf("next due %v, want %v", c.NextDueAt, due)
	}
	// The scheduler was down through the whole window: the firing is skipped,
	// not run late, and the next one is planned.
	e.clock.Advance(17 * time.Hour) // 05:00, window ended at 04:00
	e.tick()
	c := e.get("a", "current")
	if c.Version != 1 || c.NextDueAt == nil || !c.NextDueAt.Equal(due.Add(24*time.Hour)) {
		t.Fatalf("missed window: v%d next %v", c.Version, c.NextDueAt)
	}
	// Inside the next window it runs.
	e.clock.Advance(22*time.Hour + 30*time.Minute) // 03:30 next day
	e.tick()
	if v := e.get("a", "current").Version; v != 2 {
		t.Fatalf("in window: version %d", v)
	}
}

func TestGraceWarningEvent(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	var got []rotation.Event
	var mu sync.Mutex
	e.m.Engine().Subscribe(func(ev rotation.Event) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Kind == rotation.EventGraceWarning {
			got = append(got, ev)
		}
	})
	e.m.Rotate(context.Background(), "a", credential.RotateOptions{})
	e.clock.Advance(3 * time.Minute)
	e.tick()
	e.clock.Advance(90 * time.Second) // 30 s before the end
	e.tick()
	e.tick()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Version != 1 {
		t.Fatalf("grace warnings: %+v", got)
	}
}

// Secrets never reach logs, errors, history, the journal or the audit log, even
// when the target echoes them in its error messages.
func TestNoSecretInLogsOrErrors(t *testing.T) {
	var logs testenv.Buffer
	e := newEnv(t, func(c *credential.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	e.put("a", nil)
	echo := "target says: password $SECRET rejected"
	var errs []string
	for _, step := range []string{"apply", "verify", "revert", "retire", "stage"} {
		e.tg.FailNext(step, rotatortest.Failure{Class: rotator.ClassTransient, Message: echo}, rotatortest.Failure{Class: rotator.ClassPermission, Message: echo})
		_, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(0)})
		if err != nil {
			errs = append(errs, err.Error())
		}
		e.clock.Advance(time.Hour)
		e.tick()
		if r, err := e.m.Engine().Retry(context.Background(), "a", true); err != nil && r != nil {
			errs = append(errs, err.Error())
		}
	}
	var all strings.Builder
	all.WriteString(logs.String())
	all.WriteString(strings.Join(errs, "\n"))
	hs, _ := e.m.History(context.Background(), "a", 100)
	for _, h := range hs {
		all.WriteString(h.Detail)
	}
	rs, _ := e.m.Rotations(context.Background(), "a", false, 100)
	for _, r := range rs {
		all.WriteString(r.LastError + string(r.Data))
	}
	recs, _ := audit.List(context.Background(), e.m.Store(), 0, 1000)
	for _, r := range recs {
		fmt.Fprintf(&all, "%+v", r)
	}
	vs, _ := e.m.Versions(context.Background(), "a")
	if len(vs) < 3 {
		t.Fatalf("only %d versions: the failures did not exercise enough", len(vs))
	}
	for _, v := range vs {
		c, err := e.m.Get(context.Background(), "a", credential.GetOptions{Version: v.Version})
		if err != nil {
			t.Fatal(err)
		}
		if pw := c.Secret["password"].Reveal(); strings.Contains(all.String(), pw) {
			t.Fatalf("version %d's secret leaked", v.Version)
		}
	}
	if !strings.Contains(all.String(), "[REDACTED]") {
		t.Fatal("expected the echoed secrets to show as [REDACTED]")
	}
}

// TestRetryDuringHealthyGraceRefused: `rotations retry` (with or without
// --rollback) on a rotation that did not fail and is in its grace period is
// refused with the commands that do end or undo it; it used to retire the
// old version at once and cut off the consumers still on it.
func TestRetryDuringHealthyGraceRefused(t *testing.T) {
	e := newEnv(t, nil)
	v1 := e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, rollback := range []bool{false, true} {
		_, err := e.m.Engine().Retry(context.Background(), "a", rollback)
		if !errors.Is(err, rotation.ErrWrongStep) || !strings.Contains(err.Error(), "nebula-credential grace end a") || !strings.Contains(err.Error(), "nebula-credential rollback a") {
			t.Fatalf("retry (rollback=%v) during grace: %v", rollback, err)
		}
		if !e.auth(v1) {
			t.Fatalf("retry (rollback=%v) retired the old version during grace", rollback)
		}
	}
	// After the grace period the scheduler retires it as before.
	e.clock.Advance(2 * time.Hour)
	e.tick()
	if e.auth(v1) {
		t.Fatal("old version still accepted after grace")
	}
}

// TestRollbackHints: a rollback with nothing in grace names the version to
// re-apply, which works when followed; an unknown credential is not found.
func TestRollbackHints(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(0)}); err != nil {
		t.Fatal(err)
	}
	e.tick()
	_, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{})
	if !errors.Is(err, rotation.ErrGraceEnded) || !strings.Contains(err.Error(), "`nebula-credential rollback a --to-version 1`") {
		t.Fatalf("rollback after grace: %v", err)
	}
	if _, err := e.m.Rollback(context.Background(), "a", credential.RollbackOptions{ToVersion: 1}); err != nil {
		t.Fatalf("the hint, followed: %v", err)
	}
	if c := e.get("a", "current"); !e.auth(c) {
		t.Fatalf("after re-apply: v%d does not authenticate", c.Version)
	}
	if _, err := e.m.Rollback(context.Background(), "nosuch", credential.RollbackOptions{}); !errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "to-version") {
		t.Fatalf("rollback of an unknown credential: %v", err)
	}
}
