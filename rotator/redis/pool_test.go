package redis_test

import (
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/redis"
)

// TestAdminPoolKilledConnection: the server closes the pooled admin
// connection between two rotations (CLIENT KILL). The next step takes it
// without a ping and still succeeds, and every credential logs in.
func TestAdminPoolKilledConnection(t *testing.T) {
	e := newEnv(t, true)
	rot := redis.New(redis.Config{AdminPingIdle: time.Hour}) // never pinged
	defer rot.Close()
	cur := e.user(t, testenv.UniqueName("app_"), true)
	r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: rotator.Dual}
	cur = r.Run(t, cur)
	if n, _ := e.srv.Do(t, "CLIENT", "KILL", "USER", e.srv.AdminUser, "SKIPME", "yes").(int64); n < 1 {
		t.Fatalf("CLIENT KILL closed %d admin connections, want the pooled one", n)
	}
	cur = r.Run(t, cur)
	if !e.authenticates(t, cur) || !e.authenticates(t, e.res[e.adminID]) {
		t.Fatal("current version or admin does not log in after the rotation")
	}
	cur = r.Run(t, cur)
	if !e.authenticates(t, cur) {
		t.Fatal("current version does not log in")
	}
}
