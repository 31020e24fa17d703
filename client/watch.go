package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is one change of a credential from the watch stream.
type Event struct {
	Seq          int64           `json:"seq"`
	Kind         string          `json:"kind"` // "current_changed", "rolled_back", "rotation_failed", "needs_attention", ...
	CredentialID string          `json:"credential_id"`
	Version      int             `json:"version"`
	At           time.Time       `json:"at"`
	Detail       json.RawMessage `json:"detail,omitempty"` // never secret
}

// Watch streams the events of the credentials under prefix that the token
// may read. With lastEventID 0 it starts with the next event; otherwise it
// resumes after that event (pass the Seq of the last event handled to miss
// nothing across restarts).
//
// With several addresses (see New) a broken stream is reopened on the next
// address, resuming after the last event: the instances share one store, so
// the sequence continues there and no event is missed or repeated.
//
// The first connection is made before Watch returns: a permanent refusal
// (bad token, no grant, bad input) is returned as the error. After that the
// stream reconnects on its own with exponential backoff and full jitter,
// resuming after the last event delivered. The channel is closed when ctx is
// done or the server refuses the stream for good (the token was revoked).
func (c *Client) Watch(ctx context.Context, prefix string, lastEventID int64) (<-chan Event, error) {
	w := &watcher{c: c, prefix: prefix, last: lastEventID, resume: lastEventID > 0, out: make(chan Event, 64)}
	body, err := w.connect(ctx)
	if err != nil && permanent(err) {
		return nil, err
	}
	go w.run(ctx, body, err)
	return w.out, nil
}

type watcher struct {
	c      *Client
	prefix string
	last   int64
	resume bool // last is a position to resume after (even 0)
	out    chan Event
	alive  func() // if set, called for every line read (WatchOnce's idle timer)
}

// stream is one open connection.
type stream struct {
	*bufio.Reader
	close func()
	addr  int // index of the client's address it is open on
}

// connect opens the stream after w.last.
func (w *watcher) connect(ctx context.Context) (*stream, error) {
	q := url.Values{}
	if w.prefix != "" {
		q.Set("prefix", w.prefix)
	}
	r := request{method: "GET", path: "/v1/watch", query: q, header: map[string][]string{"Accept": {"text/event-stream"}}}
	if w.resume {
		r.header["Last-Event-Id"] = []string{strconv.FormatInt(w.last, 10)}
	}
	c := *w.c
	c.opts.Retries = -1 // run's loop does the retrying
	res, k, err := c.sendIdx(ctx, r)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { res.Body.Close() })
	return &stream{Reader: bufio.NewReader(res.Body), close: func() { stop(); res.Body.Close() }, addr: k}, nil
}

// permanent reports errors that reconnecting cannot cure.
func permanent(err error) bool {
	var ae *Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.StatusCode {
	case 400, 401, 403, 404:
		return true
	}
	return false
}

func (w *watcher) run(ctx context.Context, body *stream, err error) {
	defer close(w.out)
	backoff := 250 * time.Millisecond
	for {
		if err == nil {
			delivered, rerr := w.read(ctx, body.Reader)
			body.close()
			if delivered {
				backoff = 250 * time.Millisecond
			}
			err = rerr
			if ctx.Err() != nil {
				return
			}
			// With several addresses, the next stream is opened on the
			// next one (an instance that went away), resuming after w.last.
			w.c.next(body.addr)
		}
		if ctx.Err() != nil {
			return
		}
		if permanent(err) {
			w.c.log.Error("watch: the server refused the stream; stopping", "err", err)
			return
		}
		d := time.Duration(rand.Int64N(int64(backoff)) + 1)
		w.c.log.Warn("watch: reconnecting", "after", w.last, "in", d, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, w.c.opts.WatchBackoffMax)
		body, err = w.connect(ctx)
	}
}

// read parses server-sent events until the stream ends. It reports whether
// it delivered anything (or at least learned the server's cursor).
func (w *watcher) read(ctx context.Context, br *bufio.Reader) (bool, error) {
	var (
		progress bool
		id       int64
		data     []byte
	)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return progress, ctx.Err()
			}
			return progress, errors.New("watch stream ended: " + err.Error())
		}
		if w.alive != nil {
			w.alive()
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data != nil {
				var ev Event
				if json.Unmarshal(data, &ev) == nil {
					if ev.Seq == 0 {
						ev.Seq = id
					}
					select {
					case w.out <- ev:
					case <-ctx.Done():
						return progress, ctx.Err()
					}
					w.last, w.resume = ev.Seq, true
					progress = true
				}
			}
			id, data = 0, nil
		case strings.HasPrefix(line, ": watching after "):
			// The server's starting cursor: resume from it after a
			// reconnect even if no event came yet.
			if n, err := strconv.ParseInt(strings.TrimPrefix(line, ": watching after "), 10, 64); err == nil && (n > w.last || !w.resume) {
				w.last, w.resume = n, true
				progress = true
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			id, _ = strconv.ParseInt(strings.TrimSpace(line[3:]), 10, 64)
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(line[5:], " ")...)
		}
	}
}
