package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
)

func consumers() *testenv.Consumers[rotator.Credential] {
	return &testenv.Consumers[rotator.Credential]{Workers: 4, QueriesPerConn: 50,
		Open: func(ctx context.Context, c rotator.Credential) (func(context.Context) error, func(), error) {
			conn, err := login(ctx, c)
			if err != nil {
				return nil, nil, err
			}
			q := func(ctx context.Context) error { _, err := conn.Exec(ctx, "SELECT 1"); return err }
			return q, func() { conn.Close(context.Background()) }, nil
		}}
}

// Zero downtime: consumers keep logging in and querying with the latest
// credential while the rotator rotates 50 times; not one login or query fails.
func TestLoadAlternating(t *testing.T) {
	e := newEnv(t)
	n := 50
	if raceEnabled {
		n = 20
	}
	load := dbrottest.Load{Name: "postgres alternating", Consumers: consumers(), Rotations: n, Warmup: 1500 * time.Millisecond}
	load.ZeroDowntime(t, dbrottest.Rotation{Rotator: postgres.New(postgres.Config{}), Resolver: e.res,
		Strategy: rotator.Alternating, Grace: time.Minute}, e.alternatingCred(t, ""))
}

// In place cannot be zero-downtime: measure how long logins with the old
// password fail (Apply until the new version is published) and how many do.
// Open sessions never fail.
func TestLoadInPlaceFailureWindow(t *testing.T) {
	e := newEnv(t)
	load := dbrottest.Load{Name: "postgres in_place", Consumers: consumers(), Rotations: 20, Warmup: 500 * time.Millisecond}
	load.FailureWindow(t, dbrottest.Rotation{Rotator: postgres.New(postgres.Config{}), Resolver: e.res, Strategy: rotator.InPlace},
		e.inPlaceCred(t, "", false), 50*time.Millisecond)
}
