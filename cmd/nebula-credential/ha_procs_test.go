package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// Helpers for tests that run several `serve` processes of the built binary on
// one PostgreSQL store, SIGKILL them and restart them (ha_soak_test.go,
// ha_restart_test.go).

// haCluster is a store shared by serve processes started with start.
type haCluster struct {
	t       *testing.T
	bin     string
	dir     string
	dsn     string
	keyFile string
	token   string
	hc      *http.Client

	mu    sync.Mutex
	procs []*haProc
	n     int
}

// haProc is one running serve process.
type haProc struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	log  string // its stderr
	done chan struct{}
}

// built is the binary built once per test run by buildBinary.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// removeBuilt runs the tests and then removes the binary they built.
type removeBuilt struct{ m *testing.M }

func (r removeBuilt) Run() int {
	defer func() {
		if built.dir != "" {
			os.RemoveAll(built.dir)
		}
	}()
	return r.m.Run()
}

// buildBinary builds this command once per test run (removed at its end).
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "nebula-ha-test-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "nebula-credential")
		build := exec.Command("go", "build", "-o", built.bin, ".")
		build.Stderr = os.Stderr
		built.err = build.Run()
	})
	if built.err != nil {
		t.Fatalf("go build: %v", built.err)
	}
	return built.bin
}

// newHACluster builds the binary, initialises the store at dsn (a new root
// key, an admin token) and lets setup add credentials through an in-process
// manager before any serve starts.
func newHACluster(t *testing.T, dsn string, setup func(ctx context.Context, m *credential.Manager)) *haCluster {
	t.Helper()
	dir := t.TempDir()
	// Small pools: several clusters run beside other packages' tests on one
	// PostgreSQL server, whose max_connections (100) they must share.
	dsn = testenv.WithPoolMaxConns(dsn, 6)
	c := &haCluster{t: t, bin: buildBinary(t), dir: dir, dsn: dsn, keyFile: filepath.Join(dir, "root.key"),
		hc: &http.Client{Timeout: 2 * time.Minute}}
	ctx := context.Background()
	m := c.open(true)
	if setup != nil {
		setup(ctx, m)
	}
	_, tok, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	c.token = tok.Reveal()
	m.Close()
	t.Cleanup(func() {
		c.stopAll()
		if t.Failed() {
			c.dumpLogs()
		}
	})
	return c
}

// open opens an in-process manager on the store (no scheduler running).
func (c *haCluster) open(create bool) *credential.Manager {
	c.t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, c.dsn)
	if err != nil {
		c.t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: c.keyFile, Create: create, Rotators: rotators()})
	if err != nil {
		st.Close()
		c.t.Fatal(err)
	}
	return m
}

// start starts one more serve process and waits until it listens.
func (c *haCluster) start(extra ...string) *haProc {
	c.t.Helper()
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	addrFile := filepath.Join(c.dir, fmt.Sprintf("addr-%d", n))
	logPath := filepath.Join(c.dir, fmt.Sprintf("serve-%d.log", n))
	logf, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{"serve", "--store", c.dsn, "--key-file", c.keyFile, "--addr", "127.0.0.1:0", "--addr-file", addrFile,
		"--rate-limit", "0", "--log-level", "warn", "--shutdown-timeout", "1s"}
	cmd := exec.Command(c.bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "NEBULA_CREDENTIAL_PASSPHRASE=")
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	logf.Close()
	p := &haProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil && !strings.Contains(err.Error(), "killed") {
			if f, ferr := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0); ferr == nil {
				fmt.Fprintf(f, "serve exited: %v\n", err)
				f.Close()
			}
		}
		close(p.done)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			p.base = strings.TrimSpace(string(b))
			break
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			c.t.Fatalf("serve exited before listening: %s", b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			c.t.Fatal("serve did not write its address")
		}
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// kill SIGKILLs the process and waits until it is gone.
func (p *haProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// dumpLogs prints the end of every serve log (logs never hold secrets).
func (c *haCluster) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(c.dir, "serve-*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		c.t.Logf("%s:\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
}

func (c *haCluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		p.kill()
	}
	c.procs = nil
}

// apiResult is one API answer; body is never printed when it may hold a secret.
type apiResult struct {
	status     int
	retryAfter string
	code       string // error code of an error answer
	body       []byte
}

// do sends one request with the admin token. err is a transport error (the
// process is gone, the connection was reset).
func (c *haCluster) do(ctx context.Context, method, url string, body any) (apiResult, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return apiResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return apiResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResult{}, err
	}
	r := apiResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: b}
	if r.status >= 400 {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		r.code = e.Error.Code
	}
	return r, nil
}

// waitReady waits until p's /readyz answers want (one generous deadline).
func (c *haCluster) waitReady(p *haProc, want int) time.Duration {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	last := ""
	for {
		r, err := c.do(context.Background(), "GET", p.base+"/readyz", nil)
		if err == nil && r.status == want {
			return time.Since(start)
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", r.status, r.body)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s/readyz never answered %d (last: %s)", p.base, want, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
