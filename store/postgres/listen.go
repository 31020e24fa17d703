package postgres

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Change notifications across servers. Triggers (migration 0005) send a
// NOTIFY at commit whenever events are appended or tokens, keys or store
// metadata change. A server that subscribes keeps one connection of its own
// listening; Subscribe's callbacks then run within milliseconds of another
// server's commit. Polling stays the fallback: after the listening
// connection is lost and comes back, every callback runs once with table ""
// ("anything may have changed"), since notifications sent meanwhile are gone.

const changeChannel = "nebula_credential"

type listener struct {
	mu     sync.Mutex
	subs   map[int]func(table string)
	next   int
	cancel context.CancelFunc
	done   chan struct{}
}

// Subscribe calls fn with the table name ("events", "tokens", "keks",
// "meta") after each commit, on any server, that changed it; with "" after
// the listening connection was lost and restored. fn must not block. The
// returned function unsubscribes.
func (s *Store) Subscribe(fn func(table string)) (unsubscribe func()) {
	l := &s.listen
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[int]func(string){}
	}
	id := l.next
	l.next++
	l.subs[id] = fn
	if l.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		l.cancel, l.done = cancel, make(chan struct{})
		go s.listenLoop(ctx, l.done)
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.subs, id)
	}
}

func (l *listener) fire(table string) {
	l.mu.Lock()
	fns := make([]func(string), 0, len(l.subs))
	for _, fn := range l.subs {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	for _, fn := range fns {
		fn(table)
	}
}

func (l *listener) stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (s *Store) listenLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	prefix := s.schema + "."
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, s.cfg.Copy())
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+changeChannel)
		}
		if err == nil {
			if !first {
				s.listen.fire("") // notifications sent while we were away are lost
			}
			first = false
			backoff = 100 * time.Millisecond
			for {
				n, werr := conn.WaitForNotification(ctx)
				if werr != nil {
					err = werr
					break
				}
				if table, ok := strings.CutPrefix(n.Payload, prefix); ok {
					s.listen.fire(table)
				}
			}
		}
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
