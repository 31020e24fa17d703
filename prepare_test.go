package credential_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
)

// preparingRotator is the fake target's rotator with a Prepare
// (rotator.Preparer) that records what it was given, and an Apply that
// records the ApplyRequest.Prepared it got.
type preparingRotator struct {
	rotator.Rotator
	mu       sync.Mutex
	prepared []rotator.Credential
	applied  []any
	panics   bool // Prepare panics
}

type preparedValue struct{ version int }

func (p *preparingRotator) Prepare(pending rotator.Credential) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prepared = append(p.prepared, pending)
	if p.panics {
		panic("prepare failed")
	}
	return &preparedValue{pending.Version}
}

func (p *preparingRotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	p.mu.Lock()
	p.applied = append(p.applied, req.Prepared)
	p.mu.Unlock()
	return p.Rotator.Apply(ctx, req)
}

// newPreparingEnv is newEnv with the fake target's rotator wrapped in a
// preparingRotator.
func newPreparingEnv(t *testing.T) (*env, *preparingRotator) {
	p := &preparingRotator{}
	e := newEnv(t, func(cfg *credential.Config) {
		fake, err := cfg.Rotators.Lookup(string(fakeType))
		if err != nil {
			t.Fatal(err)
		}
		p.Rotator = rotator.Unwrap(fake)
		reg := rotator.NewRegistry()
		reg.Register(string(fakeType), p)
		cfg.Rotators = reg
	})
	return e, p
}

// The pending secret a rotation generates is prepared once, and the first
// Apply gets exactly that preparation; a retried Apply gets none (it may run
// in another process, or after the secret was regenerated).
func TestPreparerFeedsFirstApply(t *testing.T) {
	e, p := newPreparingEnv(t)
	e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	cur := e.get("a", "current")
	if cur.Version != 2 || !e.auth(cur) {
		t.Fatalf("after rotate: v%d", cur.Version)
	}
	if len(p.prepared) != 1 || p.prepared[0].Version != 2 || !p.prepared[0].Secret.Equal(cur.Secret) {
		t.Fatalf("Prepare calls %d (want one, for the stored version 2 and its secret)", len(p.prepared))
	}
	if len(p.applied) != 1 {
		t.Fatalf("Apply calls %d, want 1", len(p.applied))
	}
	if pv, ok := p.applied[0].(*preparedValue); !ok || pv.version != 2 {
		t.Fatalf("first Apply got Prepared %#v, want Prepare's result for version 2", p.applied[0])
	}

	// A transient failure of the first Apply: the retry gets nothing.
	e.clock.Advance(48 * time.Hour)
	e.tick() // retire version 1
	e.tg.FailNext("apply", rotatortest.Failure{Class: rotator.ClassTransient})
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
		t.Fatalf("want retry scheduled, got %v", err)
	}
	e.clock.Advance(time.Second)
	e.tick()
	if c := e.get("a", "current"); c.Version != 3 || !e.auth(c) {
		t.Fatalf("after the retry: v%d", c.Version)
	}
	if len(p.applied) != 3 {
		t.Fatalf("Apply calls %d, want 3", len(p.applied))
	}
	if pv, ok := p.applied[1].(*preparedValue); !ok || pv.version != 3 {
		t.Fatalf("first Apply of version 3 got Prepared %#v", p.applied[1])
	}
	if p.applied[2] != nil {
		t.Fatalf("retried Apply got Prepared %#v, want nil", p.applied[2])
	}
}

// A Prepare that panics is only a lost head start: the rotation commits,
// and Apply gets no preparation.
func TestPreparerPanicLeavesTheWorkToApply(t *testing.T) {
	e, p := newPreparingEnv(t)
	p.panics = true
	e.put("a", nil)
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	if cur := e.get("a", "current"); cur.Version != 2 || !e.auth(cur) {
		t.Fatalf("after rotate: v%d", cur.Version)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.prepared) != 1 || len(p.applied) != 1 || p.applied[0] != nil {
		t.Fatalf("Prepare calls %d, Apply calls %d, first Prepared %#v: want 1, 1, nil", len(p.prepared), len(p.applied), p.applied)
	}
}
