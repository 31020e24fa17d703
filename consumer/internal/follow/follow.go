// Package follow keeps a pool on the current version of a credential: it
// reads a Source's change stream, re-watches when the stream breaks (catching
// up on what it missed), and hands each new current version to the pool.
// pgxswap and sqlswap share it.
package follow

import (
	"context"
	"log/slog"
	"time"

	"github.com/nebula-credential/nebula-credential/consumer"
)

// Run calls apply with the current version after every change on changes,
// until ctx is done. The authoritative version comes from src.Current; the
// change's version is the fallback when that read fails. When the stream
// breaks it watches again every second and then catches up.
func Run(ctx context.Context, src consumer.Source, id string, changes <-chan consumer.Change, log *slog.Logger, apply func(ctx context.Context, version int)) {
	refresh := func(hint int) {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := src.Current(rctx, id)
		cancel()
		v := hint
		if err == nil {
			v = c.Version
		} else {
			log.Warn("reading current credential after a change", "credential", id, "err", err)
		}
		if v != 0 {
			apply(ctx, v)
		}
	}
	for {
		for ch := range changes {
			refresh(ch.Version)
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("credential watch ended; watching again", "credential", id)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			var err error
			if changes, err = src.Watch(ctx, id); err == nil {
				refresh(0) // catch up with changes missed meanwhile
				break
			}
			log.Warn("watching credential", "credential", id, "err", err)
		}
	}
}
