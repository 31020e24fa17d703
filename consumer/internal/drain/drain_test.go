package drain

import (
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

type fakeConn struct{ id int }

type recorder struct {
	mu      sync.Mutex
	results []Result
}

func (r *recorder) drained(res Result) {
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
}

func (r *recorder) versions() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, res := range r.results {
		out = append(out, res.Version)
	}
	return out
}

func (r *recorder) get(v int) (Result, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.results {
		if res.Version == v {
			return res, true
		}
	}
	return Result{}, false
}

func newTracker(timeout time.Duration, current int) (*Tracker[*fakeConn], *recorder) {
	rec := &recorder{}
	return New[*fakeConn](Config{Timeout: timeout, Drained: rec.drained}, current), rec
}

func TestDrainOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Minute, 1)
		a, b, c := &fakeConn{1}, &fakeConn{2}, &fakeConn{3}
		for _, x := range []*fakeConn{a, b, c} {
			tr.Open(x, 1, nil)
		}
		if !tr.Usable(a) {
			t.Fatal("conn on current version not usable")
		}
		tr.SetCurrent(2)
		if tr.Usable(a) || tr.Usable(b) {
			t.Fatal("conn on old version still usable")
		}
		if got := tr.Stats(); !maps.Equal(got, map[int]int{1: 3}) {
			t.Fatalf("stats %v", got)
		}
		d := &fakeConn{4}
		tr.Open(d, 2, nil)
		if !tr.Usable(d) {
			t.Fatal("new conn not usable")
		}
		time.Sleep(10 * time.Second)
		tr.Close(a)
		tr.Close(b)
		if len(rec.versions()) != 0 {
			t.Fatalf("drained too early: %v", rec.versions())
		}
		tr.Close(c)
		res, ok := rec.get(1)
		if !ok || res.ForceClosed != 0 || res.Took != 10*time.Second {
			t.Fatalf("drain result %+v %v", res, ok)
		}
		if got := tr.Stats(); !maps.Equal(got, map[int]int{2: 1}) {
			t.Fatalf("stats %v", got)
		}
		if len(tr.Draining()) != 0 {
			t.Fatalf("still draining %v", tr.Draining())
		}
	})
}

func TestForceCloseAfterTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(5*time.Minute, 1)
		busy := &fakeConn{1}
		var closed atomic.Int32
		tr.Open(busy, 1, func() { closed.Add(1) })
		tr.SetCurrent(2)
		time.Sleep(5*time.Minute - time.Nanosecond)
		synctest.Wait()
		if closed.Load() != 0 || len(rec.versions()) != 0 {
			t.Fatal("force-closed before the timeout")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if closed.Load() != 1 {
			t.Fatalf("closer called %d times", closed.Load())
		}
		res, ok := rec.get(1)
		if !ok || res.ForceClosed != 1 || res.Took != 5*time.Minute {
			t.Fatalf("drain result %+v %v", res, ok)
		}
		if tr.Usable(busy) {
			t.Fatal("force-closed conn usable")
		}
		tr.Close(busy) // the pool's own close later: no-op
		if len(rec.versions()) != 1 || len(tr.Stats()) != 0 {
			t.Fatalf("results %v stats %v", rec.versions(), tr.Stats())
		}
	})
}

func TestPreviousWithoutConnsDrainsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Minute, 3)
		tr.SetCurrent(4)
		if res, ok := rec.get(3); !ok || res.Took != 0 {
			t.Fatalf("version 3 not drained at once: %+v %v", res, ok)
		}
	})
}

func TestRollbackCancelsDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Minute, 1)
		a := &fakeConn{1}
		closed := false
		tr.Open(a, 1, func() { closed = true })
		tr.SetCurrent(2)
		b := &fakeConn{2}
		tr.Open(b, 2, nil)
		tr.SetCurrent(1) // rolled back
		if !tr.Usable(a) || tr.Usable(b) {
			t.Fatal("after rollback the old conn must be usable and the new one not")
		}
		tr.Close(b)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if closed {
			t.Fatal("conn on the restored version was force-closed")
		}
		if got := rec.versions(); !slices.Equal(got, []int{2}) {
			t.Fatalf("drained %v, want [2]", got)
		}
	})
}

func TestObserveOnlyMovesForward(t *testing.T) {
	tr, _ := newTracker(time.Minute, 5)
	tr.Observe(4)
	if tr.Current() != 5 {
		t.Fatal("Observe moved current back")
	}
	tr.Observe(6)
	if tr.Current() != 6 {
		t.Fatal("Observe of a new version did not move current")
	}
	tr.SetCurrent(5) // rollback is authoritative
	tr.Observe(6)    // a stale read of 6 after the rollback
	if tr.Current() != 5 {
		t.Fatal("Observe of an already seen version moved current")
	}
	tr.Stop()
}

func TestConnectRacingAChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Minute, 1)
		done := tr.Connecting(1) // read version 1, dialing
		tr.SetCurrent(2)
		if len(rec.versions()) != 0 {
			t.Fatal("version 1 drained while a connect with it is under way")
		}
		c := &fakeConn{1}
		done(c, nil, true)
		if tr.Usable(c) {
			t.Fatal("conn born on an old version is usable")
		}
		tr.Close(c)
		if got := rec.versions(); !slices.Equal(got, []int{1}) {
			t.Fatalf("drained %v", got)
		}

		// A failed connect also ends the wait.
		done = tr.Connecting(2)
		tr.SetCurrent(3)
		done(nil, nil, false)
		if got := rec.versions(); !slices.Equal(got, []int{1, 2}) {
			t.Fatalf("drained %v", got)
		}
	})
}

// A connect that has not read its version yet holds back every drain: the
// version it reads may be the old one.
func TestPendingHoldsDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Minute, 1)
		release := tr.Pending()
		tr.SetCurrent(2)
		if len(rec.versions()) != 0 {
			t.Fatal("drained while a connect may still read version 1")
		}
		done := tr.Connecting(1) // it read the old version
		release()
		if len(rec.versions()) != 0 {
			t.Fatal("drained while a connect with version 1 is under way")
		}
		done(nil, nil, false)
		if got := rec.versions(); !slices.Equal(got, []int{1}) {
			t.Fatalf("drained %v", got)
		}
		release() // idempotent
	})
}

func TestConnectFinishingAfterTimeoutIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Second, 1)
		done := tr.Connecting(1)
		tr.SetCurrent(2)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		closed := false
		c := &fakeConn{1}
		done(c, func() { closed = true }, true)
		if !closed || tr.Usable(c) {
			t.Fatal("late conn on an expired version not force-closed")
		}
		res, ok := rec.get(1)
		if !ok || res.ForceClosed != 1 {
			t.Fatalf("drain result %+v %v", res, ok)
		}
	})
}

func TestStopSilences(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := newTracker(time.Second, 1)
		c := &fakeConn{1}
		closed := false
		tr.Open(c, 1, func() { closed = true })
		tr.SetCurrent(2)
		tr.Stop()
		time.Sleep(time.Minute)
		tr.Close(c)
		if closed || len(rec.versions()) != 0 {
			t.Fatal("callbacks after Stop")
		}
	})
}

// Many goroutines open, use and close connections while current moves back
// and forth; at the end every version but current is drained and nothing
// usable is on an old version.
func TestConcurrent(t *testing.T) {
	tr, rec := newTracker(50*time.Millisecond, 1)
	var (
		wg        sync.WaitGroup
		stop      atomic.Bool
		misuse    atomic.Int64
		nextID    atomic.Int64
		maxVerSet atomic.Int64
	)
	maxVerSet.Store(1)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				release := tr.Pending()
				v := tr.Current()
				done := tr.Connecting(v)
				release()
				c := &fakeConn{int(nextID.Add(1))}
				var dead atomic.Bool
				done(c, func() { dead.Store(true) }, true)
				for range rand.IntN(5) {
					if tr.Usable(c) {
						if ver, ok := tr.Version(c); ok && ver != tr.Current() && ver != v {
							misuse.Add(1)
						}
					}
				}
				tr.Close(c)
			}
		})
	}
	for i := range 100 {
		if i%7 == 6 {
			tr.SetCurrent(tr.Current() - 1) // rollback
		} else {
			tr.SetCurrent(int(maxVerSet.Add(1)))
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	}
	stop.Store(true)
	wg.Wait()
	if misuse.Load() != 0 {
		t.Fatalf("%d uses of a conn on the wrong version", misuse.Load())
	}
	if s := tr.Stats(); len(s) != 0 {
		t.Fatalf("open after all closed: %v", s)
	}
	if d := tr.Draining(); len(d) != 0 {
		t.Fatalf("still draining: %v", d)
	}
	if len(rec.versions()) == 0 {
		t.Fatal("no drain reported")
	}
}
