package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// TestPostgresTwoServers: two servers (each its own Manager, connection
// pool and dispatcher) share a PostgreSQL store; events committed on both
// are delivered exactly once between them.
func TestPostgresTwoServers(t *testing.T) {
	dsn := testenv.PGStoreDB(t)
	ctx := context.Background()
	keyFile := filepath.Join(t.TempDir(), "creds.key")
	rcv := newReceiver(t)
	var envs []*env
	for i := range 2 {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: keyFile, Create: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		e := &env{t: t, ctx: ctx, m: m, logs: &testenv.Buffer{}, svc: &notify.Service{Store: m.Store(), Keys: m.SubscriptionKeys()}}
		envs = append(envs, e)
	}
	_, key := envs[0].subscribe(rcv.url("/hook"), nil)
	for i, e := range envs {
		e.dispatcher(func(c *notify.DispatcherConfig) {
			c.Owner = fmt.Sprintf("server-%d", i)
			c.Logger = slog.New(slog.NewJSONHandler(e.logs, nil))
		})
	}
	zero := rotation.Duration(0)
	const n = 10
	done := make(chan error, 2)
	for i, e := range envs {
		go func() {
			for j := range n {
				id := fmt.Sprintf("app/s%d-%d", i, j)
				if _, err := e.m.Put(ctx, id, credential.PutRequest{Type: credential.Generic,
					Secret: secret.FromStrings(map[string]string{"key": "k"}), Settings: &credential.Settings{Grace: &zero}}); err != nil {
					done <- err
					return
				}
				if _, err := e.m.Rotate(ctx, id, credential.RotateOptions{}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range envs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	got := rcv.waitFor(fmt.Sprintf("%d notifications", 2*n), func(ds []delivery) bool { return len(delivered(ds)) == 2*n })
	waitDrained(t, envs[0])
	got = rcv.deliveries()
	for id, c := range delivered(got) {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	for _, d := range got {
		if err := notify.Verify(key, d.header.Get(notify.HeaderSignature), d.body, time.Now(), 0); err != nil {
			t.Error(err)
		}
	}
}
