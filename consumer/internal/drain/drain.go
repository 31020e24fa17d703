// Package drain is the state machine shared by the pool-swap consumers: it
// tags each connection with the credential version it logged in with, decides
// which connections may still be used, and drains old versions.
//
// A version is drained once it is not current and no connection on it is open
// or connecting. When a version stops being current its drain starts; when the
// drain timeout passes, every connection still open on it is force-closed.
// Moving current back to a draining version (a rollback) cancels its drain.
//
// Which version is current: SetCurrent is authoritative (call it after reading
// the Source in reaction to a change); Observe is a hint from a connect that
// read the Source, and only ever moves current forward to a version never seen
// before (versions are allocated in increasing order, so an unseen version is
// newer). A connection whose version is not current is never handed out again:
// a connect that raced with a change yields a connection that is discarded at
// once, never a failed query.
package drain

import (
	"sync"
	"time"
)

// Result is one finished drain.
type Result struct {
	Version     int
	Started     time.Time
	Took        time.Duration
	ForceClosed int
}

// Config configures a Tracker. Drained may be nil.
type Config struct {
	// Timeout after which connections still open on a drained version are
	// force-closed. Must be positive.
	Timeout time.Duration
	// Drained is called (without locks held) when a version that is not
	// current has no connection open or connecting any more.
	Drained func(Result)
}

// Tracker tracks connections of type C. It is safe for concurrent use.
type Tracker[C comparable] struct {
	cfg Config

	mu      sync.Mutex
	stopped bool
	current int
	maxSeen int
	conns   map[C]*conn
	pending int         // connects that have not read their version yet
	open    map[int]int // version → open connections
	dialing map[int]int // version → connects under way
	drains  map[int]*drainState
}

type conn struct {
	version int
	closer  func()
}

type drainState struct {
	started time.Time
	timer   *time.Timer
	expired bool
	forced  int
}

// actions run after the lock is released: force-closes and callbacks.
type actions struct {
	closers []func()
	results []Result
}

func (t *Tracker[C]) run(a actions) {
	for _, f := range a.closers {
		f()
	}
	if t.cfg.Drained != nil {
		for _, r := range a.results {
			t.cfg.Drained(r)
		}
	}
}

// New returns a Tracker whose current version is current.
func New[C comparable](cfg Config, current int) *Tracker[C] {
	return &Tracker[C]{cfg: cfg, current: current, maxSeen: current,
		conns: map[C]*conn{}, open: map[int]int{}, dialing: map[int]int{}, drains: map[int]*drainState{}}
}

// Current returns the current version.
func (t *Tracker[C]) Current() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// SetCurrent makes v current: connections on any other version become
// unusable and their versions start draining (the previous current version
// finishes draining at once if it has no connection). Connections on v become
// usable again.
func (t *Tracker[C]) SetCurrent(v int) {
	t.mu.Lock()
	var a actions
	t.setCurrentLocked(v, &a)
	t.mu.Unlock()
	t.run(a)
}

func (t *Tracker[C]) setCurrentLocked(v int, a *actions) {
	if t.stopped || v == t.current {
		return
	}
	prev := t.current
	t.current = v
	t.maxSeen = max(t.maxSeen, v)
	if prev != 0 && t.drains[prev] == nil {
		t.startLocked(prev)
	}
	for ver := range t.drains {
		t.checkLocked(ver, a)
	}
}

// Observe tells the tracker a connect read version v from the Source. A
// version newer than any seen becomes current; anything else is ignored (a
// rollback is only taken from SetCurrent).
func (t *Tracker[C]) Observe(v int) {
	t.mu.Lock()
	var a actions
	if v > t.maxSeen {
		t.setCurrentLocked(v, &a)
	}
	t.mu.Unlock()
	t.run(a)
}

// Pending records a connect about to read its version from the Source: until
// release is called no drain finishes, so a version is never reported unused
// while a connect may still pick it. Call Connecting with the version read,
// then release.
func (t *Tracker[C]) Pending() (release func()) {
	t.mu.Lock()
	t.pending++
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			var a actions
			if t.pending--; t.pending == 0 {
				for v := range t.drains {
					t.checkLocked(v, &a)
				}
			}
			t.mu.Unlock()
			t.run(a)
		})
	}
}

// Connecting records a connect with version v under way. Call done exactly
// once with the new connection (and a function that closes it even while it
// is in use, or nil if it cannot be force-closed), or with ok false if the
// connect failed.
func (t *Tracker[C]) Connecting(v int) (done func(c C, closer func(), ok bool)) {
	t.mu.Lock()
	t.dialing[v]++
	if v != t.current && t.drains[v] == nil && !t.stopped {
		t.startLocked(v)
	}
	t.mu.Unlock()
	var once sync.Once
	return func(c C, closer func(), ok bool) {
		once.Do(func() {
			t.mu.Lock()
			var a actions
			if t.dialing[v]--; t.dialing[v] == 0 {
				delete(t.dialing, v)
			}
			if ok {
				t.openLocked(c, v, closer, &a)
			}
			t.checkLocked(v, &a)
			t.mu.Unlock()
			t.run(a)
		})
	}
}

// Open records connection c on version v (for connections made without
// Connecting).
func (t *Tracker[C]) Open(c C, v int, closer func()) {
	t.mu.Lock()
	var a actions
	t.openLocked(c, v, closer, &a)
	t.checkLocked(v, &a)
	t.mu.Unlock()
	t.run(a)
}

func (t *Tracker[C]) openLocked(c C, v int, closer func(), a *actions) {
	if _, ok := t.conns[c]; ok {
		return
	}
	if d := t.drains[v]; d != nil && d.expired && v != t.current {
		// Its drain already timed out: close it now, never track it.
		if closer != nil {
			a.closers = append(a.closers, closer)
		}
		d.forced++
		return
	}
	t.conns[c] = &conn{version: v, closer: closer}
	t.open[v]++
	if v != t.current && t.drains[v] == nil && !t.stopped {
		t.startLocked(v)
	}
}

// Usable reports whether c may be handed out: it is tracked and on the
// current version. Unknown (closed, force-closed) connections are not usable.
func (t *Tracker[C]) Usable(c C) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	cn, ok := t.conns[c]
	return ok && cn.version == t.current
}

// Version returns the version c logged in with.
func (t *Tracker[C]) Version(c C) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cn, ok := t.conns[c]
	if !ok {
		return 0, false
	}
	return cn.version, true
}

// Close records that c was closed. Closing an unknown connection is a no-op.
func (t *Tracker[C]) Close(c C) {
	t.mu.Lock()
	var a actions
	if cn, ok := t.conns[c]; ok {
		t.removeLocked(c, cn)
		t.checkLocked(cn.version, &a)
	}
	t.mu.Unlock()
	t.run(a)
}

func (t *Tracker[C]) removeLocked(c C, cn *conn) {
	delete(t.conns, c)
	if t.open[cn.version]--; t.open[cn.version] == 0 {
		delete(t.open, cn.version)
	}
}

// Stale returns the open connections that are not on the current version.
func (t *Tracker[C]) Stale() []C {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []C
	for c, cn := range t.conns {
		if cn.version != t.current {
			out = append(out, c)
		}
	}
	return out
}

// Stats returns the number of open connections per version.
func (t *Tracker[C]) Stats() map[int]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[int]int, len(t.open))
	for v, n := range t.open {
		out[v] = n
	}
	return out
}

// Draining returns the versions whose drain has not finished.
func (t *Tracker[C]) Draining() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.drains))
	for v := range t.drains {
		out = append(out, v)
	}
	return out
}

// Stop cancels every drain timer; later events call no callbacks and start no
// drains (use it before closing the pool itself).
func (t *Tracker[C]) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	for v, d := range t.drains {
		d.timer.Stop()
		delete(t.drains, v)
	}
}

func (t *Tracker[C]) startLocked(v int) {
	d := &drainState{started: time.Now()}
	d.timer = time.AfterFunc(t.cfg.Timeout, func() { t.expire(v, d) })
	t.drains[v] = d
}

// checkLocked cancels v's drain if v is current again, and finishes it if
// nothing is left on v.
func (t *Tracker[C]) checkLocked(v int, a *actions) {
	d := t.drains[v]
	if d == nil {
		return
	}
	if v == t.current {
		d.timer.Stop()
		delete(t.drains, v)
		return
	}
	if t.open[v] == 0 && t.dialing[v] == 0 && t.pending == 0 {
		d.timer.Stop()
		delete(t.drains, v)
		if !t.stopped {
			a.results = append(a.results, Result{Version: v, Started: d.started, Took: time.Since(d.started), ForceClosed: d.forced})
		}
	}
}

// expire force-closes every connection still open on v.
func (t *Tracker[C]) expire(v int, d *drainState) {
	t.mu.Lock()
	var a actions
	if t.stopped || t.drains[v] != d {
		t.mu.Unlock()
		return
	}
	d.expired = true
	for c, cn := range t.conns {
		if cn.version != v {
			continue
		}
		t.removeLocked(c, cn)
		d.forced++
		if cn.closer != nil {
			a.closers = append(a.closers, cn.closer)
		}
	}
	t.checkLocked(v, &a)
	t.mu.Unlock()
	t.run(a)
}
