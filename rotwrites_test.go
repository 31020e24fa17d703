package credential_test

import (
	"context"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
)

// A validated rotation that succeeds writes the store twice: the plan (the
// pending version, durable before the target changes) and the commit, which
// also records the applied and verified steps (their audit entries stay).
func TestRotationWritesPlanAndCommitOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.put("a", nil)
	gs, ok := e.m.Store().(interface{ GroupStats() (int64, int64) })
	if !ok {
		t.Fatalf("the test store (%T) reports no group stats", e.m.Store())
	}
	_, before := gs.GroupStats()
	if _, err := e.m.Rotate(context.Background(), "a", credential.RotateOptions{Grace: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, after := gs.GroupStats(); after-before != 2 {
		t.Fatalf("a validated rotation made %d store writes, want 2 (plan, commit)", after-before)
	}
	recs, err := audit.List(context.Background(), e.m.Store(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Action] = true
	}
	for _, a := range []string{"rotate.planned", "rotate.staged", "rotate.applied", "rotate.verified", "rotate.committed", "rotate.grace"} {
		if !seen[a] {
			t.Errorf("audit has no %s entry (have %v)", a, seen)
		}
	}
}
