package consumer

import (
	"context"
	"fmt"
	"slices"
	"sync"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// ManagerSource is the in-process Source: it reads credentials through a
// *credential.Manager and hears about changes through the rotation engine's
// in-process events. Current serves a cached version until a current_changed
// (or rolled_back) event for that ID arrives.
//
// Events are in-process: rotations run by another process sharing the store
// (a server, the CLI) are not seen. Use the HTTP client there.
type ManagerSource struct {
	m      *credential.Manager
	cancel func()

	mu       sync.Mutex
	closed   bool
	cache    map[string]Credential
	gen      map[string]uint64 // bumped by every event: a load started before it is not cached
	watchers map[string]map[*watcher]struct{}
	unused   map[string][]int
	onUnused func(ctx context.Context, id string, version int) error
}

var (
	_ Source         = (*ManagerSource)(nil)
	_ UnusedReporter = (*ManagerSource)(nil)
	_ Refresher      = (*ManagerSource)(nil)
)

// FromManager returns the in-process Source of m. Close it when done.
func FromManager(m *credential.Manager) *ManagerSource {
	s := &ManagerSource{
		m:        m,
		cache:    map[string]Credential{},
		gen:      map[string]uint64{},
		watchers: map[string]map[*watcher]struct{}{},
		unused:   map[string][]int{},
	}
	s.cancel = m.Engine().Subscribe(s.onEvent)
	return s
}

// onEvent runs on the engine's goroutine: it must not block. It invalidates
// the cache before any watcher hears of the change, so a consumer reacting to
// the change reads the new version.
func (s *ManagerSource) onEvent(ev rotation.Event) {
	if ev.Kind != rotation.EventCurrentChanged && ev.Kind != rotation.EventRolledBack {
		return
	}
	id := ev.CredentialID
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.gen[id]++
	delete(s.cache, id)
	if ev.Kind == rotation.EventCurrentChanged {
		// Current again (a rollback): no longer unused.
		s.unused[id] = slices.DeleteFunc(s.unused[id], func(v int) bool { return v == ev.Version })
	}
	ws := make([]*watcher, 0, len(s.watchers[id]))
	for w := range s.watchers[id] {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	c := Change{ID: id, Version: ev.Version, Kind: ev.Kind, At: ev.At}
	for _, w := range ws {
		w.send(c)
	}
}

// Current returns the current version of id, from the cache when no change
// was announced since it was read.
func (s *ManagerSource) Current(ctx context.Context, id string) (Credential, error) {
	s.mu.Lock()
	if c, ok := s.cache[id]; ok {
		s.mu.Unlock()
		return c, nil
	}
	gen := s.gen[id]
	s.mu.Unlock()
	c, err := s.m.Get(ctx, id, credential.GetOptions{})
	if err != nil {
		return Credential{}, err
	}
	out := FromCredential(c)
	s.mu.Lock()
	if !s.closed && s.gen[id] == gen {
		s.cache[id] = out
	}
	s.mu.Unlock()
	return out, nil
}

// Refresh implements Refresher: it drops the cached version of id and reads
// it from the store.
func (s *ManagerSource) Refresh(ctx context.Context, id string) (Credential, error) {
	s.mu.Lock()
	s.gen[id]++ // a load started before this one is not cached
	delete(s.cache, id)
	s.mu.Unlock()
	return s.Current(ctx, id)
}

// Watch implements Source.
func (s *ManagerSource) Watch(ctx context.Context, id string) (<-chan Change, error) {
	if err := credential.ValidateID(id); err != nil {
		return nil, err
	}
	w := &watcher{ch: make(chan Change, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("consumer: watch %s: source is closed", id)
	}
	if s.watchers[id] == nil {
		s.watchers[id] = map[*watcher]struct{}{}
	}
	s.watchers[id][w] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.watchers[id], w)
		if len(s.watchers[id]) == 0 {
			delete(s.watchers, id)
		}
		s.mu.Unlock()
		w.close()
	}()
	return w.ch, nil
}

// ReportUnused records that a consumer holds no connection on version of id
// any more, and passes it to the hook set with HandleUnused. Idempotent.
func (s *ManagerSource) ReportUnused(ctx context.Context, id string, version int) error {
	s.mu.Lock()
	if !slices.Contains(s.unused[id], version) {
		s.unused[id] = append(s.unused[id], version)
		slices.Sort(s.unused[id])
	}
	hook := s.onUnused
	s.mu.Unlock()
	if hook != nil {
		return hook(ctx, id, version)
	}
	return nil
}

// Unused returns the versions of id reported unused and not current again
// since, in increasing order.
func (s *ManagerSource) Unused(id string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.unused[id])
}

// HandleUnused sets a hook called by ReportUnused (after recording), e.g. to
// let the engine retire a version early. fn must be idempotent.
func (s *ManagerSource) HandleUnused(fn func(ctx context.Context, id string, version int) error) {
	s.mu.Lock()
	s.onUnused = fn
	s.mu.Unlock()
}

// Close stops listening to the engine and closes every watch channel.
func (s *ManagerSource) Close() error {
	s.cancel()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var ws []*watcher
	for _, m := range s.watchers {
		for w := range m {
			ws = append(ws, w)
		}
	}
	s.watchers = map[string]map[*watcher]struct{}{}
	s.cache = map[string]Credential{}
	s.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
	return nil
}

// FromCredential converts a Manager's credential.
func FromCredential(c *credential.Credential) Credential {
	return Credential{ID: c.ID, Type: string(c.Type), Version: c.Version, Fields: c.Fields, Secret: c.Secret}
}

// watcher is one Watch channel: a buffer of one that keeps the latest change.
type watcher struct {
	mu     sync.Mutex
	closed bool
	ch     chan Change
}

func (w *watcher) send(c Change) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	select {
	case w.ch <- c:
		return
	default:
	}
	select { // full: drop the older undelivered change
	case <-w.ch:
	default:
	}
	w.ch <- c // only senders hold mu, so there is room now
}

func (w *watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}
