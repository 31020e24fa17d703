package client

import (
	"context"
	"time"
)

// WatchOnce is Watch without reconnecting: it opens one stream after
// lastEventID (0: the next event) and delivers its events until the stream
// ends or ctx is done, then closes the channel. A caller that knows several
// servers uses it to move to the next one as soon as a stream breaks
// (`nebula-credential agent` does), resuming after the last event it handled.
//
// With idle > 0 the stream also ends when nothing, not even the server's
// keep-alive comment, arrived for that long: a connection that died without
// a word (a partition, a vanished host) is noticed. Make idle a few times the
// server's watch heartbeat (15s by default).
func (c *Client) WatchOnce(ctx context.Context, prefix string, lastEventID int64, idle time.Duration) (<-chan Event, error) {
	sctx, cancel := context.WithCancel(ctx)
	w := &watcher{c: c, prefix: prefix, last: lastEventID, resume: lastEventID > 0, out: make(chan Event, 64)}
	body, err := w.connect(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	var timer *time.Timer
	if idle > 0 {
		timer = time.AfterFunc(idle, func() {
			c.log.Warn("watch: nothing from the server; closing the stream", "for", idle)
			cancel()
		})
		w.alive = func() { timer.Reset(idle) }
	}
	go func() {
		defer close(w.out)
		defer cancel()
		if timer != nil {
			defer timer.Stop()
		}
		w.read(sctx, body.Reader)
		body.close()
	}()
	return w.out, nil
}
