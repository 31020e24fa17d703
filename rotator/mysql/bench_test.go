package mysql_test

import (
	"context"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/secret"
)

// BenchmarkRawChange is the floor: ALTER USER ... IDENTIFIED BY on an open
// admin connection plus one fresh login with the new password.
func BenchmarkRawChange(b *testing.B) {
	e := newEnv(b)
	c := e.single(b, "", false)
	admin := e.db.DB(b)
	admin.SetMaxOpenConns(1)
	ctx := context.Background()
	for b.Loop() {
		pw := testenv.UniqueName("raw-")
		if _, err := admin.ExecContext(ctx, "ALTER USER ?@? IDENTIFIED BY ?", c.String("username"), "%", pw); err != nil {
			b.Fatal(err)
		}
		c.Secret = secret.Map{"password": secret.New(pw)}
		_, done, err := login(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		done()
	}
}

// BenchmarkRotatorApplyVerify is one whole rotation through the rotator:
// Stage + Apply + Verify + Retire.
func BenchmarkRotatorApplyVerify(b *testing.B) {
	e := newEnv(b)
	rot := myrot.New(myrot.Config{})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace} {
		b.Run(string(st), func(b *testing.B) {
			cur := e.single(b, "", true)
			if st == rotator.Alternating {
				cur = e.pair(b, "")
			}
			r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: st, Grace: time.Hour}
			for b.Loop() {
				cur = r.Run(b, cur)
			}
		})
	}
}
