package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/server"
)

// TestEarlyRetireThroughThreeAgents: three agents serve one credential on a
// server with early retirement. Grace ends only once all three confirmed
// the new version, and soon after the last; a stopped agent holds it back
// until its heartbeat times out.
func TestEarlyRetireThroughThreeAgents(t *testing.T) {
	const timeout = 3 * time.Second
	s := newSrv(t, server.ConsumerConfig{EarlyRetire: true, EarlyRetireMin: -1, CheckInterval: 20 * time.Millisecond, Timeout: timeout})
	s.put(t, "app/x", "early-secret-0")
	var agents []*started
	for i := range 3 {
		dir := t.TempDir()
		cfg := loadCfg(t, dir, fmt.Sprintf(`
name: agent-%d
servers: [%s]
templates:
  - contents: '{{ secret "app/x" "password" }}'
    destination: pw
`, i, s.ts.URL))
		st := startAgent(t, cfg, s.token)
		st.waitVersion(t, "app/x", 1)
		agents = append(agents, st)
	}
	ctx := context.Background()
	grace := 10 * time.Minute
	open := func() bool {
		rs, err := s.m.Rotations(ctx, "app/x", true, 1)
		if err != nil {
			t.Fatal(err)
		}
		return len(rs) > 0
	}
	confirmed := func(v int) int {
		cs, err := server.ListConsumers(ctx, s.m.Store(), "app/x", time.Now(), timeout, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range cs {
			if c.Version >= v && c.ActionOK {
				n++
			}
		}
		return n
	}
	// all three live: grace ends after the third confirmed, and soon after
	if _, err := s.m.Rotate(ctx, "app/x", credential.RotateOptions{Grace: &grace}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	var lastConfirmed time.Time
	for open() {
		if n := confirmed(2); n == 3 && lastConfirmed.IsZero() {
			lastConfirmed = time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("grace never ended early; %d confirmed", confirmed(2))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// confirmations only grow: fewer than 3 now means fewer at the end
	if n := confirmed(2); n != 3 {
		t.Fatalf("grace ended with %d of 3 agents confirmed", n)
	}
	if !lastConfirmed.IsZero() {
		t.Logf("grace ended %v after the last confirmation was seen", time.Since(lastConfirmed))
	}

	// one agent stops: it holds grace back until its heartbeat times out
	agents[2].stop(t)
	if _, err := s.m.Rotate(ctx, "app/x", credential.RotateOptions{Grace: &grace}); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	agents[0].waitVersion(t, "app/x", 3)
	agents[1].waitVersion(t, "app/x", 3)
	for open() {
		if time.Now().After(deadline.Add(time.Minute)) {
			t.Fatal("grace never ended after the stopped agent timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held := time.Since(rotated); held < timeout/2 {
		t.Errorf("grace ended %v after the rotation, before the stopped agent could time out (%v)", held, timeout)
	}
	if n := confirmed(3); n != 2 {
		t.Errorf("%d agents on version 3, want 2", n)
	}
}
