package redis_test

import (
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	rrot "github.com/nebula-credential/nebula-credential/rotator/redis"
)

// A second Apply changes nothing and says so; both versions still log in.
func TestApplyTwiceSkips(t *testing.T) {
	e := newEnv(t, true)
	rot := rrot.New(rrot.Config{})
	cur := e.user(t, "app", true)
	pend := stage(t, rot, e.res, cur)
	dbrottest.ApplyTwice(t, rot, rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: rotator.Dual, Resolver: e.res})
	if !e.authenticates(t, cur) || !e.authenticates(t, pend) {
		t.Fatal("both versions must log in")
	}
}
