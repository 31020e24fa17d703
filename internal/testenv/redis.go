package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server on 127.0.0.1. The "default" user has
// AdminPassword and every permission.
type RedisServer struct {
	Host          string
	Port          int
	AdminUser     string
	AdminPassword string
	// ACLFile is the server's ACL file, "" when started without one.
	ACLFile string

	bin  string
	dir  string
	cmd  *exec.Cmd
	done <-chan error
}

// Redis starts `redis-server --port FREE --bind 127.0.0.1 --save ""` in a
// temporary directory, with `--aclfile FILE` when withACLFile is true, and
// stops it at the end of the test.
func Redis(t testing.TB, withACLFile bool) *RedisServer {
	t.Helper()
	bin := os.Getenv("NEBULA_TEST_REDIS_SERVER")
	if bin == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			unavailable(t, "redis-server not found in PATH (install redis-server)")
		}
		bin = p
	}
	r := &RedisServer{Host: "127.0.0.1", AdminUser: "default", AdminPassword: UniqueName("redis-admin-"),
		bin: bin, dir: t.TempDir()}
	if withACLFile {
		r.ACLFile = filepath.Join(r.dir, "users.acl")
		sum := sha256.Sum256([]byte(r.AdminPassword))
		line := "user default on #" + hex.EncodeToString(sum[:]) + " ~* &* +@all\n"
		if err := os.WriteFile(r.ACLFile, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// FreePort's port may be taken before redis-server binds it (another
	// test process, an outgoing connection): then try another one.
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r.Port = port
		err = r.start()
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("testenv: %v", err)
		}
	}
	t.Cleanup(r.Stop)
	return r
}

// Addr is host:port.
func (r *RedisServer) Addr() string { return joinHostPort(r.Host, r.Port) }

func (r *RedisServer) start() error {
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"), "--daemonize", "no"}
	if r.ACLFile != "" {
		args = append(args, "--aclfile", r.ACLFile)
	} else {
		args = append(args, "--requirepass", r.AdminPassword)
	}
	cmd := exec.Command(r.bin, args...)
	done, err := startOwned(cmd, syscall.SIGKILL)
	if err != nil {
		return fmt.Errorf("start redis-server: %v", err)
	}
	r.cmd, r.done = cmd, done
	deadline := time.Now().Add(time.Minute) // generous: a loaded machine is slow
	for {
		c := r.client(r.AdminUser, r.AdminPassword)
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return nil
		}
		select {
		case werr := <-done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.cmd = nil
			return fmt.Errorf("redis-server exited: %v\n%s", werr, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Stop()
			return errors.New("redis-server did not answer PING within a minute")
		}
	}
}

// Stop kills the server (SIGKILL: nothing is saved on the way out).
func (r *RedisServer) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Restart stops the server and starts it again on the same port with the same
// files, as a crash and restart would.
func (r *RedisServer) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

func (r *RedisServer) client(user, password string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr(), Username: user, Password: password,
		DisableIdentity: true, MaxRetries: -1, PoolSize: 1, DialTimeout: 2 * time.Second})
}

// Client returns an administrator client closed at the end of the test.
func (r *RedisServer) Client(t testing.TB) *redis.Client {
	c := r.client(r.AdminUser, r.AdminPassword)
	t.Cleanup(func() { c.Close() })
	return c
}

// Do runs one command as the administrator and fails the test on error.
func (r *RedisServer) Do(t testing.TB, args ...any) any {
	t.Helper()
	c := r.client(r.AdminUser, r.AdminPassword)
	defer c.Close()
	v, err := c.Do(context.Background(), args...).Result()
	if err != nil {
		t.Fatalf("testenv: redis %v: %v", args[0], err)
	}
	return v
}
