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
	open   []*fakeConn
	pool   Pool[*fakeConn]
}

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
			if c.broken {
				return errors.New("broken")
			}
			return nil
		},
		LoginKey: func(l fakeLogin) string { return l.Username + "\x00" + l.pw },
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
	s := &fakeServer{}
	v1 := adminLogin("admin/db", 1, "admin", "pw")
	c := s.step(t, v1, errors.New("alter failed"))
	if !c.closed {
		t.Fatal("a connection that saw an error went back to the pool")
	}
	c = s.step(t, v1, nil)
	c.broken = true
	if c2 := s.step(t, v1, nil); c2 == c || !c.closed {
		t.Fatal("a connection that fails its ping was handed out, or left open")
	}
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
	var rels []func(error)
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
