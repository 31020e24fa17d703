package client

import "context"

// WatchOnce is Watch without reconnecting: it opens one stream after
// lastEventID (0: the next event) and delivers its events until the stream
// ends or ctx is done, then closes the channel. A caller that knows several
// servers uses it to move to the next one as soon as a stream breaks
// (`nebula-credential agent` does), resuming after the last event it handled.
func (c *Client) WatchOnce(ctx context.Context, prefix string, lastEventID int64) (<-chan Event, error) {
	w := &watcher{c: c, prefix: prefix, last: lastEventID, resume: lastEventID > 0, out: make(chan Event, 64)}
	body, err := w.connect(ctx)
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(w.out)
		w.read(ctx, body.Reader)
		body.close()
	}()
	return w.out, nil
}
