package testenv

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Outages: a private PostgreSQL cluster and a private redis-server can be
// stopped and started again on the same port (a restart, a failover) or frozen
// with SIGSTOP (a server that accepts connections and never answers). The
// Proxy closes or blackholes any target.

// PrivatePostgres starts a cluster of the test's own (not the package's shared
// one), so the test may stop or freeze it; it is stopped at the end of the
// test. Its superuser and host authentication are those of Postgres.
func PrivatePostgres(t testing.TB) *PG {
	t.Helper()
	pg, missing, err := startPostgres()
	if err != nil {
		if missing {
			unavailable(t, "%v", err)
		}
		t.Fatalf("testenv: start postgres: %v", err)
	}
	t.Cleanup(func() {
		pg.Thaw()
		pg.stop()
	})
	return pg
}

// Addr is host:port.
func (p *PG) Addr() string { return joinHostPort(p.Host, p.Port) }

// Down stops the cluster at once (immediate shutdown: every connection is
// cut, as a crash would), and waits until it has exited. Start brings it back.
func (p *PG) Down(t testing.TB) {
	t.Helper()
	p.down(t, syscall.SIGQUIT)
}

// DownFast stops the cluster as `pg_ctl stop -m fast` does (SIGINT to the
// postmaster): every session is told the server is shutting down (57P01) and
// closed, the cluster checkpoints and exits. It waits until it has exited;
// Start brings it back.
func (p *PG) DownFast(t testing.TB) {
	t.Helper()
	p.down(t, syscall.SIGINT)
}

func (p *PG) down(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		t.Fatal("testenv: Down: the cluster is not running")
	}
	p.Thaw()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

// Start starts a cluster stopped by Down again, on the same port with the same
// data, and waits until it accepts connections.
func (p *PG) Start(t testing.TB) {
	t.Helper()
	if p.bin == "" {
		t.Fatal("testenv: Start: only a PrivatePostgres cluster can be started again")
	}
	if p.cmd != nil {
		t.Fatal("testenv: Start: the cluster is running")
	}
	n, _, err := startPostgresOn(p.bin, p.base, p.data, p.cred, p.Port)
	if err != nil {
		t.Fatalf("testenv: start postgres again on port %d: %v", p.Port, err)
	}
	p.cmd, p.done = n.cmd, n.done
}

// Freeze stops every process of the cluster with SIGSTOP: the port still
// accepts connections but nothing answers. Thaw resumes it.
func (p *PG) Freeze() {
	if p.cmd != nil && p.cmd.Process != nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP)
	}
}

// Thaw resumes a frozen cluster (SIGCONT); it does nothing to a running one.
func (p *PG) Thaw() {
	if p.cmd != nil && p.cmd.Process != nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
	}
}

// WaitReady waits (under one generous deadline) until the cluster accepts a
// superuser login, e.g. after Thaw.
func (p *PG) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, p.DSN())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: postgres at %s not ready: %v", p.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Freeze stops the server with SIGSTOP: the port still accepts connections
// but nothing answers. Thaw resumes it.
func (r *RedisServer) Freeze() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (r *RedisServer) Thaw() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Start starts a server stopped by Stop again on the same port with the same
// files (the ACL file holds every saved change).
func (r *RedisServer) Start(t testing.TB) {
	t.Helper()
	if r.cmd != nil {
		t.Fatal("testenv: Start: redis-server is running")
	}
	if err := r.start(); err != nil {
		t.Fatalf("testenv: start redis-server again on port %d: %v", r.Port, err)
	}
}

// String names the server for test output.
func (r *RedisServer) String() string { return fmt.Sprintf("redis-server %s", r.Addr()) }
