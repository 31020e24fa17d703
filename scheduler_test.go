package credential_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Issue 18: the scheduler launched a rotation again on its next tick while
// the first goroutine still drove it; the second claim fenced the first, whose
// journal write was lost. With many rotations in retry at once and steps that
// outlast a tick, every retry is claimed exactly once and nothing is fenced.
func TestSchedulerNeverRacesItself(t *testing.T) {
	logs := &testenv.Buffer{}
	e := newEnv(t, func(c *credential.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Engine.TickInterval = time.Millisecond
		c.Engine.Concurrency = 8
	})
	const n = 24
	ctx := context.Background()
	fails := make([]rotatortest.Failure, n)
	for i := range fails {
		fails[i] = rotatortest.Failure{Class: rotator.ClassTransient}
	}
	for i := range n {
		e.put(fmt.Sprintf("c%02d", i), nil)
	}
	e.tg.FailNext("apply", fails...)
	for i := range n {
		if _, err := e.m.Rotate(ctx, fmt.Sprintf("c%02d", i), credential.RotateOptions{}); !errors.Is(err, rotation.ErrRetryScheduled) {
			t.Fatalf("c%02d: want a retry scheduled, got %v", i, err)
		}
	}
	// Every retry is due at once; each step now outlasts many ticks.
	e.tg.SetDelay(20 * time.Millisecond)
	e.clock.Advance(time.Minute)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.m.Engine().Run(rctx) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		open, err := e.m.Rotations(ctx, "", true, 100)
		if err != nil {
			t.Fatal(err)
		}
		inGrace := 0
		for _, r := range open {
			if r.Step == rotation.StepGrace {
				inGrace++
			}
		}
		if inGrace == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2m only %d of %d rotations reached grace", inGrace, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if strings.Contains(logs.String(), "fenced") {
		t.Fatalf("a journal write was fenced:\n%s", logs.String())
	}
	open, _ := e.m.Rotations(ctx, "", true, 100)
	for _, r := range open {
		// Fence 1 at plan, +1 for the one claim of its retry.
		if r.Fence != 2 {
			t.Errorf("rotation of %s claimed %d times, want once after plan", r.CredentialID, r.Fence-1)
		}
	}
}

// hungTarget accepts TCP connections and never answers (a frozen server). It
// reports the most connections it held open at once.
type hungTarget struct {
	ln         net.Listener
	mu         sync.Mutex
	open, peak int
	conns      []net.Conn
}

func newHungTarget(t *testing.T) *hungTarget {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungTarget{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.open++
			h.peak = max(h.peak, h.open)
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			go func() {
				_, _ = io.Copy(io.Discard, c) // until the client gives up
				h.mu.Lock()
				h.open--
				h.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
	})
	return h
}

func (h *hungTarget) Peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak
}

// Issue 18: a target that accepts connections but never answers holds at most
// its own slots of the scheduler (TargetConcurrency); rotations of another
// target keep going meanwhile.
func TestHungTargetHoldsOnlyItsOwnSlots(t *testing.T) {
	hung := newHungTarget(t)
	e := newEnv(t, func(c *credential.Config) {
		c.Rotators.Register(string(credential.Postgres), postgres.New(postgres.Config{}))
		c.Engine.TickInterval = time.Millisecond
		c.Engine.Concurrency = 4
		c.Engine.TargetConcurrency = 2
		c.Engine.ProbeTimeout = 10 * time.Minute // hold the slot as long as the test runs
		c.Engine.StepTimeout = 10 * time.Minute
	})
	ctx := context.Background()
	hourly := &credential.Settings{Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(time.Hour)}}}
	_, port, _ := net.SplitHostPort(hung.ln.Addr().String())
	for i := range 4 {
		pw, _ := secret.PasswordPolicy{}.Generate()
		if _, err := e.m.Put(ctx, fmt.Sprintf("hung%d", i), credential.PutRequest{Type: credential.Postgres,
			Fields: map[string]any{"host": "127.0.0.1", "port": port, "username": fmt.Sprintf("u%d", i), "database": "postgres", "sslmode": "disable"},
			Secret: secret.Map{"password": pw}, Settings: hourly}); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Minute) // the hung target's rotations fall due first
	for i := range 6 {
		e.put(fmt.Sprintf("ok%d", i), hourly)
	}
	e.clock.Advance(time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.m.Engine().Run(rctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < 6; {
		if c := e.get(fmt.Sprintf("ok%d", i), "current"); c.Version == 2 {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("ok%d did not rotate while another target hung (peak connections to the hung target: %d)", i, hung.Peak())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p := hung.Peak(); p > 2 {
		t.Fatalf("the hung target held %d scheduler slots, want at most 2", p)
	}
	if p := hung.Peak(); p == 0 {
		t.Fatal("nothing connected to the hung target: the test proves nothing")
	}
}
