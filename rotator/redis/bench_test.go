package redis_test

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	rrot "github.com/nebula-credential/nebula-credential/rotator/redis"
)

// BenchmarkRawChange is the floor: ACL SETUSER u resetpass >new on an open
// admin connection plus one fresh login (no ACL file, no SAVE).
func BenchmarkRawChange(b *testing.B) {
	e := newEnv(b, false)
	e.user(b, "app", false)
	admin := e.srv.Client(b)
	ctx := context.Background()
	for b.Loop() {
		pw := testenv.UniqueName("raw-")
		if err := admin.Do(ctx, "ACL", "SETUSER", "app", "resetpass", ">"+pw).Err(); err != nil {
			b.Fatal(err)
		}
		cl := goredis.NewClient(&goredis.Options{Addr: e.srv.Addr(), Username: "app", Password: pw, PoolSize: 1, MaxRetries: -1, DisableIdentity: true})
		if err := cl.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		cl.Close()
	}
}

// BenchmarkRotatorApplyVerify is one whole rotation through the rotator
// (Stage + Apply + Verify + Retire), without and with an ACL file (ACL SAVE
// after Apply and Retire).
func BenchmarkRotatorApplyVerify(b *testing.B) {
	for _, acl := range []bool{false, true} {
		name := "noaclfile"
		if acl {
			name = "aclfile"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, acl)
			rot := rrot.New(rrot.Config{})
			cur := e.user(b, "app", true)
			for b.Loop() {
				cur = rotate(b, rot, e.res, cur)
			}
		})
	}
}

var _ rotator.Rotator = (*rrot.Rotator)(nil)
