package mysql_test

import (
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot/dbrottest"
	myrot "github.com/nebula-credential/nebula-credential/rotator/mysql"
)

// TestAdminPoolKilledConnection: the server kills the pooled admin session
// between two rotations (KILL). The next step takes that connection without a
// ping, finds it dead, and is redone once on a fresh admin login: the
// rotation succeeds and every credential logs in. Dual on the first attempt:
// the redo must check whether the first run got through (a second RETAIN on
// MySQL would push the current password out).
func TestAdminPoolKilledConnection(t *testing.T) {
	for _, st := range []rotator.Strategy{rotator.Dual, rotator.Alternating} {
		t.Run(string(st), func(t *testing.T) {
			e := newEnv(t)
			rot := myrot.New(myrot.Config{AdminPingIdle: time.Hour}) // never pinged: the redo must cover it
			defer rot.Close()
			var cur rotator.Credential
			if st == rotator.Dual {
				cur = e.single(t, "", true)
			} else {
				cur = e.pair(t, "")
			}
			r := dbrottest.Rotation{Rotator: rot, Resolver: e.res, Strategy: st, Grace: time.Hour}
			cur = r.Run(t, cur)

			db := e.db.DB(t)
			rows, err := db.Query("SELECT id FROM information_schema.processlist WHERE user = ?", e.admin)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			rows.Close()
			if len(ids) != 1 {
				t.Fatalf("%d admin sessions, want the one pooled", len(ids))
			}
			if _, err := db.Exec("KILL CONNECTION ?", ids[0]); err != nil {
				t.Fatal(err)
			}

			ctx := dbrottest.Ctx(t)
			pend := dbrottest.Stage(t, rot, e.res, cur, st)
			req := rotator.ApplyRequest{Current: cur, Pending: pend, Strategy: st, Resolver: e.res, FirstAttempt: true, GraceEndsAt: time.Now().Add(time.Hour)}
			if _, err := rot.Apply(ctx, req); err != nil {
				t.Fatalf("apply after the kill: %v", err)
			}
			if !authenticates(t, pend) {
				t.Fatal("pending version does not log in after apply")
			}
			if st == rotator.Dual && !authenticates(t, cur) {
				t.Fatal("current version stopped logging in during a dual apply")
			}
			if _, err := rot.Retire(ctx, rotator.RetireRequest{Old: cur, Current: pend, Strategy: st, Resolver: e.res}); err != nil {
				t.Fatalf("retire: %v", err)
			}
			if !authenticates(t, pend) || !authenticates(t, e.res[e.adminID]) {
				t.Fatal("current version or admin does not log in after the rotation")
			}
			r.Run(t, pend) // and the pool works on
		})
	}
}
