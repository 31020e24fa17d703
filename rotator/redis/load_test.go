package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
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
	dbrottest.Load{Name: "redis dual", Consumers: load, Rotations: 50, Warmup: time.Second}.
		ZeroDowntime(t, dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Dual}, cur)
}
