package mysql_test

import (
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
)

// A second Apply of the same pending version changes nothing and says so.
func TestApplyTwiceSkips(t *testing.T) {
	e := newEnv(t)
	rot := myrot.New(myrot.Config{})
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating, rotator.InPlace} {
		t.Run(string(st), func(t *testing.T) {
			cur := e.single(t, "", true)
			if st == rotator.Alternating {
				cur = e.pair(t, "")
			}
			pend := stage(t, rot, e.res, cur, st)
			dbrottest.ApplyTwice(t, rot, rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, Resolver: e.res})
			if st != rotator.InPlace && !authenticates(t, cur) {
				t.Fatal("a repeated apply pushed out the current password")
			}
		})
	}
}
