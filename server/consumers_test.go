package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

func report(id string, cred string, version int, ok bool) credential.ConsumerReport {
	d := credential.ConsumerDelivery{ID: cred, Version: version, ActionOK: ok}
	if !ok {
		d.ActionError = "exit status 1"
	}
	return credential.ConsumerReport{ID: id, Name: "agent " + id, Host: "h", Kind: "agent", Credentials: []credential.ConsumerDelivery{d}}
}

// openGrace returns the open rotation of id if it is in grace, else nil.
func (e *env) openGrace(id string) *Rotation {
	e.t.Helper()
	var out struct {
		Rotations []Rotation `json:"rotations"`
	}
	r := e.must(200, "GET", "/v1/rotations?open=true&id="+id, e.admin, nil)
	if err := json.Unmarshal(r.body, &out); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range out.Rotations {
		if r.Step == rotation.StepGrace {
			return &r
		}
	}
	return nil
}

// waitRetired waits (under one generous deadline) for id to have no open
// rotation and returns when the retire entry says it happened.
func (e *env) waitRetired(id string, version int) time.Time {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		hs, err := e.m.History(e.t.Context(), id, 20)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, h := range hs {
			if h.Action == "retire" && h.FromVersion == version {
				return h.At
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("version %d of %s was not retired", version, id)
	return time.Time{}
}

// TestEarlyRetirement: three agents serve one credential. The previous
// version is retired once all three confirmed the new one, never before; an
// agent whose action failed holds it back.
func TestEarlyRetirement(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		// No heartbeat times out during this test, however slow the machine.
		c.Consumers = ConsumerConfig{EarlyRetire: true, EarlyRetireMin: time.Millisecond, Timeout: time.Hour, CheckInterval: 20 * time.Millisecond}
	})
	id := "prod/app/key"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("s1"))
	agent := e.token("read:prod/app")
	for _, a := range []string{"a", "b", "c"} {
		e.must(200, "POST", "/v1/consumers", agent, report(a, id, 1, true))
	}
	e.must(200, "POST", "/v1/rotate/"+id, e.admin, map[string]any{"grace": "1h"})
	if e.openGrace(id) == nil {
		t.Fatal("rotation not in grace")
	}

	// Two of three confirmed, the third confirmed but its action failed:
	// grace holds (the check loop runs many times meanwhile).
	e.must(200, "POST", "/v1/consumers", agent, report("a", id, 2, true))
	e.must(200, "POST", "/v1/consumers", agent, report("b", id, 2, true))
	e.must(200, "POST", "/v1/consumers", agent, report("c", id, 2, false))
	e.waitChecks(10)
	if e.openGrace(id) == nil {
		t.Fatal("grace ended before every consumer confirmed")
	}
	var list struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}
	json.Unmarshal(e.must(200, "GET", "/v1/consumers?id="+id, agent, nil).body, &list)
	if len(list.Consumers) != 3 || list.Consumers[2].ActionOK || !list.Consumers[2].UpToDate || list.Consumers[2].CurrentVersion != 2 {
		t.Fatalf("consumers: %+v", list.Consumers)
	}
	metrics := string(e.must(200, "GET", "/metrics", e.admin, nil).body)
	if !strings.Contains(metrics, `nebula_credential_consumers_not_current{id="prod/app/key"} 1`) {
		t.Fatalf("metrics lack the consumer on a failed action:\n%s", grepLines(metrics, "consumers"))
	}

	last := time.Now()
	e.must(200, "POST", "/v1/consumers", agent, report("c", id, 2, true))
	retired := e.waitRetired(id, 1)
	if retired.Before(last.Add(-time.Second)) { // clocks are the same; allow rounding
		t.Fatalf("retired at %v, before the last confirmation at %v", retired, last)
	}
	t.Logf("previous version retired %v after the last confirmation", retired.Sub(last).Round(time.Millisecond))
}

// TestEarlyRetirementStoppedAgent: an agent that stops heartbeating holds
// retirement back until its heartbeat times out, while the live agents keep
// heartbeating (as real agents do).
func TestEarlyRetirementStoppedAgent(t *testing.T) {
	const timeout = 2 * time.Second
	e := newEnv(t, func(c *Config) {
		c.Consumers = ConsumerConfig{EarlyRetire: true, EarlyRetireMin: time.Millisecond, Timeout: timeout, CheckInterval: 20 * time.Millisecond}
	})
	id := "prod/app/key"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("s1"))
	agent := e.token("read:prod/app")
	e.must(200, "POST", "/v1/rotate/"+id, e.admin, map[string]any{"grace": "1h"})
	cLast := time.Now()
	e.must(200, "POST", "/v1/consumers", agent, report("c", id, 1, true)) // its last heartbeat

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a and b are alive and on version 2
		defer close(done)
		for {
			for _, a := range []string{"a", "b"} {
				if r := e.do("POST", "/v1/consumers", agent, report(a, id, 2, true)); r.status != 200 {
					t.Errorf("heartbeat of %s: %d %s", a, r.status, r.body)
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	retired := e.waitRetired(id, 1)
	close(stop)
	<-done
	if retired.Before(cLast.Add(timeout)) {
		t.Fatalf("retired at %v, before the stopped agent timed out at %v", retired, cLast.Add(timeout))
	}
	t.Logf("retired %v after the stopped agent's last heartbeat (timeout %v)", retired.Sub(cLast).Round(time.Millisecond), timeout)
	var list struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}
	json.Unmarshal(e.must(200, "GET", "/v1/consumers?id="+id, agent, nil).body, &list)
	for _, c := range list.Consumers {
		if c.ConsumerID == "c" && c.Live {
			t.Fatalf("stopped agent still live: %+v", c)
		}
	}
}

// TestEarlyRetirementOff: without the setting, confirmations change nothing.
// Without any consumer, grace is never ended early either.
func TestEarlyRetirementOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Consumers = ConsumerConfig{CheckInterval: 10 * time.Millisecond} })
	id := "prod/app/key"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("s1"))
	e.must(200, "POST", "/v1/rotate/"+id, e.admin, map[string]any{"grace": "1h"})
	e.must(200, "POST", "/v1/consumers", e.admin, report("a", id, 2, true))
	e.waitChecks(10)
	if e.openGrace(id) == nil {
		t.Fatal("grace ended early without the setting")
	}
}

// TestEarlyRetirementMinimum: grace lasts at least the minimum.
func TestEarlyRetirementMinimum(t *testing.T) {
	const minimum = 700 * time.Millisecond
	e := newEnv(t, func(c *Config) {
		c.Consumers = ConsumerConfig{EarlyRetire: true, EarlyRetireMin: minimum, CheckInterval: 20 * time.Millisecond}
	})
	id := "prod/app/key"
	e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("s1"))
	start := time.Now()
	e.must(200, "POST", "/v1/rotate/"+id, e.admin, map[string]any{"grace": "1h"})
	e.must(200, "POST", "/v1/consumers", e.admin, report("a", id, 2, true))
	retired := e.waitRetired(id, 1)
	if retired.Sub(start) < minimum {
		t.Fatalf("retired %v after the rotation started, before the minimum %v", retired.Sub(start), minimum)
	}
}

func TestConsumerReportAuthorization(t *testing.T) {
	e := newEnv(t)
	e.must(200, "PUT", "/v1/credentials/prod/a", e.admin, genericBody("s1"))
	e.must(200, "PUT", "/v1/credentials/dev/b", e.admin, genericBody("s2"))
	prod := e.token("read:prod")
	if r := e.do("POST", "/v1/consumers", prod, report("x", "dev/b", 1, true)); r.status != 403 {
		t.Fatalf("report on an ungranted credential: %d %s", r.status, r.body)
	}
	e.must(200, "POST", "/v1/consumers", prod, report("x", "prod/a", 1, true))
	e.must(200, "POST", "/v1/consumers", e.admin, report("y", "dev/b", 1, true))
	var list struct {
		Consumers []credential.ConsumerInfo `json:"consumers"`
	}
	json.Unmarshal(e.must(200, "GET", "/v1/consumers", prod, nil).body, &list)
	if len(list.Consumers) != 1 || list.Consumers[0].CredentialID != "prod/a" {
		t.Fatalf("a token saw consumers beyond its grants: %+v", list.Consumers)
	}
	if r := e.do("GET", "/v1/consumers?id=dev/b", prod, nil); r.status != 403 {
		t.Fatalf("GET consumers of an ungranted credential: %d", r.status)
	}
	for _, bad := range []any{
		map[string]any{"id": "", "credentials": []any{}},
		map[string]any{"id": "has space", "credentials": []any{}},
		map[string]any{"id": "x", "credentials": []any{map[string]any{"id": "prod/a", "version": -1}}},
		map[string]any{"id": "x", "credentials": []any{map[string]any{"id": "prod/a", "version": 1}, map[string]any{"id": "prod/a", "version": 1}}},
		map[string]any{"id": "x", "credentials": []any{}, "secret": "no"},
	} {
		if r := e.do("POST", "/v1/consumers", e.admin, bad); r.status != 400 {
			t.Errorf("%v: status %d, want 400: %s", bad, r.status, r.body)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(strings.Join(out, "\n"))
}

// waitChecks waits (under one generous deadline) until the consumer check
// loop has completed n more passes.
func (e *env) waitChecks(n int64) {
	e.t.Helper()
	want := e.srv.cons.passes.Load() + n
	deadline := time.Now().Add(2 * time.Minute)
	for e.srv.cons.passes.Load() < want {
		if time.Now().After(deadline) {
			e.t.Fatalf("the consumer check loop did not run %d times", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
