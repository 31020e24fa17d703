package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

type sse struct {
	id    int64
	event string
	data  eventJSON
}

// openWatch connects to the watch stream and parses its events.
func (e *env) openWatch(ctx context.Context, query, token, lastID string) (<-chan sse, *http.Response) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/v1/watch"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		return nil, res
	}
	ch := make(chan sse, 100)
	go func() {
		defer close(ch)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" {
					ch <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &cur.data)
			}
		}
	}()
	return ch, res
}

// patience is the one generous deadline for an event the tests wait for: a
// loaded machine may be slow, a broken stream never delivers.
const patience = time.Minute

// next returns the next event, waiting at least within (and at least
// patience: the argument only ever lengthens the wait).
func next(t *testing.T, ch <-chan sse, within time.Duration) sse {
	t.Helper()
	within = max(within, patience)
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(within):
		t.Fatal("no event")
	}
	return sse{}
}

func quiet(t *testing.T, ch <-chan sse, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(d):
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e.must(200, "PUT", "/v1/credentials/a/old", e.admin, genericBody("x"))

	// openWatch returns once the response headers arrived, and the server
	// fixes the stream's starting point before it sends them.
	ch, _ := e.openWatch(ctx, "", e.admin, "")
	e.must(200, "PUT", "/v1/credentials/a/one", e.admin, genericBody("x"))
	ev := next(t, ch, 2*time.Second)
	if ev.event != "current_changed" || ev.data.CredentialID != "a/one" || ev.data.Version != 1 || ev.id != ev.data.Seq || ev.id == 0 {
		t.Fatalf("event %+v", ev)
	}
	first := ev.id

	// Rotation events arrive too.
	e.must(200, "POST", "/v1/rotate/a/one", e.admin, nil)
	ev = next(t, ch, 2*time.Second)
	if ev.event != "current_changed" || ev.data.Version != 2 {
		t.Fatalf("rotation event %+v", ev)
	}
	cancel()

	// Resume: the events after the first come again, in order.
	e.must(200, "PUT", "/v1/credentials/a/two", e.admin, genericBody("x"))
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	ch, _ = e.openWatch(ctx2, "", e.admin, strconv.FormatInt(first, 10))
	ev = next(t, ch, 2*time.Second)
	if ev.data.CredentialID != "a/one" || ev.data.Version != 2 || ev.id <= first {
		t.Fatalf("resumed first event %+v", ev)
	}
	ev2 := next(t, ch, 2*time.Second)
	if ev2.data.CredentialID != "a/two" || ev2.id <= ev.id {
		t.Fatalf("resumed second event %+v", ev2)
	}
	cancel2()

	// ?after=0 replays everything.
	ctx3, cancel3 := context.WithCancel(t.Context())
	defer cancel3()
	ch, _ = e.openWatch(ctx3, "?after=0", e.admin, "")
	if ev := next(t, ch, 2*time.Second); ev.data.CredentialID != "a/old" {
		t.Fatalf("replay starts with %+v", ev)
	}
}

func TestWatchFilters(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	reader := e.token("read:a", "rotate:b")
	byGrant, _ := e.openWatch(ctx, "?after=0", reader, "")
	byPrefix, _ := e.openWatch(ctx, "?after=0&prefix=b/", e.admin, "")
	for _, id := range []string{"b/1", "a/1", "c/1", "b/2"} {
		e.must(200, "PUT", "/v1/credentials/"+id, e.admin, genericBody("x"))
	}
	if ev := next(t, byGrant, 2*time.Second); ev.data.CredentialID != "a/1" {
		t.Errorf("grant filter: %+v", ev)
	}
	quiet(t, byGrant, 300*time.Millisecond)
	if ev := next(t, byPrefix, 2*time.Second); ev.data.CredentialID != "b/1" {
		t.Errorf("prefix filter: %+v", ev)
	}
	if ev := next(t, byPrefix, 2*time.Second); ev.data.CredentialID != "b/2" {
		t.Errorf("prefix filter: %+v", ev)
	}
	// A prefix no read grant can cover is refused at once.
	_, res := e.openWatch(ctx, "?prefix=c/", reader, "")
	if res.StatusCode != 403 {
		t.Errorf("watch outside grants: %d", res.StatusCode)
	}
	res.Body.Close()
	_, res = e.openWatch(ctx, "", reader, "nope")
	if res.StatusCode != 400 {
		t.Errorf("bad Last-Event-ID: %d", res.StatusCode)
	}
	res.Body.Close()
}

// TestWatchWakesOnEngineEvents: with an hour-long poll, engine notifications
// still deliver events (within patience, far less than the hour, so a loaded
// machine does not matter); Shutdown ends the streams.
func TestWatchWakesOnEngineEvents(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.WatchPollInterval = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, _ := e.openWatch(ctx, "", e.admin, "")
	e.must(200, "PUT", "/v1/credentials/a/1", e.admin, genericBody("x"))
	next(t, ch, patience)
	e.srv.Shutdown()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("event after shutdown")
		}
	case <-time.After(patience):
		t.Fatal("stream still open after Shutdown")
	}
}

func TestLatestSeq(t *testing.T) {
	e := newEnv(t)
	for i := range 37 {
		if n, err := latestSeq(t.Context(), e.m.Store()); err != nil || n != int64(i) {
			t.Fatalf("after %d events: %d, %v", i, n, err)
		}
		e.must(200, "PUT", "/v1/credentials/a/"+strconv.Itoa(i), e.admin, genericBody("x"))
	}
}
