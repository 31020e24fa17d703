// Package rotatortest is the conformance kit every Rotator runs against its
// target: a real server, or the in-memory Target in this package.
//
// A rotator's test builds a Harness and calls Run. The kit drives the protocol
// the engine uses (stage, apply, verify, retire, revert), calls each step twice to
// prove idempotency, and checks with the harness's independent Authenticates which
// secrets the target accepts after each step.
package rotatortest

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Harness connects the kit to one rotator and its target.
type Harness struct {
	Rotator rotator.Rotator
	// NewCredential returns a fresh, working credential (version 1) on the target,
	// independent of earlier calls, for one sub-test.
	NewCredential func(t *testing.T) rotator.Credential
	// Authenticates reports whether the target accepts c right now, checked
	// without the rotator (a fresh login with a driver, an HTTP call).
	Authenticates func(t *testing.T, c rotator.Credential) bool
	// Resolver, if the rotator needs other credentials (an admin login).
	Resolver rotator.Resolver
	// Strategies to test; default: all the rotator declares.
	Strategies []rotator.Strategy
	// OldValidAfterRetire is true for targets where retire cannot make the old
	// secret fail (a certificate stays valid until it expires).
	OldValidAfterRetire bool
	// NoRevertRejectsPending is true for strategies where revert cannot make the
	// target refuse the pending secret (a minted key already revoked elsewhere).
	NoRevertRejectsPending bool
}

// Run runs the conformance kit.
func Run(t *testing.T, h Harness) {
	strategies := h.Strategies
	if len(strategies) == 0 {
		strategies = h.Rotator.Capabilities().Strategies
	}
	if len(strategies) == 0 {
		t.Fatal("rotator declares no strategies")
	}
	for _, st := range strategies {
		t.Run(string(st), func(t *testing.T) {
			t.Run("FullRotation", func(t *testing.T) { fullRotation(t, h, st) })
			t.Run("RevertAfterApply", func(t *testing.T) { revertAfterApply(t, h, st) })
			t.Run("RevertBeforeApply", func(t *testing.T) { revertBeforeApply(t, h, st) })
			t.Run("VerifyRejectsWrongSecret", func(t *testing.T) { verifyWrong(t, h, st) })
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// Stage runs Stage and builds the pending credential as the engine does.
func Stage(t *testing.T, h Harness, cur rotator.Credential, st rotator.Strategy) rotator.Credential {
	t.Helper()
	resp, err := h.Rotator.Stage(ctx(t), rotator.StageRequest{Current: cur, Strategy: st, RotationID: time.Now().UnixNano(), Resolver: h.Resolver})
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	if len(resp.Secret) == 0 {
		t.Fatal("stage returned no secret")
	}
	if resp.Secret.Equal(cur.Secret) {
		t.Fatal("stage returned the current secret")
	}
	p := cur
	p.Version = cur.Version + 1
	p.Fields = maps.Clone(cur.Fields)
	if p.Fields == nil {
		p.Fields = map[string]any{}
	}
	maps.Copy(p.Fields, resp.Fields)
	p.Secret = resp.Secret
	p.ExpiresAt = resp.ExpiresAt
	return p
}

func mustAuth(t *testing.T, h Harness, c rotator.Credential, want bool, when string) {
	t.Helper()
	if got := h.Authenticates(t, c); got != want {
		t.Fatalf("%s: version %d authenticates = %v, want %v", when, c.Version, got, want)
	}
}

func fullRotation(t *testing.T, h Harness, st rotator.Strategy) {
	cur := h.NewCredential(t)
	mustAuth(t, h, cur, true, "fresh credential")
	pend := Stage(t, h, cur, st)
	for i := range 2 { // idempotent
		if _, err := h.Rotator.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, GraceEndsAt: time.Now().Add(time.Hour), Resolver: h.Resolver}); err != nil {
			t.Fatalf("apply #%d: %v", i+1, err)
		}
	}
	for i := range 2 {
		if _, err := h.Rotator.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: h.Resolver}); err != nil {
			t.Fatalf("verify #%d: %v", i+1, err)
		}
	}
	mustAuth(t, h, pend, true, "after apply")
	if st != rotator.InPlace {
		mustAuth(t, h, cur, true, "during grace (old)")
	}
	for i := range 2 {
		if _, err := h.Rotator.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: st, Resolver: h.Resolver}); err != nil {
			t.Fatalf("retire #%d: %v", i+1, err)
		}
	}
	mustAuth(t, h, pend, true, "after retire (new)")
	if !h.OldValidAfterRetire {
		mustAuth(t, h, cur, false, "after retire (old)")
	}
	// A second rotation from the new version works too (alternating swaps back).
	next := Stage(t, h, pend, st)
	if _, err := h.Rotator.Apply(ctx(t), rotator.ApplyRequest{Current: pend, Pending: next, Strategy: st, GraceEndsAt: time.Now().Add(time.Hour), Resolver: h.Resolver}); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	if _, err := h.Rotator.Verify(ctx(t), rotator.VerifyRequest{Credential: next, Resolver: h.Resolver}); err != nil {
		t.Fatalf("second verify: %v", err)
	}
	if _, err := h.Rotator.Retire(ctx(t), rotator.RetireRequest{Old: pend, Current: next, Strategy: st, Resolver: h.Resolver}); err != nil {
		t.Fatalf("second retire: %v", err)
	}
	mustAuth(t, h, next, true, "after second rotation")
}

func revertAfterApply(t *testing.T, h Harness, st rotator.Strategy) {
	cur := h.NewCredential(t)
	pend := Stage(t, h, cur, st)
	if _, err := h.Rotator.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, GraceEndsAt: time.Now().Add(time.Hour), Resolver: h.Resolver}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for i := range 2 {
		if _, err := h.Rotator.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: st, Resolver: h.Resolver}); err != nil {
			t.Fatalf("revert #%d: %v", i+1, err)
		}
	}
	mustAuth(t, h, cur, true, "after revert (current)")
	if !h.NoRevertRejectsPending {
		mustAuth(t, h, pend, false, "after revert (pending)")
	}
}

func revertBeforeApply(t *testing.T, h Harness, st rotator.Strategy) {
	cur := h.NewCredential(t)
	pend := Stage(t, h, cur, st)
	if _, err := h.Rotator.Revert(ctx(t), rotator.RevertRequest{Current: cur, Pending: pend, Strategy: st, Resolver: h.Resolver}); err != nil {
		t.Fatalf("revert of a never-applied secret: %v", err)
	}
	mustAuth(t, h, cur, true, "after revert without apply")
}

func verifyWrong(t *testing.T, h Harness, st rotator.Strategy) {
	cur := h.NewCredential(t)
	bad := cur
	bad.Secret = maps.Clone(cur.Secret)
	var planted []string
	for k := range bad.Secret {
		v := "wrong-" + secret.Token(12).Reveal()
		bad.Secret[k] = secret.New(v)
		planted = append(planted, v)
	}
	_, err := h.Rotator.Verify(ctx(t), rotator.VerifyRequest{Credential: bad, Resolver: h.Resolver})
	if err == nil {
		t.Fatal("verify accepted a wrong secret")
	}
	if rotator.Retryable(err) {
		t.Fatalf("a wrong secret must not be retryable: %v", err)
	}
	for _, p := range planted {
		if strings.Contains(err.Error(), p) {
			t.Fatalf("error leaks the secret: %v", err)
		}
	}
	mustAuth(t, h, cur, true, "after failed verify")
}
