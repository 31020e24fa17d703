package rotatortest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Target is a real, in-memory target system for engine tests: it keeps the set
// of secrets each user accepts, can fail any step on demand with any error
// class, can reject secrets, can be slow, and records logins. With a path, its
// state lives in a file (locked, written atomically) so several processes —
// including one that is SIGKILLed mid-rotation — share it.
type Target struct {
	mu   sync.Mutex
	path string
	mem  targetState
}

type targetState struct {
	// Accepted maps a username to the SHA-256 of each secret it accepts.
	Accepted map[string][]string `json:"accepted"`
	// Failures maps a step ("stage", "apply", "verify", "retire", "revert") to
	// queued failures.
	Failures map[string][]Failure `json:"failures"`
	// Calls counts calls per step.
	Calls map[string]int `json:"calls"`
	// Delay is added to every call.
	Delay time.Duration `json:"delay"`
	// Down makes every call fail as if the target were unreachable.
	Down bool `json:"down"`
}

// Failure is one queued failure.
type Failure struct {
	Class rotator.Class `json:"class"`
	// Message may contain the secret (to test that it is scrubbed); the token
	// "$SECRET" is replaced by the secret involved.
	Message string `json:"message"`
}

// NewTarget returns a target; path "" keeps state in memory only.
func NewTarget(path string) *Target {
	return &Target{path: path, mem: targetState{Accepted: map[string][]string{}, Failures: map[string][]Failure{}, Calls: map[string]int{}}}
}

func hashSecret(m secret.Map) string {
	b, _ := json.Marshal(m.Reveal())
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// update runs fn on the state under the (process and file) lock.
func (t *Target) update(fn func(s *targetState) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path == "" {
		return fn(&t.mem)
	}
	lock, err := os.OpenFile(t.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	s := targetState{Accepted: map[string][]string{}, Failures: map[string][]Failure{}, Calls: map[string]int{}}
	if b, err := os.ReadFile(t.path); err == nil {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	if err := fn(&s); err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	tmp := filepath.Join(filepath.Dir(t.path), fmt.Sprintf(".target-%d", os.Getpid()))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, t.path)
}

// AddUser makes user accept exactly the given secret.
func (t *Target) AddUser(user string, sec secret.Map) {
	t.update(func(s *targetState) error { s.Accepted[user] = []string{hashSecret(sec)}; return nil })
}

// Accept makes user accept sec as well as the secrets it accepts already (a
// change made on the target behind the rotator's back).
func (t *Target) Accept(user string, sec secret.Map) {
	t.update(func(s *targetState) error { s.Accepted[user] = append(s.Accepted[user], hashSecret(sec)); return nil })
}

// Authenticates reports whether the target accepts the credential now.
func (t *Target) Authenticates(c rotator.Credential) bool {
	ok := false
	t.update(func(s *targetState) error {
		ok = slices.Contains(s.Accepted[user(c)], hashSecret(c.Secret))
		return nil
	})
	return ok
}

// Accepted returns how many secrets user accepts.
func (t *Target) Accepted(user string) int {
	n := 0
	t.update(func(s *targetState) error { n = len(s.Accepted[user]); return nil })
	return n
}

// FailNext queues failures for the next calls of step.
func (t *Target) FailNext(step string, f ...Failure) {
	t.update(func(s *targetState) error { s.Failures[step] = append(s.Failures[step], f...); return nil })
}

// SetDown makes the target unreachable (or reachable again).
func (t *Target) SetDown(down bool) {
	t.update(func(s *targetState) error { s.Down = down; return nil })
}

// SetDelay slows every call.
func (t *Target) SetDelay(d time.Duration) {
	t.update(func(s *targetState) error { s.Delay = d; return nil })
}

// Calls returns how often step was called.
func (t *Target) Calls(step string) int {
	n := 0
	t.update(func(s *targetState) error { n = s.Calls[step]; return nil })
	return n
}

// Users lists the users with their accepted-secret counts (for debugging).
func (t *Target) Users() []string {
	var out []string
	t.update(func(s *targetState) error {
		for u, a := range s.Accepted {
			out = append(out, fmt.Sprintf("%s:%d", u, len(a)))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func user(c rotator.Credential) string {
	if u := c.String("username"); u != "" {
		return u
	}
	return c.ID
}

// Rotator returns a rotator for this target. It supports the dual and in-place
// strategies; the secret field is "password".
func (t *Target) Rotator() rotator.Rotator { return &fakeRotator{t: t} }

type fakeRotator struct{ t *Target }

var _ rotator.Rotator = (*fakeRotator)(nil)

func (f *fakeRotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{Strategies: []rotator.Strategy{rotator.Dual, rotator.InPlace}}
}

// call counts the call, sleeps the delay and pops a queued failure.
func (f *fakeRotator) call(ctx context.Context, step string, sec secret.Map, fn func(s *targetState) error) error {
	var (
		delay time.Duration
		fail  *Failure
		down  bool
	)
	f.t.update(func(s *targetState) error {
		s.Calls[step]++
		delay, down = s.Delay, s.Down
		if q := s.Failures[step]; len(q) > 0 {
			fail = &q[0]
			s.Failures[step] = q[1:]
		}
		return nil
	})
	if delay > 0 {
		select {
		case <-ctx.Done():
			return rotator.Wrap(rotator.ClassTransient, step, ctx.Err())
		case <-time.After(delay):
		}
	}
	if down { // nothing reached the target
		return rotator.NotReached(rotator.Errorf(rotator.ClassTransient, step, "dial tcp 127.0.0.1:1: connect: connection refused"))
	}
	if fail != nil {
		msg := fail.Message
		if msg == "" {
			msg = "injected failure"
		}
		for _, v := range sec {
			msg = replaceAll(msg, "$SECRET", v.Reveal())
		}
		return rotator.Errorf(fail.Class, step, "%s", msg)
	}
	if fn == nil {
		return nil
	}
	return f.t.update(fn)
}

func replaceAll(s, old, new string) string {
	out := ""
	for {
		i := indexOf(s, old)
		if i < 0 {
			return out + s
		}
		out += s[:i] + new
		s = s[i+len(old):]
	}
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func (f *fakeRotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	if err := f.call(ctx, "stage", nil, nil); err != nil {
		return rotator.StageResponse{}, err
	}
	pw, err := secret.PasswordPolicy{}.Generate()
	if err != nil {
		return rotator.StageResponse{}, err
	}
	return rotator.StageResponse{Secret: secret.Map{"password": pw}}, nil
}

func (f *fakeRotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	u, cur, pend := user(req.Pending), hashSecret(req.Current.Secret), hashSecret(req.Pending.Secret)
	err := f.call(ctx, "apply", req.Pending.Secret, func(s *targetState) error {
		acc := s.Accepted[u]
		if slices.Contains(acc, pend) {
			return nil
		}
		if req.Strategy == rotator.InPlace {
			acc = slices.DeleteFunc(acc, func(h string) bool { return h == cur })
		}
		s.Accepted[u] = append(acc, pend)
		return nil
	})
	return rotator.ApplyResponse{}, err
}

func (f *fakeRotator) Verify(ctx context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	if err := f.call(ctx, "verify", req.Credential.Secret, nil); err != nil {
		return rotator.VerifyResponse{}, err
	}
	if !f.t.Authenticates(req.Credential) {
		return rotator.VerifyResponse{}, rotator.Errorf(rotator.ClassRejected, "verify login", "password authentication failed for user %q", user(req.Credential))
	}
	return rotator.VerifyResponse{Detail: "logged in as " + user(req.Credential)}, nil
}

func (f *fakeRotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	u, old, cur := user(req.Old), hashSecret(req.Old.Secret), hashSecret(req.Current.Secret)
	err := f.call(ctx, "retire", req.Old.Secret, func(s *targetState) error {
		if old == cur {
			return nil
		}
		s.Accepted[u] = slices.DeleteFunc(s.Accepted[u], func(h string) bool { return h == old })
		return nil
	})
	return rotator.RetireResponse{}, err
}

func (f *fakeRotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	u, cur, pend := user(req.Current), hashSecret(req.Current.Secret), hashSecret(req.Pending.Secret)
	err := f.call(ctx, "revert", req.Pending.Secret, func(s *targetState) error {
		acc := slices.DeleteFunc(s.Accepted[u], func(h string) bool { return h == pend })
		if !slices.Contains(acc, cur) {
			acc = append(acc, cur)
		}
		s.Accepted[u] = acc
		return nil
	})
	return rotator.RevertResponse{}, err
}
