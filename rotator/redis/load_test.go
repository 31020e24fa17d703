package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	rrot "github.com/nebula-credential/nebula-credential/rotator/redis"
)

// Zero downtime: 50 dual rotations (each saved to the ACL file) under load,
// not one failed login or command.
func TestLoadDual(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	cur := e.user(t, "app", true)
	load := &testenv.Consumers[rotator.Credential]{Workers: 8, QueriesPerConn: 20,
		Open: func(ctx context.Context, c rotator.Credential) (func(context.Context) error, func(), error) {
			cl := goredis.NewClient(&goredis.Options{Addr: e.srv.Addr(), Username: c.String("username"), Password: c.Secret["password"].Reveal(),
				PoolSize: 1, MaxRetries: -1, DisableIdentity: true})
			if err := cl.Ping(ctx).Err(); err != nil {
				cl.Close()
				return nil, nil, err
			}
			return func(ctx context.Context) error { return cl.Get(ctx, "k").Err() }, func() { cl.Close() }, nil
		}}
	e.srv.Do(t, "SET", "k", "v")
	load.Start(cur)
	defer load.Stop()
	time.Sleep(time.Second)
	before := load.Queries()
	start := time.Now()
	const n = 50
	for range n {
		pend := stage(t, rot, e.res, cur)
		if _, err := rot.Apply(ctx(t), rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: e.res}); err != nil {
			t.Fatal(err)
		}
		if _, err := rot.Verify(ctx(t), rotator.VerifyRequest{Credential: pend, Resolver: e.res}); err != nil {
			t.Fatal(err)
		}
		load.Publish(pend)
		if _, err := rot.Retire(ctx(t), rotator.RetireRequest{Old: cur, Current: pend, Strategy: rotator.Dual, Resolver: e.res}); err != nil {
			t.Fatal(err)
		}
		cur = pend
	}
	elapsed := time.Since(start)
	during := float64(load.Queries()-before) / elapsed.Seconds()
	load.Stop()
	if f := load.Failures(); len(f) != 0 {
		t.Fatalf("%d failures during rotation, first: %v", len(f), f[0].Err)
	}
	t.Logf("redis dual: %d rotations in %v (%.2f ms each); commands/s before %.0f, during %.0f; %d logins, 0 failed",
		n, elapsed.Round(time.Millisecond), float64(elapsed.Microseconds())/1000/n, float64(before), during, load.Logins())
}
