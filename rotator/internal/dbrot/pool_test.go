package dbrot

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
)

// fakeLogin is a login for the pool tests: the Fields of an admin credential
// and a password.
type fakeLogin struct {
	Fields
	pw string
}

// fakeConn is one "connection": which login opened it, and whether it is
// closed or broken.
type fakeConn struct {
	login  string
	closed bool
	broken bool
}

type fakeServer struct {
	mu     sync.Mutex
	logins int
	pings  int
	open   []*fakeConn
	pool   Pool[*fakeConn]
}

// errDead is what a step sees on a connection the server has dropped.
var errDead = errors.New("connection reset by peer")

func (s *fakeServer) driver() Driver[fakeLogin, *fakeConn] {
	return Driver[fakeLogin, *fakeConn]{
		Connect: func(_ context.Context, l fakeLogin) (*fakeConn, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.logins++
			c := &fakeConn{login: l.Username + "/" + l.pw}
			s.open = append(s.open, c)
			return c, nil
		},
		Close: func(c *fakeConn) {
			s.mu.Lock()
			defer s.mu.Unlock()
			c.closed = true
		},
		ClassOf: func(error) rotator.Class { return rotator.ClassUnknown },
		Pool:    &s.pool,
		Ping: func(_ context.Context, c *fakeConn) error {
			s.mu.Lock()
			s.pings++
			s.mu.Unlock()
			if c.broken {
				return errors.New("broken")
			}
			return nil
		},
		LoginKey: func(l fakeLogin) string { return l.Username + "\x00" + l.pw },
		Dead:     func(err error) bool { return errors.Is(err, errDead) },
	}
}

func (s *fakeServer) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.open {
		if !c.closed {
			n++
		}
	}
	return n
}

func adminLogin(id string, version int, user, pw string) fakeLogin {
	l := fakeLogin{Fields: Fields{Username: user}, pw: pw}
	l.admin.id, l.admin.version = id, version
	return l
}

// step takes the admin connection for adm as a rotator step does and ends
// with err.
func (s *fakeServer) step(t *testing.T, adm fakeLogin, err error) *fakeConn {
	t.Helper()
	c, release, cerr := s.driver().Manager(context.Background(), "apply", fakeLogin{}, adm, true, nil)
	if cerr != nil {
		t.Fatal(cerr)
	}
	if c.closed || c.login != adm.Username+"/"+adm.pw {
		t.Fatalf("step got connection %+v for login %s/%s", c, adm.Username, adm.pw)
	}
	release(err)
	return c
}

func TestPoolReusesOnlyTheSameLogin(t *testing.T) {
	s := &fakeServer{}
	v1 := adminLogin("admin/db", 1, "admin", "pw1")
	c1 := s.step(t, v1, nil)
	if c2 := s.step(t, v1, nil); c2 != c1 || s.logins != 1 {
		t.Fatalf("second step: same connection %v, logins %d; want the pooled one and 1 login", c2 == c1, s.logins)
	}
	// Another admin, or the same admin with another password or version,
	// never gets that connection.
	for _, other := range []fakeLogin{
		adminLogin("admin/other", 1, "admin", "pw1"),
		adminLogin("admin/db", 1, "admin", "pw2"),
		adminLogin("admin/db", 2, "admin", "pw1"),
	} {
		if c := s.step(t, other, nil); c == c1 {
			t.Fatalf("login %+v got the connection of admin/db version 1", other)
		}
	}
	// The newer keys of admin/db closed the connections of the older ones.
	if !c1.closed {
		t.Fatal("connection of admin/db version 1 still open after version 2 was used")
	}
}

func TestPoolClosesAfterAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeServer{}
		v1 := adminLogin("admin/db", 1, "admin", "pw")
		c := s.step(t, v1, errors.New("alter failed"))
		if !c.closed {
			t.Fatal("a connection that saw an error went back to the pool")
		}
		c = s.step(t, v1, nil)
		c.broken = true
		time.Sleep(2 * time.Second) // idle past PingIdle: pinged on the way out
		if c2 := s.step(t, v1, nil); c2 == c || !c.closed {
			t.Fatal("a connection that fails its ping was handed out, or left open")
		}
	})
}

// TestPoolPingsOnlyAfterIdle: a connection is pinged on its way out only when
// it has been idle longer than PingIdle (1 s by default), every time when
// PingIdle is negative.
func TestPoolPingsOnlyAfterIdle(t *testing.T) {
	for _, tc := range []struct {
		pingIdle time.Duration
		idle     []time.Duration // before each reuse
		pings    int
	}{
		{0, []time.Duration{0, time.Millisecond, time.Second}, 0},
		{0, []time.Duration{1001 * time.Millisecond, 0, 5 * time.Second}, 2},
		{10 * time.Second, []time.Duration{5 * time.Second, 11 * time.Second}, 1},
		{-1, []time.Duration{0, 0, 0}, 3},
	} {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeServer{}
			s.pool.PingIdle = tc.pingIdle
			v1 := adminLogin("admin/db", 1, "admin", "pw")
			c := s.step(t, v1, nil)
			for _, d := range tc.idle {
				time.Sleep(d)
				if c2 := s.step(t, v1, nil); c2 != c {
					t.Fatal("the pooled connection was not reused")
				}
			}
			if s.pings != tc.pings || s.logins != 1 {
				t.Errorf("PingIdle %v, idle %v: %d pings, %d logins; want %d, 1", tc.pingIdle, tc.idle, s.pings, s.logins, tc.pings)
			}
		})
	}
}

// redoStep is a rotator step run through Redo: it takes the admin connection
// and fails with the error fail gives for it (nil: success).
func (s *fakeServer) redoStep(ctx context.Context, adm fakeLogin, fail func(c *fakeConn, again bool) error) (runs []bool, conns []*fakeConn, err error) {
	d := s.driver()
	_, err = Redo(ctx, func(ctx context.Context, again bool) (struct{}, error) {
		runs = append(runs, again)
		c, release, err := d.Manager(ctx, "apply", fakeLogin{}, adm, true, nil)
		if err != nil {
			return struct{}{}, err
		}
		conns = append(conns, c)
		return struct{}{}, release(fail(c, again))
	})
	return runs, conns, err
}

// TestRedoOnDeadPooledConnection: a step that finds the pooled connection it
// was handed without a ping dead is run once more, on a fresh login; the other
// idle connections of that login are closed. Nothing else is redone: a server
// error, a dead connection that was pinged or freshly opened, a second
// failure, a step whose context has ended.
func TestRedoOnDeadPooledConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := &fakeServer{}
		v1 := adminLogin("admin/db", 1, "admin", "pw")
		killed := map[*fakeConn]bool{}
		fail := func(c *fakeConn, _ bool) error {
			if killed[c] {
				return rotator.Wrap(rotator.ClassTransient, "alter role", errDead)
			}
			return nil
		}
		// Two idle connections; the server kills both.
		d := s.driver()
		c1, rel1, _ := d.Manager(ctx, "apply", fakeLogin{}, v1, true, nil)
		c2, rel2, _ := d.Manager(ctx, "apply", fakeLogin{}, v1, true, nil)
		rel1(nil)
		rel2(nil)
		killed[c1], killed[c2] = true, true
		runs, conns, err := s.redoStep(ctx, v1, fail)
		if err != nil || len(runs) != 2 || !runs[1] || conns[0] != c2 || killed[conns[1]] {
			t.Fatalf("dead pooled connection: err %v, runs %v; want success on the second run (again) with a new connection", err, runs)
		}
		if !c1.closed || !c2.closed || s.logins != 3 {
			t.Fatalf("closed %v %v, logins %d: want both dead connections closed and one new login", c1.closed, c2.closed, s.logins)
		}
		if runs, conns, err := s.redoStep(ctx, v1, fail); err != nil || len(runs) != 1 || conns[0].closed {
			t.Fatalf("after the redo: err %v, runs %v; the redo's connection should be pooled and reused", err, runs)
		}

		// A statement the server refused is returned as it is.
		refused := rotator.Errorf(rotator.ClassPermission, "alter role", "permission denied")
		runs, _, err = s.redoStep(ctx, v1, func(*fakeConn, bool) error { return refused })
		if err != refused || len(runs) != 1 {
			t.Fatalf("refused statement: err %v, runs %d; want it unchanged after one run", err, len(runs))
		}

		// Dead on a connection just opened, or on one that was pinged (idle
		// past PingIdle): no redo, the engine's retry handles it.
		s.pool.Close()
		dead := func(*fakeConn, bool) error { return errDead }
		if runs, _, err := s.redoStep(ctx, v1, dead); !errors.Is(err, errDead) || len(runs) != 1 {
			t.Fatalf("dead fresh connection: err %v, runs %d; want 1 run", err, len(runs))
		}
		c := s.step(t, v1, nil)
		time.Sleep(2 * time.Second)
		if runs, conns, err := s.redoStep(ctx, v1, dead); !errors.Is(err, errDead) || len(runs) != 1 || conns[0] != c {
			t.Fatalf("dead pinged connection: err %v, runs %d; want 1 run on the pinged connection", err, len(runs))
		}

		// At most one redo, and the error that comes out carries no mark.
		s.step(t, v1, nil)
		runs, _, err = s.redoStep(ctx, v1, dead)
		var dc *deadConnError
		if len(runs) != 2 || !errors.Is(err, errDead) || errors.As(err, &dc) {
			t.Fatalf("dead twice: err %v, runs %d; want 2 runs and the plain error", err, len(runs))
		}

		// A step whose context ended is not redone.
		s.step(t, v1, nil)
		cctx, cancel := context.WithCancel(ctx)
		runs, _, err = s.redoStep(cctx, v1, func(*fakeConn, bool) error { cancel(); return errDead })
		if len(runs) != 1 || !errors.Is(err, errDead) {
			t.Fatalf("ended context: err %v, runs %d; want 1 run", err, len(runs))
		}
	})
}

func TestPoolForgetAndClose(t *testing.T) {
	s := &fakeServer{}
	v1 := adminLogin("admin/db", 1, "admin", "pw")
	d := s.driver()
	// A connection handed out before Forget is not taken back after it.
	c, release, err := d.Manager(context.Background(), "apply", fakeLogin{}, v1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.pool.Forget("admin/db")
	release(nil)
	if !c.closed {
		t.Fatal("connection handed out before Forget went back to the pool")
	}
	s.step(t, v1, nil)
	s.step(t, adminLogin("admin/x", 1, "x", "pw"), nil)
	s.pool.Forget("admin/db")
	if n := s.openConns(); n != 1 {
		t.Fatalf("after Forget: %d open, want 1 (admin/x)", n)
	}
	s.pool.Close()
	if n := s.openConns(); n != 0 {
		t.Fatalf("after Close: %d open, want 0", n)
	}
	s.step(t, v1, nil) // still usable
}

func TestPoolBounded(t *testing.T) {
	s := &fakeServer{}
	s.pool.MaxIdle = 2
	d := s.driver()
	v1 := adminLogin("admin/db", 1, "admin", "pw")
	var rels []func(error) error
	for range 4 { // four steps at once
		_, rel, err := d.Manager(context.Background(), "apply", fakeLogin{}, v1, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	for _, rel := range rels {
		rel(nil)
	}
	if _, _, idle := s.pool.Stats(); idle != 2 || s.openConns() != 2 {
		t.Fatalf("idle %d, open %d; want 2 and 2", idle, s.openConns())
	}
	s.pool.MaxIdle = -1
	s.pool.Close()
	s.step(t, v1, nil)
	if s.openConns() != 0 {
		t.Fatal("a disabled pool kept a connection")
	}
}

func TestPoolIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeServer{}
		s.pool.IdleTimeout = time.Minute
		v1 := adminLogin("admin/db", 1, "admin", "pw")
		s.step(t, v1, nil)
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if s.openConns() != 1 {
			t.Fatal("closed before the idle timeout")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s.openConns() != 0 {
			t.Fatal("still open after the idle timeout")
		}
	})
}
