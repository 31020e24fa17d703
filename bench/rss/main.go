// Command rss measures the resident memory of a real `nebula-credential
// serve` process: idle after start, and its peak while n clients PUT and GET
// (revealed) generic credentials through the API over HTTP.
//
//	go build -o /tmp/nc ./cmd/nebula-credential
//	go run ./bench/rss -bin /tmp/nc                 # 32 clients, 1,000 keys, 10 s
//	go run ./bench/rss -bin /tmp/nc -c 64 -d 30s
//
// Goal (issue 15): about 20 MB idle, under 40 MB under load. Linux only
// (reads /proc/PID/status).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	bin := flag.String("bin", "nebula-credential", "the nebula-credential binary to measure")
	clients := flag.Int("c", 32, "concurrent clients")
	keys := flag.Int("keys", 1000, "distinct credentials written and read")
	dur := flag.Duration("d", 10*time.Second, "duration of the load")
	idle := flag.Duration("idle", 3*time.Second, "wait before the idle reading")
	flag.Parse()
	if err := run(*bin, *clients, *keys, *dur, *idle); err != nil {
		log.Fatal(err)
	}
}

func run(bin string, clients, keys int, dur, idle time.Duration) error {
	dir, err := os.MkdirTemp("", "nebula-rss-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addrFile := filepath.Join(dir, "addr")
	cmd := exec.Command(bin, "serve", "--store", filepath.Join(dir, "creds.db"),
		"--addr", "127.0.0.1:0", "--addr-file", addrFile, "--log-level", "warn",
		// The load is one token; at 32 clients it can pass the default
		// limit of 1,000 requests/s, and refused requests would lower the
		// memory measured.
		"--rate-limit", "0")
	cmd.Stderr = io.Discard // the first run prints the admin token there
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	var addr string
	for deadline := time.Now().Add(2 * time.Minute); addr == ""; {
		if b, err := os.ReadFile(addrFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			addr = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s serve did not write %s", bin, addrFile)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		return err
	}
	token := strings.TrimSpace(string(tok))
	pid := cmd.Process.Pid
	time.Sleep(idle)
	idleRSS, _, err := rss(pid)
	if err != nil {
		return err
	}
	fmt.Printf("idle: RSS %.1f MB (%s)\n", idleRSS, split(pid))

	base := strings.TrimSuffix(addr, "/") + "/v1/credentials/rss/key"
	if !strings.Contains(addr, "://") {
		base = "http://" + base
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var pairs, failures atomic.Int64
	var firstErr atomic.Value
	var peak atomic.Int64
	go func() {
		for ctx.Err() == nil {
			if cur, _, err := rss(pid); err == nil && int64(cur*1000) > peak.Load() {
				peak.Store(int64(cur * 1000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i += clients {
				url := fmt.Sprintf("%s%04d", base, i%keys)
				body := fmt.Sprintf(`{"type":"generic","secret":{"value":"v-%d"}}`, i)
				err := do(ctx, client, "PUT", url, token, body)
				if err == nil {
					err = do(ctx, client, "GET", url+"?reveal=true", token, "")
				}
				if err != nil {
					if ctx.Err() == nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				pairs.Add(1)
			}
		}()
	}
	wg.Wait()
	cur, hwm, err := rss(pid)
	if err != nil {
		return err
	}
	fmt.Printf("load: %d clients, %d keys, %s: %d PUT+GET pairs (%.0f/s), %d failures\n",
		clients, keys, dur, pairs.Load(), float64(pairs.Load())/dur.Seconds(), failures.Load())
	fmt.Printf("load: RSS peak sampled %.1f MB, VmHWM %.1f MB, after %.1f MB (%s)\n", float64(peak.Load())/1000, hwm, cur, split(pid))
	if failures.Load() > 0 {
		return fmt.Errorf("%d requests failed, the first: %v", failures.Load(), firstErr.Load())
	}
	return nil
}

func do(ctx context.Context, c *http.Client, method, url, token, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("%s: %s: %s", method, resp.Status, b)
	}
	return nil
}

// rss returns VmRSS and VmHWM of pid, in MB.
func rss(pid int) (cur, hwm float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1000
		case "VmHWM:":
			hwm = kb / 1000
		}
	}
	return cur, hwm, nil
}

// split describes what the resident memory of pid is: anonymous (heap,
// stacks, SQLite's page caches) or file-backed (mostly the binary's own code
// and read-only data, paged in from the page cache and shared with it).
func split(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	var anon, file float64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb / 1000
		case "RssFile:":
			file = kb / 1000
		}
	}
	return fmt.Sprintf("anonymous %.1f MB, file-backed %.1f MB", anon, file)
}
