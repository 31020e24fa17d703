// Command httpget measures GET of one credential through the real server
// (token check, rate limiter, grants, SQLite read, decryption, JSON, and the
// audit entry written — group-committed — before the answer) against a bare
// net/http handler serving the same bytes from memory, in the same process
// and run, at several client concurrencies.
//
//	go run ./bench/httpget                      # 1, 8, 32 clients, 3 rounds of 1 s each
//	go run ./bench/httpget -d 3s -rounds 5 -c 1,8,32,64 -reveal=false
//
// Goal: the server reaches at least 50% of the bare handler's requests per
// second at 32 clients.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

var serverOnly bool

func main() {
	dur := flag.Duration("d", time.Second, "measured duration of each round of each case")
	warm := flag.Duration("warmup", 300*time.Millisecond, "warm-up of each round")
	rounds := flag.Int("rounds", 3, "rounds per case, bare and server alternating; the median round is reported")
	levels := flag.String("c", "1,8,32", "client concurrencies")
	reveal := flag.Bool("reveal", true, "GET with ?reveal=true (secret values, audited as reveals)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.BoolVar(&serverOnly, "server-only", false, "skip the bare handler's rounds (for profiling the server alone)")
	blockprofile := flag.String("blockprofile", "", "write a blocking profile of the whole run to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file")
	flag.Parse()
	if *memprofile != "" {
		defer func() {
			f, err := os.Create(*memprofile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}()
	}
	if *blockprofile != "" {
		runtime.SetBlockProfileRate(10_000) // one sample per 10 µs blocked
		defer func() {
			f, err := os.Create(*blockprofile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.Lookup("block").WriteTo(f, 0)
			f.Close()
		}()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*dur, *warm, *rounds, *levels, *reveal); err != nil {
		log.Print(err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(dur, warm time.Duration, rounds int, levels string, reveal bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nebula-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "bench.db"))
	if err != nil {
		return err
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "bench.key"), Create: true})
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := m.Put(ctx, "bench/db/orders", credential.PutRequest{
		Type:   credential.Postgres,
		Fields: map[string]any{"host": "db.internal", "port": 5432, "username": "orders_app", "database": "orders"},
		Secret: secret.FromStrings(map[string]string{"password": "9b1f0c2e7a4d4e1f8c3b6a5d2e9f0a1b"}),
	}); err != nil {
		return err
	}
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "bench", Grants: []acl.Grant{{Permission: acl.Read, Prefix: "bench"}}})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Manager: m, RateLimit: rate.Inf})
	if err != nil {
		return err
	}
	defer srv.Close()
	apiURL, stopAPI, err := listen(srv)
	if err != nil {
		return err
	}
	defer stopAPI()
	path := "/v1/credentials/bench/db/orders"
	if reveal {
		path += "?reveal=true"
	}
	// The bare handler serves exactly the bytes the API answers.
	body, err := fetch(apiURL+path, tok.Reveal())
	if err != nil {
		return err
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	bareURL, stopBare, err := listen(bare)
	if err != nil {
		return err
	}
	defer stopBare()
	before, _ := audit.Verify(ctx, st, nil)

	fmt.Printf("GET %s (%d-byte answer); per case %d rounds of %s after %s warm-up, bare and server alternating, median round shown; GOMAXPROCS=%d\n\n", path, len(body), rounds, dur, warm, numCPU())
	fmt.Printf("%8s  %-6s  %10s  %9s  %9s  %9s\n", "clients", "target", "req/s", "p50", "p99", "cpu/req")
	var ratios []string
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad concurrency %q", f)
		}
		var as, bs []result
		for range max(1, rounds) {
			if !serverOnly {
				bs = append(bs, load(bareURL+path, "", n, dur, warm))
			} else {
				bs = append(bs, result{rps: 1})
			}
			as = append(as, load(apiURL+path, tok.Reveal(), n, dur, warm))
		}
		a, b := median(as), median(bs)
		if a.errors > 0 || b.errors > 0 {
			return fmt.Errorf("%d clients: %d API and %d bare errors", n, a.errors, b.errors)
		}
		fmt.Printf("%8d  %-6s  %10.0f  %9s  %9s  %9s\n", n, "bare", b.rps, b.p50, b.p99, b.cpu)
		fmt.Printf("%8d  %-6s  %10.0f  %9s  %9s  %9s\n", n, "server", a.rps, a.p50, a.p99, a.cpu)
		ratios = append(ratios, fmt.Sprintf("%d clients: %.0f%%", n, 100*a.rps/b.rps))
	}
	after, err := audit.Verify(ctx, st, nil)
	if err != nil {
		return fmt.Errorf("audit chain after the run: %w", err)
	}
	fmt.Printf("\nserver / bare: %s\n", strings.Join(ratios, ", "))
	fmt.Printf("audit entries written during the run: %d (chain verified)", after-before)
	if c, _ := st.GroupStats(); c > 0 {
		fmt.Printf(", in %d commits", c)
	}
	fmt.Println()
	return nil
}

func numCPU() int {
	return runtimeGOMAXPROCS()
}

func listen(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go s.Serve(ln)
	return "http://" + ln.Addr().String(), func() { s.Close() }, nil
}

func fetch(url, token string) ([]byte, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", url, res.StatusCode, b)
	}
	return b, err
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	cpu      time.Duration // process CPU (user+system) per request, clients included
	errors   int
}

// load runs n clients in a closed loop for warm+dur and measures the last dur.
func load(url, token string, n int, dur, warm time.Duration) result {
	tr := &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	start := time.Now()
	measureFrom := start.Add(warm)
	end := measureFrom.Add(dur)
	// The process CPU at the start and the end of the measured span, read
	// by one goroutine and waited for below (the clients may all be done
	// before a late timer fires, which left the figure at 0).
	var cpuFrom, cpuTo time.Duration
	cpuDone := make(chan struct{})
	go func() {
		time.Sleep(time.Until(measureFrom))
		cpuFrom = cpuTime()
		time.Sleep(time.Until(end))
		cpuTo = cpuTime()
		close(cpuDone)
	}()
	var (
		mu     sync.Mutex
		lats   []time.Duration
		errors int
		wg     sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			errs := 0
			req, _ := http.NewRequest("GET", url, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			for {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				res, err := hc.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue
				}
				if err != nil {
					errs++
					continue
				}
				mine = append(mine, t1.Sub(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	<-cpuDone
	slices.Sort(lats)
	r := result{errors: errors, rps: float64(len(lats)) / dur.Seconds()}
	if len(lats) > 0 && cpuTo > cpuFrom {
		r.cpu = (cpuTo - cpuFrom) / time.Duration(len(lats))
	}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2].Round(time.Microsecond)
		r.p99 = lats[len(lats)*99/100].Round(time.Microsecond)
	}
	return r
}

// median returns the round with the median rate (errors summed over rounds).
func median(rs []result) result {
	errs := 0
	for _, r := range rs {
		errs += r.errors
	}
	slices.SortFunc(rs, func(a, b result) int {
		switch {
		case a.rps < b.rps:
			return -1
		case a.rps > b.rps:
			return 1
		}
		return 0
	})
	m := rs[len(rs)/2]
	m.errors = errs
	return m
}
