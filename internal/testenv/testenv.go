// Package testenv starts and hands out the real servers that the rotator tests
// talk to: a throwaway PostgreSQL cluster with password authentication
// (Postgres), the machine's MariaDB with throwaway users (MariaDB), and a
// private redis-server with or without an ACL file (Redis). Proxy sits between
// a client and a server so a test can close the port mid-rotation.
//
// A package whose tests use Postgres must run them through Main:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// so the shared cluster is stopped when the tests end. Servers are also started
// with a parent-death signal, so a test binary killed by a timeout leaves no
// server behind.
//
// With CI=true in the environment a missing binary or server fails the test;
// otherwise the test is skipped with the reason.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

// Main runs the package's tests and then stops every shared server the tests
// started (the PostgreSQL cluster).
func Main(m *testing.M) {
	code := m.Run()
	stopShared()
	os.Exit(code)
}

var (
	sharedMu    sync.Mutex
	sharedStops []func()
)

func onExit(f func()) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	sharedStops = append(sharedStops, f)
}

func stopShared() {
	sharedMu.Lock()
	stops := sharedStops
	sharedStops = nil
	sharedMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// CI reports whether missing servers must fail the tests (env CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// unavailable fails the test under CI and skips it otherwise.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("testenv (CI=true, so this is a failure): %s", msg)
	}
	t.Skipf("testenv: %s", msg)
}

// UniqueName returns prefix followed by 12 random hex digits.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startOwned starts cmd so that it receives sig when this process dies.
// Linux sends the parent-death signal when the *thread* that forked the child
// exits, so the fork happens on a goroutine locked to its thread that lives as
// long as the child does. The returned channel yields cmd.Wait's result.
func startOwned(cmd *exec.Cmd, sig syscall.Signal) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
	cmd.SysProcAttr.Setpgid = true
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

func joinHostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var port int
	if _, err := fmt.Sscan(p, &port); err != nil {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return h, port, nil
}
