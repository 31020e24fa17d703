package server

import (
	"context"
	"testing"
	"time"
)

// TestWatchEventBeforePollerLooks: the first stream starts the hub's poller,
// which first looks up the newest event. An event committed after the
// stream chose its starting point but before that look must still reach the
// stream at once, not with the next event or keep-alive (both an hour away
// here). It used to wait: on a loaded machine this showed up as a 15 s
// outlier (the default keep-alive) in bench/ha's watch latency.
func TestWatchEventBeforePollerLooks(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.WatchPollInterval = time.Hour; c.WatchHeartbeat = time.Hour })
	release := make(chan struct{})
	e.srv.hub.mu.Lock()
	e.srv.hub.beforeFirstLook = func() { <-release }
	e.srv.hub.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, res := e.openWatch(ctx, "", e.admin, "")
	if ch == nil {
		t.Fatalf("watch: %d", res.StatusCode)
	}
	e.must(200, "PUT", "/v1/credentials/w/early", e.admin, genericBody("x"))
	close(release)
	ev := next(t, ch, 0)
	if ev.data.CredentialID != "w/early" {
		t.Fatalf("event %+v, want one for w/early", ev)
	}
}
