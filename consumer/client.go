package consumer

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/client"
)

// ClientSource is a Source backed by a nebula-credential server through the
// HTTP client: Current is cached per ID until the watch stream reports that
// current moved.
//
// It is a consumer.UnusedReporter: a pool's finished drain is reported to the
// server as consumer evidence (POST /v1/consumers), which the server shows in
// `nebula-credential consumers` and may use to end grace early.
type ClientSource struct {
	c *client.Client

	mu     sync.Mutex
	cache  map[string]cached
	maxAge time.Duration             // 0: cached until the watch says it moved
	drains map[string]time.Duration  // drain timeout of the pool on each ID
	who    credential.ConsumerReport // identity for reports; Credentials unused
	now    func() time.Time
}

type cached struct {
	c  Credential
	at time.Time
}

var (
	_ Source         = (*ClientSource)(nil)
	_ UnusedReporter = (*ClientSource)(nil)
	_ Refresher      = (*ClientSource)(nil)
	_ TimingReporter = (*ClientSource)(nil)
)

// FromClient returns a Source reading from a server. The client's token needs
// read on the credentials it serves. Drains are reported as the consumer
// "pool:HOST:PID" until SetConsumer names it.
func FromClient(c *client.Client) *ClientSource {
	host, _ := os.Hostname()
	return &ClientSource{c: c, cache: map[string]cached{}, drains: map[string]time.Duration{}, now: time.Now, who: credential.ConsumerReport{
		ID: fmt.Sprintf("pool:%s:%d", host, os.Getpid()), Name: "pool", Host: host, Kind: "pool",
	}}
}

// SetConsumer sets the identity reported with finished drains: id must stay
// the same across restarts of the process to replace its earlier reports.
func (s *ClientSource) SetConsumer(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.who.ID, s.who.Name = id, name
}

// SetMaxAge bounds how long Current serves a cached version: an entry older
// than d is read again from the server, even if no change arrived (a watch
// stream that broke, or nobody watching). 0, the default, keeps an entry
// until the watch stream reports that current moved. The bound is reported
// to the server as this consumer's refresh interval: a grace period shorter
// than it makes policy set and doctor warn.
func (s *ClientSource) SetMaxAge(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxAge = max(d, 0)
}

// ReportTiming implements TimingReporter: it registers this consumer of id
// on version with its refresh interval (SetMaxAge) and the pool's drain
// timeout. A pool calls it when it opens.
func (s *ClientSource) ReportTiming(ctx context.Context, id string, version int, drainTimeout time.Duration) error {
	s.mu.Lock()
	s.drains[id] = drainTimeout
	s.mu.Unlock()
	return s.report(ctx, id, version)
}

func (s *ClientSource) report(ctx context.Context, id string, version int) error {
	s.mu.Lock()
	r := s.who
	d := credential.ConsumerDelivery{ID: id, Version: version, ActionOK: true,
		RefreshSeconds: s.maxAge.Seconds(), DrainTimeoutSeconds: s.drains[id].Seconds()}
	s.mu.Unlock()
	r.Credentials = []credential.ConsumerDelivery{d}
	_, err := s.c.ReportConsumer(ctx, r)
	return err
}

// ReportUnused implements UnusedReporter: the pool holds no connection on
// version any more, so it is on the current version only, which it reports to
// the server. Idempotent.
func (s *ClientSource) ReportUnused(ctx context.Context, id string, version int) error {
	cur, err := s.Current(ctx, id)
	if err != nil {
		return err
	}
	if cur.Version == version {
		return nil // current again (a rollback): still in use
	}
	return s.report(ctx, id, cur.Version)
}

// Current implements Source.
func (s *ClientSource) Current(ctx context.Context, id string) (Credential, error) {
	s.mu.Lock()
	e, ok := s.cache[id]
	fresh := ok && (s.maxAge == 0 || s.now().Sub(e.at) < s.maxAge)
	s.mu.Unlock()
	if fresh {
		return e.c, nil
	}
	at := s.now()
	got, err := s.c.Get(ctx, id, client.GetOptions{Reveal: true})
	if err != nil {
		return Credential{}, err
	}
	c := Credential{ID: got.ID, Type: string(got.Type), Version: got.Version, Fields: got.Fields, Secret: got.Secret}
	s.mu.Lock()
	s.cache[id] = cached{c: c, at: at}
	s.mu.Unlock()
	return c, nil
}

// Refresh implements Refresher: it drops the cached version of id and asks
// the server.
func (s *ClientSource) Refresh(ctx context.Context, id string) (Credential, error) {
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
	return s.Current(ctx, id)
}

// Watch implements Source on the server's event stream (which reconnects and
// resumes by itself). The cache entry is dropped before a change is delivered.
func (s *ClientSource) Watch(ctx context.Context, id string) (<-chan Change, error) {
	events, err := s.c.Watch(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	out := make(chan Change, 1)
	go func() {
		defer close(out)
		for ev := range events {
			if ev.CredentialID != id || (ev.Kind != "current_changed" && ev.Kind != "rolled_back") {
				continue
			}
			s.mu.Lock()
			delete(s.cache, id)
			s.mu.Unlock()
			ch := Change{ID: id, Version: ev.Version, Kind: ev.Kind, At: ev.At}
			select { // keep only the latest undelivered change
			case out <- ch:
			default:
				select {
				case <-out:
				default:
				}
				out <- ch
			}
		}
	}()
	return out, nil
}
