package mysql_test

import (
	"context"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
)

func consumers() *testenv.Consumers[rotator.Credential] {
	return &testenv.Consumers[rotator.Credential]{Workers: 8, QueriesPerConn: 20,
		Open: func(ctx context.Context, c rotator.Credential) (func(context.Context) error, func(), error) {
			conn, done, err := login(ctx, c)
			if err != nil {
				return nil, nil, err
			}
			q := func(ctx context.Context) error { _, err := conn.ExecContext(ctx, "SELECT 1"); return err }
			return q, done, nil
		}}
}

// Zero downtime for dual and alternating: 50 rotations under load, not one
// failed login or query.
func TestLoadZeroDowntime(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating} {
		t.Run(string(st), func(t *testing.T) {
			cur := e.single(t, "", true)
			if st == rotator.Alternating {
				cur = e.pair(t, "")
			}
			load := dbrottest.Load{Name: "mariadb " + string(st), Consumers: consumers(), Rotations: 50, Warmup: time.Second}
			load.ZeroDowntime(t, dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: st, Grace: time.Minute}, cur)
		})
	}
}

// In place cannot be zero-downtime: measure how long logins with the old
// password fail (Apply until the new version is published) and how many do.
// Open sessions never fail.
func TestLoadInPlaceFailureWindow(t *testing.T) {
	e := newEnv(t)
	load := dbrottest.Load{Name: "mariadb in_place", Consumers: consumers(), Rotations: 20, Warmup: 300 * time.Millisecond}
	load.FailureWindow(t, dbrottest.Rotation{Rotator: myrot.New(myrot.Config{}), Resolver: e.res, Strategy: rotator.InPlace},
		e.single(t, "", false), 30*time.Millisecond)
}
