package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/secret"
)

// BenchmarkRawChange is the floor: ALTER ROLE ... PASSWORD on an open admin
// connection (server-side hashing) plus one fresh login with the new password.
func BenchmarkRawChange(b *testing.B) {
	e := newEnv(b)
	c := e.inPlaceCred(b, "", false)
	admin := e.pg.Connect(b)
	ctx := context.Background()
	for b.Loop() {
		pw := testenv.UniqueName("raw-")
		lit, _ := admin.PgConn().EscapeString(pw)
		if _, err := admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{c.String("username")}.Sanitize()+" PASSWORD '"+lit+"'"); err != nil {
			b.Fatal(err)
		}
		c.Secret = secret.Map{"password": secret.New(pw)}
		conn, err := login(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		conn.Close(ctx)
	}
}

// BenchmarkRotatorApplyVerify is one whole rotation through the rotator:
// Stage + Apply + Verify + Retire.
func BenchmarkRotatorApplyVerify(b *testing.B) {
	e := newEnv(b)
	rot := postgres.New(postgres.Config{})
	for _, st := range []rotator.Strategy{rotator.Alternating, rotator.InPlace} {
		b.Run(string(st), func(b *testing.B) {
			cur := e.alternatingCred(b, "")
			if st == rotator.InPlace {
				cur = e.inPlaceCred(b, "", false)
			}
			r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: st, Grace: time.Hour}
			for b.Loop() {
				cur = r.Run(b, cur)
			}
		})
	}
}
