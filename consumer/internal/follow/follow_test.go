package follow

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nebula-credential/nebula-credential/consumer"
)

// source is an in-memory Source whose streams the test controls.
type source struct {
	mu      sync.Mutex
	current int
	failGet bool
	streams chan chan consumer.Change
}

func (s *source) Current(context.Context, string) (consumer.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failGet {
		return consumer.Credential{}, errors.New("server unreachable")
	}
	return consumer.Credential{Version: s.current}, nil
}

func (s *source) Watch(context.Context, string) (<-chan consumer.Change, error) {
	return <-s.streams, nil
}

func (s *source) set(v int, failGet bool) {
	s.mu.Lock()
	s.current, s.failGet = v, failGet
	s.mu.Unlock()
}

func TestRunFollowsAndRewatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &source{streams: make(chan chan consumer.Change, 1)}
		first := make(chan consumer.Change, 1)
		var mu sync.Mutex
		var got []int
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			Run(ctx, src, "db", first, slog.New(slog.DiscardHandler), func(_ context.Context, v int) {
				mu.Lock()
				got = append(got, v)
				mu.Unlock()
			})
			close(done)
		}()

		src.set(2, false)
		first <- consumer.Change{ID: "db", Version: 2}
		synctest.Wait()

		// The stream breaks; current moves to 3 meanwhile; a new stream opens.
		src.set(3, false)
		close(first)
		second := make(chan consumer.Change, 1)
		src.streams <- second
		time.Sleep(time.Second) // the re-watch delay
		synctest.Wait()

		// The authoritative read fails: the change's own version is used.
		src.set(0, true)
		second <- consumer.Change{ID: "db", Version: 4}
		synctest.Wait()

		cancel()
		close(second)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 4 {
			t.Fatalf("applied versions %v, want [2 3 4]", got)
		}
	})
}
