// Package dbrottest holds the test helpers that the database rotators' tests
// (rotator/postgres, rotator/mysql, rotator/redis) share: an in-memory
// Resolver, Ctx, Stage and Rotation, which drive a rotator the way the engine
// does; ApplyTwice, StageRefuses, Verifier and ViaProxy; Errors, which checks
// an error's class, its retryability and that it shows no secret, also when
// the server hangs or goes away; and Load, which rotates under
// testenv.Consumers and measures downtime. Each rotator's tests still create
// their own credentials on their own real server and make their own
// assertions about it.
package dbrottest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Resolver is an in-memory rotator.Resolver.
type Resolver map[string]rotator.Credential

// Resolve returns credential id, or a ClassConfig error if r has none.
func (r Resolver) Resolve(_ context.Context, id string) (rotator.Credential, error) {
	c, ok := r[id]
	if !ok {
		return rotator.Credential{}, rotator.Errorf(rotator.ClassConfig, "resolve", "no credential %q", id)
	}
	return c, nil
}

// Clone returns a copy of r that a test can change without changing r.
func (r Resolver) Clone() Resolver { return maps.Clone(r) }

// WithPassword returns a copy of r in which credential id has password pw.
func (r Resolver) WithPassword(id string, pw secret.Value) Resolver {
	r = r.Clone()
	c := r[id]
	c.Secret = secret.Map{"password": pw}
	r[id] = c
	return r
}

// ViaProxy points c (its Fields map is changed in place) and, in a copy of
// res, the admin credential adminID at p.
func ViaProxy(c rotator.Credential, res Resolver, adminID string, p *testenv.Proxy) (rotator.Credential, Resolver) {
	res = res.Clone()
	adm := res[adminID]
	adm.Fields = maps.Clone(adm.Fields)
	adm.Fields["host"], adm.Fields["port"] = p.Host, p.Port
	res[adminID] = adm
	c.Fields["host"], c.Fields["port"] = p.Host, p.Port
	return c, res
}

// Ctx returns a context that ends with the test, or after a minute.
func Ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// Stage runs rot.Stage for cur and returns the pending version: cur with its
// version bumped, Stage's fields over a copy of cur's, and Stage's secret.
func Stage(t testing.TB, rot rotator.Rotator, res rotator.Resolver, cur rotator.Credential, st rotator.Strategy) rotator.Credential {
	t.Helper()
	return stage(Ctx(t), t, rot, res, cur, st)
}

func stage(ctx context.Context, t testing.TB, rot rotator.Rotator, res rotator.Resolver, cur rotator.Credential, st rotator.Strategy) rotator.Credential {
	t.Helper()
	resp, err := rot.Stage(ctx, rotator.StageRequest{Current: cur, Strategy: st, Resolver: res})
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	p := cur
	p.Version++
	p.Fields = maps.Clone(cur.Fields)
	if p.Fields == nil {
		p.Fields = map[string]any{}
	}
	maps.Copy(p.Fields, resp.Fields)
	p.Secret = resp.Secret
	return p
}

// ApplyTwice applies req twice: the first Apply changes the target, the second
// changes nothing and says so (Skipped).
func ApplyTwice(t testing.TB, rot rotator.Rotator, req rotator.ApplyRequest) {
	t.Helper()
	if r, err := rot.Apply(Ctx(t), req); err != nil || r.Skipped {
		t.Fatalf("first apply: skipped %v, err %v", r.Skipped, err)
	}
	if r, err := rot.Apply(Ctx(t), req); err != nil || !r.Skipped {
		t.Fatalf("second apply: skipped %v, err %v", r.Skipped, err)
	}
}

// StageRefuses checks that Stage refuses each of cases with ClassConfig: a
// credential with base's fields overridden by the case's, staged for
// Alternating when the case sets strategy_users and for st otherwise.
func StageRefuses(t *testing.T, rot rotator.Rotator, base map[string]any, st rotator.Strategy, cases map[string]map[string]any) {
	t.Helper()
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			fields := maps.Clone(base)
			if fields == nil {
				fields = map[string]any{}
			}
			maps.Copy(fields, f)
			st := st
			if _, ok := f["strategy_users"]; ok {
				st = rotator.Alternating
			}
			_, err := rot.Stage(context.Background(), rotator.StageRequest{Current: rotator.Credential{Fields: fields}, Strategy: st})
			if rotator.ClassOf(err) != rotator.ClassConfig {
				t.Fatalf("err = %v, want ClassConfig", err)
			}
		})
	}
}

// Verifier returns a function that runs rot.Verify on one credential.
func Verifier(t testing.TB, rot rotator.Rotator, res rotator.Resolver) func(rotator.Credential) error {
	return func(c rotator.Credential) error {
		_, err := rot.Verify(Ctx(t), rotator.VerifyRequest{Credential: c, Resolver: res})
		return err
	}
}

// Rotation drives whole rotations through a rotator the way the engine does:
// Stage, Apply, Verify, Publish (the commit), Retire. Any failure is fatal.
type Rotation struct {
	Rotator  rotator.Rotator
	Resolver rotator.Resolver
	Strategy rotator.Strategy
	// Grace, when set, makes Apply's GraceEndsAt that long from now.
	Grace time.Duration
	// Publish, when set, is called with the new version after Verify.
	Publish func(rotator.Credential)
}

// Run rotates cur once and returns the new current version.
func (r Rotation) Run(t testing.TB, cur rotator.Credential) rotator.Credential {
	t.Helper()
	ctx := Ctx(t)
	pend := stage(ctx, t, r.Rotator, r.Resolver, cur, r.Strategy)
	r.apply(ctx, t, cur, pend)
	if _, err := r.Rotator.Retire(ctx, rotator.RetireRequest{Old: cur, Current: pend, Strategy: r.Strategy, Resolver: r.Resolver}); err != nil {
		t.Fatalf("retire: %v", err)
	}
	return pend
}

// applyRequest is the request to apply pend over cur.
func (r Rotation) applyRequest(cur, pend rotator.Credential) rotator.ApplyRequest {
	req := rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: r.Strategy, Resolver: r.Resolver}
	if r.Grace != 0 {
		req.GraceEndsAt = time.Now().Add(r.Grace)
	}
	return req
}

// apply applies and verifies pend, then publishes it.
func (r Rotation) apply(ctx context.Context, t testing.TB, cur, pend rotator.Credential) {
	t.Helper()
	if _, err := r.Rotator.Apply(ctx, r.applyRequest(cur, pend)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, err := r.Rotator.Verify(ctx, rotator.VerifyRequest{Credential: pend, Resolver: r.Resolver}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if r.Publish != nil {
		r.Publish(pend)
	}
}

// Errors checks the errors a rotator returns. None may show a secret, any of
// Derived(secret) (the hashes a rotator sends in a secret's place), or any of
// Markers (the prefix of a verifier).
type Errors struct {
	Derived func(p string) []string
	Markers []string
}

// NoLeak fails t if err shows a secret through any formatting.
func (e Errors) NoLeak(t testing.TB, err error, secrets ...secret.Value) {
	t.Helper()
	if err == nil {
		return
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, s := range secrets {
			p := s.Reveal()
			if p == "" {
				continue
			}
			forms := []string{p}
			if e.Derived != nil {
				forms = append(forms, e.Derived(p)...)
			}
			for _, f := range forms {
				if strings.Contains(text, f) {
					t.Fatalf("error leaks a secret: %s", text)
				}
			}
		}
		for _, m := range e.Markers {
			if strings.Contains(text, m) {
				t.Fatalf("error leaks %q: %s", m, text)
			}
		}
	}
}

// WantClass fails t unless err is of class want, is retryable exactly when
// want is ClassTransient, and shows no secret; then it logs err.
func (e Errors) WantClass(t testing.TB, what string, err error, want rotator.Class, secrets ...secret.Value) {
	t.Helper()
	if got := rotator.ClassOf(err); got != want {
		t.Fatalf("%s: class %q (err %v), want %q", what, got, err, want)
	}
	if rotator.Retryable(err) != (want == rotator.ClassTransient) {
		t.Fatalf("%s: Retryable = %v for class %q", what, rotator.Retryable(err), want)
	}
	e.NoLeak(t, err, secrets...)
	t.Logf("%s: %v", what, err)
}

// WrongPassword checks that good passes verify and that good with a wrong
// password is ClassRejected, with neither password in the error.
func (e Errors) WrongPassword(t testing.TB, verify func(rotator.Credential) error, good rotator.Credential) {
	t.Helper()
	if err := verify(good); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Secret = secret.Map{"password": secret.New("wrong-" + testenv.UniqueName(""))}
	e.WantClass(t, "wrong password", verify(bad), rotator.ClassRejected, bad.Secret["password"], good.Secret["password"])
}

// ServerHangs checks a rotator whose server accepts TCP and never answers
// (cur and res point at it): Verify, then Stage and Apply for st, fail with
// ClassTransient, all within limit.
func (e Errors) ServerHangs(t testing.TB, rot rotator.Rotator, res rotator.Resolver, cur rotator.Credential, st rotator.Strategy, limit time.Duration) {
	t.Helper()
	start := time.Now()
	_, err := rot.Verify(Ctx(t), rotator.VerifyRequest{Credential: cur, Resolver: res})
	e.WantClass(t, "verify", err, rotator.ClassTransient, cur.Secret["password"])
	NamesAddr(t, "verify", err, cur)
	pend := Stage(t, rot, res, cur, st)
	_, err = rot.Apply(Ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, Resolver: res})
	e.WantClass(t, "apply", err, rotator.ClassTransient, cur.Secret["password"], pend.Secret["password"])
	NamesAddr(t, "apply", err, cur)
	if d := time.Since(start); d > limit {
		t.Fatalf("timeouts took %v", d)
	}
}

// NamesAddr checks that err names the address (host:port) of c's server: an
// operator must see which target was away.
func NamesAddr(t testing.TB, what string, err error, c rotator.Credential) {
	t.Helper()
	addr := net.JoinHostPort(fmt.Sprint(c.Fields["host"]), fmt.Sprint(c.Fields["port"]))
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("%s: error %v does not name the server %s", what, err, addr)
	}
}

// ServerGone applies pend through r, then takes the server away (gone) and
// checks that every later step fails with ClassTransient, showing none of
// secrets: Verify, Apply again, Revert, and Retire when retire is set.
func (e Errors) ServerGone(t testing.TB, r Rotation, gone func(), cur, pend rotator.Credential, retire bool, secrets ...secret.Value) {
	t.Helper()
	apply := func() error {
		_, err := r.Rotator.Apply(Ctx(t), r.applyRequest(cur, pend))
		return err
	}
	if err := apply(); err != nil {
		t.Fatal(err)
	}
	gone()
	_, err := r.Rotator.Verify(Ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: r.Resolver})
	e.WantClass(t, "verify", err, rotator.ClassTransient, secrets...)
	NamesAddr(t, "verify", err, pend)
	e.WantClass(t, "apply again", apply(), rotator.ClassTransient, secrets...)
	_, err = r.Rotator.Revert(Ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: r.Strategy, Resolver: r.Resolver})
	e.WantClass(t, "revert", err, rotator.ClassTransient, secrets...)
	if retire {
		_, err = r.Rotator.Retire(Ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: r.Strategy, Resolver: r.Resolver})
		e.WantClass(t, "retire", err, rotator.ClassTransient, secrets...)
	}
}

// Load runs rotations while Consumers log in and query with the latest
// published version.
type Load struct {
	// Name starts the log line ("postgres alternating").
	Name      string
	Consumers *testenv.Consumers[rotator.Credential]
	Rotations int
	// Warmup is how long the load runs before the first rotation; the queries
	// it makes are the baseline.
	Warmup time.Duration
}

// ZeroDowntime rotates cur l.Rotations times through r (publishing each new
// version to the consumers) and fails t if a single login or query failed.
func (l Load) ZeroDowntime(t *testing.T, r Rotation, cur rotator.Credential) {
	t.Helper()
	load := l.Consumers
	load.Start(cur)
	defer load.Stop()
	time.Sleep(l.Warmup)
	before := load.Queries()
	baseline := float64(before) / l.Warmup.Seconds()
	r.Publish = load.Publish
	start := time.Now()
	for range l.Rotations {
		cur = r.Run(t, cur)
	}
	elapsed := time.Since(start)
	during := float64(load.Queries()-before) / elapsed.Seconds()
	load.Stop()
	if f := load.Failures(); len(f) != 0 {
		t.Fatalf("%d failures during rotation, first: %v", len(f), f[0].Err)
	}
	t.Logf("%s: %d rotations in %v (%.2f ms each); queries/s before %.0f, during %.0f; %d logins, 0 failed",
		l.Name, l.Rotations, elapsed.Round(time.Millisecond), float64(elapsed.Microseconds())/1000/float64(l.Rotations), baseline, during, load.Logins())
}

// FailureWindow measures a strategy that cannot be zero-downtime (in place):
// it stages, applies, verifies and publishes l.Rotations times, pause apart,
// and logs how long logins with the old password fail (Apply until Publish)
// and how many did. Open sessions must not fail: a failed query fails t.
func (l Load) FailureWindow(t *testing.T, r Rotation, cur rotator.Credential, pause time.Duration) {
	t.Helper()
	load := l.Consumers
	load.Start(cur)
	defer load.Stop()
	time.Sleep(l.Warmup)
	r.Publish = load.Publish
	var windows []time.Duration
	for range l.Rotations {
		ctx := Ctx(t)
		pend := stage(ctx, t, r.Rotator, r.Resolver, cur, r.Strategy)
		applied := time.Now()
		r.apply(ctx, t, cur, pend)
		windows = append(windows, time.Since(applied))
		cur = pend
		time.Sleep(pause)
	}
	load.Stop()
	var loginFail, queryFail int
	for _, f := range load.Failures() {
		if f.Login {
			loginFail++
		} else {
			queryFail++
		}
	}
	if queryFail != 0 {
		t.Fatalf("%d queries failed on open sessions", queryFail)
	}
	slices.Sort(windows)
	n := len(windows)
	t.Logf("%s: %d rotations; failure window (apply → publish) median %v, max %v; %d of %d logins failed, 0 queries failed",
		l.Name, n, windows[n/2].Round(10*time.Microsecond), windows[n-1].Round(10*time.Microsecond), loginFail, load.Logins())
}

// ServerFreezes applies pend through r, then freezes the server (freeze: a
// blackhole that holds every byte, also on connections already open, so a
// pooled admin connection hangs in the middle of its command) and checks
// that Verify, Apply again, Revert and (with retire) Retire each end within
// their call's deadline with ClassTransient, an error that names the
// server's address and the step, and none of secrets (issue 18).
func (e Errors) ServerFreezes(t testing.TB, r Rotation, freeze func(), cur, pend rotator.Credential, retire bool, secrets ...secret.Value) {
	t.Helper()
	if _, err := r.Rotator.Apply(Ctx(t), r.applyRequest(cur, pend)); err != nil {
		t.Fatal(err)
	}
	freeze()
	call := func(what string, c rotator.Credential, f func(ctx context.Context) error) {
		t.Helper()
		// The engine bounds every call (StepTimeout); 3 s stands for it.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := f(ctx)
		e.WantClass(t, what, err, rotator.ClassTransient, secrets...)
		NamesAddr(t, what, err, c)
		if !strings.Contains(err.Error(), what) {
			t.Fatalf("%s: error %v does not name the step", what, err)
		}
	}
	call("verify", pend, func(ctx context.Context) error {
		_, err := r.Rotator.Verify(ctx, rotator.VerifyRequest{Credential: pend, Resolver: r.Resolver})
		return err
	})
	call("apply", pend, func(ctx context.Context) error {
		_, err := r.Rotator.Apply(ctx, r.applyRequest(cur, pend))
		return err
	})
	call("revert", cur, func(ctx context.Context) error {
		_, err := r.Rotator.Revert(ctx, rotator.RevertRequest{Current: cur, Pending: pend, Strategy: r.Strategy, Resolver: r.Resolver})
		return err
	})
	if retire {
		call("retire", cur, func(ctx context.Context) error {
			_, err := r.Rotator.Retire(ctx, rotator.RetireRequest{Old: cur, Current: pend, Strategy: r.Strategy, Resolver: r.Resolver})
			return err
		})
	}
}
