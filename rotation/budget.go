package rotation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// The scheduler gives each target a budget of concurrent steps
// (Config.TargetConcurrency): a target that accepts connections but never
// answers holds at most its own slots, and rotations of every other target
// keep their cadence.

// targetOf names the target a credential's rotations talk to, from the
// non-secret fields of its current version: host[:port] for the database
// rotators, the host of token_url or directory_url, or the host of the first
// templated request URL (API keys). "" means no known target (no per-target
// budget, only the global one).
func targetOf(fields []byte) string {
	var f map[string]any
	if json.Unmarshal(fields, &f) != nil {
		return ""
	}
	if h, ok := f["host"].(string); ok && h != "" {
		if p, ok := f["port"]; ok && p != nil {
			return fmt.Sprintf("%s:%v", strings.ToLower(h), p)
		}
		return strings.ToLower(h)
	}
	for _, k := range []string{"token_url", "directory_url", "url"} {
		if h := urlHost(f[k]); h != "" {
			return h
		}
	}
	for _, k := range []string{"verify", "set", "create", "revoke"} {
		if m, ok := f[k].(map[string]any); ok {
			if h := urlHost(m["url"]); h != "" {
				return h
			}
		}
	}
	return ""
}

func urlHost(v any) string {
	s, ok := v.(string)
	if !ok || s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// targets returns the target of each credential in ids (see targetOf).
func (e *Engine) targets(ctx context.Context, ids []string) map[string]string {
	out := make(map[string]string, len(ids))
	if e.cfg.TargetConcurrency >= e.cfg.Concurrency {
		return out // the per-target budget cannot bind
	}
	_ = e.st.View(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			if _, done := out[id]; done {
				continue
			}
			labels, err := tx.Labels(ctx, id)
			if err != nil {
				continue
			}
			v, err := tx.GetVersion(ctx, id, labels["current"])
			if err != nil {
				continue
			}
			out[id] = targetOf(v.Fields)
		}
		return nil
	})
	return out
}

// acquire marks credential id as driven by this process. It reports false
// when it already is. The check and the mark happen under one lock, so two
// scheduler ticks (or a tick and Recover) never both drive one rotation.
func (e *Engine) acquire(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight[id] {
		return false
	}
	e.inflight[id] = true
	return true
}

// acquireWait is acquire that waits, until ctx ends, for a holder that is
// finishing.
func (e *Engine) acquireWait(ctx context.Context, id string) error {
	wait := time.Millisecond
	for !e.acquire(id) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: still being finished by this process: %w", store.ErrRotationInProgress, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
	return nil
}

// release undoes acquire.
func (e *Engine) release(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.inflight, id)
}

// targetSlot waits for one of target's Config.TargetConcurrency slots and
// returns its release. The scheduler takes it before a global slot, so work
// queued behind a hung target holds no global slot. target "" has no budget.
func (e *Engine) targetSlot(ctx context.Context, target string) (func(), bool) {
	if target == "" {
		return func() {}, true
	}
	e.mu.Lock()
	sem, ok := e.targetSem[target]
	if !ok {
		sem = make(chan struct{}, e.cfg.TargetConcurrency)
		e.targetSem[target] = sem
	}
	e.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, true
	case <-ctx.Done():
		return nil, false
	case <-e.closed:
		return nil, false
	}
}

// DefaultTransientBudget is how long transient failures of one step are
// retried by default (Backoff.Budget).
const DefaultTransientBudget = 30 * time.Minute

// TransientBudget returns how long transient failures of one step are retried:
// Budget (default 30m), never less than grace.
func (b Backoff) TransientBudget(grace time.Duration) time.Duration {
	return b.transientBudget(DefaultTransientBudget, grace)
}

// transientBudget is TransientBudget with def for an unset Budget.
func (b Backoff) transientBudget(def, grace time.Duration) time.Duration {
	d := def
	if b.Budget > 0 {
		d = time.Duration(b.Budget)
	}
	return max(d, grace)
}

// retryUntil decides whether a transient failure of j's current step is
// retried. It starts the step's budget at its first transient failure and
// returns when the budget ends, and false once it has (or once Attempts, when
// set, are used up).
func (e *Engine) retryUntil(j *job, now time.Time) (time.Time, bool) {
	if j.d.TransientSince == nil {
		t := now
		j.d.TransientSince = &t
	}
	grace := time.Duration(j.d.GraceSeconds * float64(time.Second))
	end := j.d.TransientSince.Add(j.settings.Backoff.transientBudget(e.cfg.TransientBudget, grace))
	if n := j.settings.Backoff.Attempts; n > 0 && j.r.Attempt+1 >= n {
		return end, false
	}
	return end, now.Before(end)
}

// nothingApplied reports whether every apply of the rotation failed before it
// changed the target: there is nothing to revert.
func (d data) nothingApplied() bool { return d.ApplyNotReached && !d.ApplyReached }

// noteApply records whether an apply that returned err may have reached the
// target.
func (d *data) noteApply(err error) {
	if err != nil && rotator.BeforeChange(err) {
		d.ApplyNotReached = true
	} else {
		d.ApplyReached = true
	}
}
