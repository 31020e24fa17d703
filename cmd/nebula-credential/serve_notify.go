package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// notifyFlags adds the webhook dispatcher's settings to serve.
func notifyFlags(c *cobra.Command, cfg *notify.DispatcherConfig) {
	f := c.Flags()
	f.IntVar(&cfg.MaxAttempts, "notify-max-attempts", 10, "webhook attempts before a notification goes to the dead-letter queue")
	f.DurationVar(&cfg.AttemptTimeout, "notify-timeout", 10*time.Second, "timeout of one webhook attempt")
	f.DurationVar(&cfg.BackoffBase, "notify-backoff", 2*time.Second, "wait after the first failed webhook attempt (doubles up to --notify-backoff-max, with jitter)")
	f.DurationVar(&cfg.BackoffMax, "notify-backoff-max", time.Hour, "longest wait between webhook attempts")
	f.DurationVar(&cfg.CheckInterval, "notify-check-interval", time.Minute, "how often grace ends, expiries, overdue policies and lagging consumers are checked for notifications")
	f.DurationVar(&cfg.PollInterval, "notify-poll", time.Second, "how often the notification outbox is read when nothing wakes the dispatcher")
}

// newDispatcher builds the webhook dispatcher of serve.
func newDispatcher(m *credential.Manager, logger *slog.Logger, cfg notify.DispatcherConfig) (*notify.Dispatcher, error) {
	if cfg.MaxAttempts < 1 {
		return nil, usagef("--notify-max-attempts must be at least 1")
	}
	cfg.Service = &notify.Service{Store: m.Store(), Keys: m.SubscriptionKeys()}
	cfg.Logger = logger
	return notify.NewDispatcher(cfg)
}

// runDispatcher runs d until ctx ends, woken by every engine event; the
// returned channel closes when it has stopped.
func runDispatcher(ctx context.Context, m *credential.Manager, d *notify.Dispatcher) <-chan struct{} {
	done := make(chan struct{})
	unsub := m.Engine().Subscribe(func(rotation.Event) { d.Kick() })
	go func() {
		defer close(done)
		defer unsub()
		_ = d.Run(ctx)
	}()
	return done
}
