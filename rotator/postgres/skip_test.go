package postgres_test

import (
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
)

// A second Apply of the same pending version changes no password and says so.
func TestApplyTwiceSkips(t *testing.T) {
	e := newEnv(t)
	rot := postgres.New(postgres.Config{})
	for _, st := range []rotator.Strategy{rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			cur := e.alternatingCred(t, "")
			if st == rotator.InPlace {
				cur = e.inPlaceCred(t, "", false)
			}
			pend := stage(t, rot, e.res, cur, st)
			dbrottest.ApplyTwice(t, rot, rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, GraceEndsAt: time.Now().Add(time.Hour), Resolver: e.res})
		})
	}
}
