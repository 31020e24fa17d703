package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// hub wakes watch streams when the store's events table grows. One poller
// runs while at least one stream is open: it polls the table every
// WatchPollInterval and also right after an engine event, and broadcasts by
// closing the current wake channel. Each stream reads the events itself from
// its own cursor, so a slow stream delays nobody.
type hub struct {
	s *Server

	mu       sync.Mutex
	watchers int
	wake     chan struct{}
	cancel   context.CancelFunc
	last     int64 // highest seq seen by the poller
	kick     chan struct{}
	// beforeFirstLook, if set (tests only), runs when a poller starts,
	// before it looks at the store.
	beforeFirstLook func()
}

func newHub(s *Server) *hub {
	return &hub{s: s, wake: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// join registers a stream; leave must be called when it ends.
func (h *hub) join() (leave func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers++
	if h.watchers == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		unsub := h.s.m.Engine().Subscribe(func(rotation.Event) {
			select {
			case h.kick <- struct{}{}:
			default:
			}
		})
		hook := h.beforeFirstLook
		go func() {
			defer unsub()
			if hook != nil {
				hook()
			}
			h.poll(ctx)
		}()
	}
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.watchers--
		if h.watchers == 0 {
			h.cancel()
		}
	}
}

// waitCh returns the channel closed at the next broadcast. Take it before
// reading the store, so that no event committed after the read is missed.
func (h *hub) waitCh() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wake
}

func (h *hub) broadcast() {
	h.mu.Lock()
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
}

func (h *hub) poll(ctx context.Context) {
	t := time.NewTicker(h.s.cfg.WatchPollInterval)
	defer t.Stop()
	h.mu.Lock()
	last := h.last
	h.mu.Unlock()
	if last == 0 {
		if n, err := latestSeq(ctx, h.s.m.Store()); err == nil {
			last = n
		}
		// The stream that started this poller chose its starting point
		// before this look: an event committed in between is already below
		// last, so the loop below will not announce it. Wake the streams
		// once; each reads from its own cursor.
		h.broadcast()
	}
	for {
		var evs []store.Event
		err := h.s.m.Store().View(ctx, func(tx store.Tx) error {
			var err error
			evs, err = tx.ListEvents(ctx, last, 1000)
			return err
		})
		if err == nil && len(evs) > 0 {
			last = evs[len(evs)-1].Seq
			h.mu.Lock()
			h.last = last
			h.mu.Unlock()
			h.broadcast()
			if len(evs) == 1000 {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.kick:
		}
	}
}

// latestSeq finds the highest event sequence number with O(log n) indexed
// probes ("is there an event after x?"), since the store has no "last event".
func latestSeq(ctx context.Context, st store.Store) (int64, error) {
	exists := func(after int64) (bool, error) {
		var evs []store.Event
		err := st.View(ctx, func(tx store.Tx) error {
			var err error
			evs, err = tx.ListEvents(ctx, after, 1)
			return err
		})
		return len(evs) > 0, err
	}
	lo, hi := int64(0), int64(1) // invariant: an event exists after lo (or lo == 0), none after hi
	for {
		ok, err := exists(hi - 1)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
		if hi > 1<<62 {
			return 0, fmt.Errorf("events: sequence out of range")
		}
	}
	// Now events exist after lo-1 (if lo > 0) and none after hi-1: the last
	// seq is in [lo, hi-1].
	l, r := lo, hi-1
	for l < r {
		mid := l + (r-l+1)/2
		ok, err := exists(mid - 1)
		if err != nil {
			return 0, err
		}
		if ok {
			l = mid
		} else {
			r = mid - 1
		}
	}
	return l, nil
}

// watch streams events as server-sent events, one per event:
//
//	id: 42
//	event: current_changed
//	data: {"seq":42,"kind":"current_changed","credential_id":"prod/db","version":3,...}
//
// The stream starts after Last-Event-ID (or ?after=N); without either it
// starts with the next event. Events are filtered by ?prefix= and by the
// token's read grants.
func (s *Server) watch(rq *request) error {
	prefix := rq.query("prefix")
	rq.detail = "prefix=" + prefix
	if !s.canWatchUnder(rq.tok.Grants, prefix) {
		// A token that could never receive an event is told so (403), as on
		// every other route, rather than handed an empty stream forever.
		return rq.authorize(acl.Read, strings.TrimSuffix(prefix, "/"))
	}
	var cursor int64 = -1
	last := rq.r.Header.Get("Last-Event-ID")
	if last == "" {
		last = rq.query("after")
	}
	if last != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(last), 10, 64)
		if err != nil || n < 0 {
			return invalidf("Last-Event-ID (or ?after=) must be an event sequence number")
		}
		cursor = n
	}
	flusher, ok := rq.w.(http.Flusher)
	if !ok {
		return errorf(http.StatusInternalServerError, CodeInternal, "streaming is not supported by this connection")
	}
	leave := s.hub.join()
	defer leave()
	if cursor < 0 {
		n, err := latestSeq(rq.ctx, s.m.Store())
		if err != nil {
			return err
		}
		cursor = n
	}
	if err := s.auditOutcome(rq, "ok"); err != nil {
		return s.auditFailed(rq, err)
	}
	rc := http.NewResponseController(rq.w)
	h := rq.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	rq.responded = true
	rq.w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.RequestTimeout))
		if _, err := rq.w.Write(b); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	if err := write([]byte(fmt.Sprintf("retry: 1000\n: watching after %d\n\n", cursor))); err != nil {
		return nil
	}
	heartbeat := time.NewTicker(s.cfg.WatchHeartbeat)
	defer heartbeat.Stop()
	for {
		wake := s.hub.waitCh()
		var evs []store.Event
		err := s.m.Store().View(rq.ctx, func(tx store.Tx) error {
			var err error
			evs, err = tx.ListEvents(rq.ctx, cursor, 500)
			return err
		})
		if err != nil {
			if rq.ctx.Err() != nil {
				return nil
			}
			s.log.Warn("watch: reading events", "request_id", rq.info.requestID, "err", err)
			evs = nil
		}
		var buf []byte
		for _, e := range evs {
			cursor = e.Seq
			if !strings.HasPrefix(e.CredentialID, prefix) || !acl.Allowed(rq.tok.Grants, acl.Read, e.CredentialID) {
				continue
			}
			ev := eventJSON{Seq: e.Seq, Kind: e.Kind, CredentialID: e.CredentialID, Version: e.Version, At: e.At}
			if len(e.Detail) > 0 {
				ev.Detail = json.RawMessage(e.Detail)
			}
			data, _ := json.Marshal(ev)
			buf = fmt.Appendf(buf, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Kind, data)
		}
		if len(buf) > 0 {
			if err := write(buf); err != nil {
				return nil
			}
		}
		if len(evs) == 500 {
			continue
		}
		select {
		case <-rq.ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-heartbeat.C:
			if err := write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
		case <-wake:
		}
	}
}

// canWatchUnder reports whether some read grant could cover an ID under
// prefix: a grant on an ancestor of the prefix, or on something inside it.
func (s *Server) canWatchUnder(grants []acl.Grant, prefix string) bool {
	p := strings.TrimSuffix(prefix, "/")
	for _, g := range grants {
		if g.Permission != acl.Read && g.Permission != acl.Admin {
			continue
		}
		if acl.Covers(g.Prefix, p) || strings.HasPrefix(g.Prefix, prefix) || strings.HasPrefix(g.Prefix, p) {
			return true
		}
	}
	return false
}
