// Command ha measures real `nebula-credential serve` processes on one
// PostgreSQL store (1 and 3 instances) beside the SQLite store, in the same
// run, configurations interleaved round by round:
//
//   - concurrent rotations: POST /v1/rotate/{id} with {"grace":0} (so each
//     rotation runs to retired before it answers) from -c clients on -creds
//     generic credentials; rotations/s and every status other than 2xx. Only
//     409 is allowed besides 2xx;
//   - API reads: GET /v1/credentials/{id}?reveal=true from -read-c clients;
//   - watch latency: a PUT on instance A, acknowledged, to its event on a
//     GET /v1/watch stream on instance B (cross-instance: LISTEN/NOTIFY) and
//     on instance A itself (same-instance baseline), plus the SQLite store's
//     same-instance latency; p50/p95/p99/max over -changes changes.
//
// Clients of the 3-instance configuration are spread round-robin over the
// instances. Ratios reported: PG1/SQLite and PG3/PG1 (per round, median
// shown). On a 2-core machine the point of 3 instances is that nothing fails,
// not a speed-up: the instances and PostgreSQL share the same two cores.
//
//	go run ./bench/ha                                  # builds the server, 3 rounds of 3 s, 500 watch changes
//	go run ./bench/ha -bin /tmp/nc -rounds 5 -d 5s -json
//	go run ./bench/ha -pg 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' -changes 1000
//
// Each run creates a schema of its own per PostgreSQL configuration
// (nc_bench_<random>_pg1, ..._pg3) in the -pg database and drops it at the
// end; the SQLite store and the key files live in a temporary directory.
// Goal (issue 14): cross-instance watch p99 within 100 ms.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

type options struct {
	bin, pg                  string
	creds, clients, readC    int
	dur, warm                time.Duration
	rounds, changes          int
	jsonOut, verify, keepLog bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "the nebula-credential binary (default: go build ./cmd/nebula-credential into a temporary directory)")
	flag.StringVar(&o.pg, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL database to create the benchmark's schemas in (dropped at the end)")
	flag.IntVar(&o.creds, "creds", 64, "generic credentials per store")
	flag.IntVar(&o.clients, "c", 32, "concurrent rotation clients")
	flag.IntVar(&o.readC, "read-c", 32, "concurrent GET clients")
	flag.DurationVar(&o.dur, "d", 3*time.Second, "measured duration of each round of each case")
	flag.DurationVar(&o.warm, "warmup", 500*time.Millisecond, "warm-up before each measured round")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds (0: watch latency only); the configurations take turns within each round, in a rotating order")
	flag.IntVar(&o.changes, "changes", 500, "changes timed for watch latency (0: skip)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as JSON")
	flag.BoolVar(&o.verify, "verify", true, "verify every store's audit chain at the end (GET /v1/audit/verify)")
	flag.BoolVar(&o.keepLog, "keep", false, "keep the temporary directory (server logs) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./bench/ha [flags]\n\nExamples:\n"+
			"  go run ./bench/ha\n  go run ./bench/ha -bin /tmp/nc -rounds 5 -d 5s -json\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if o.creds < 1 || o.clients < 1 || o.readC < 1 || o.rounds < 0 || o.changes < 0 {
		log.Fatal("-creds, -c and -read-c must be at least 1, -rounds and -changes at least 0")
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

// Report is the -json output.
type Report struct {
	LoadAvgStart string             `json:"loadavg_start"`
	LoadAvgEnd   string             `json:"loadavg_end"`
	CPUs         int                `json:"cpus"`
	Creds        int                `json:"creds"`
	Rounds       int                `json:"rounds"`
	RoundSeconds float64            `json:"round_seconds"`
	Rotate       []CaseResult       `json:"rotate"`
	Read         []CaseResult       `json:"read"`
	Ratios       map[string]float64 `json:"ratios"`
	Watch        []WatchResult      `json:"watch,omitempty"`
	AuditVerify  map[string]string  `json:"audit_verify,omitempty"`
	Failures     []string           `json:"failures,omitempty"`
}

// CaseResult is one configuration of one load: the median round's rate, and
// statuses summed over all rounds.
type CaseResult struct {
	Config    string         `json:"config"`
	Clients   int            `json:"clients"`
	PerSecond []float64      `json:"per_second"` // each round
	Median    float64        `json:"median_per_second"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	Statuses  map[string]int `json:"statuses"`
	Non2xx    int            `json:"non_2xx"`
	Bad       int            `json:"bad"` // non-2xx other than 409, and transport errors
}

// WatchResult is the latency from a PUT's acknowledgement to its event on a
// watch stream.
type WatchResult struct {
	Case      string  `json:"case"`
	Changes   int     `json:"changes"`
	P50Ms     float64 `json:"p50_ms"`
	P95Ms     float64 `json:"p95_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	BeforeAck int     `json:"before_ack"` // events that arrived before the PUT's answer (counted as 0)
	Lost      int     `json:"lost"`
	// From the moment the PUT was sent (an upper bound of commit→event that
	// includes the PUT itself).
	SentP50Ms float64 `json:"sent_p50_ms"`
	SentP99Ms float64 `json:"sent_p99_ms"`
	SentMaxMs float64 `json:"sent_max_ms"`
	lat, sent []time.Duration
}

func run(o options) error {
	rep := Report{LoadAvgStart: loadavg(), CPUs: runtime.NumCPU(), Creds: o.creds, Rounds: o.rounds, RoundSeconds: o.dur.Seconds(), Ratios: map[string]float64{}}
	dir, err := os.MkdirTemp("", "nebula-ha-bench-*")
	if err != nil {
		return err
	}
	if o.keepLog {
		fmt.Fprintf(os.Stderr, "temporary directory (kept): %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.bin == "" {
		o.bin = filepath.Join(dir, "nebula-credential")
		b := exec.Command("go", "build", "-o", o.bin, "github.com/nebula-credential/nebula-credential/cmd/nebula-credential")
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("building the server (or give -bin): %w", err)
		}
	}
	ctx := context.Background()
	suffix := randHex(4)
	var (
		clusters []*cluster
		drops    []func()
	)
	// Stop every server before dropping its schema.
	defer func() {
		for _, c := range clusters {
			c.stop()
		}
		for _, drop := range drops {
			drop()
		}
	}()
	sq, err := startCluster(ctx, o, dir, "sqlite1", "", 1)
	if sq != nil {
		clusters = append(clusters, sq)
	}
	if err != nil {
		return err
	}
	for _, n := range []int{1, 3} {
		name := fmt.Sprintf("pg%d", n)
		schema := fmt.Sprintf("nc_bench_%s_%s", suffix, name)
		dsn, drop, err := createSchema(ctx, o.pg, schema)
		if err != nil {
			return err
		}
		drops = append(drops, drop)
		c, err := startCluster(ctx, o, dir, name, dsn, n)
		if c != nil {
			clusters = append(clusters, c)
		}
		if err != nil {
			return err
		}
	}
	for _, c := range clusters {
		if err := c.seed(o.creds); err != nil {
			return fmt.Errorf("%s: creating %d credentials: %w", c.name, o.creds, err)
		}
	}

	// Throughput rounds: every round runs every configuration, in an order
	// that rotates from round to round, so a noisy moment hits all of them.
	rot := map[string]*acc{}
	rd := map[string]*acc{}
	var rotRatio, rdRatio [2][]float64
	for r := range o.rounds {
		rr := map[string]float64{}
		dr := map[string]float64{}
		for k := range clusters {
			c := clusters[(k+r)%len(clusters)]
			res := c.load(o.clients, o.dur, o.warm, c.rotate)
			accOf(rot, c.name).add(res)
			rr[c.name] = res.rps
			res = c.load(o.readC, o.dur, o.warm, c.read)
			accOf(rd, c.name).add(res)
			dr[c.name] = res.rps
		}
		rotRatio[0] = append(rotRatio[0], ratio(rr["pg1"], rr["sqlite1"]))
		rotRatio[1] = append(rotRatio[1], ratio(rr["pg3"], rr["pg1"]))
		rdRatio[0] = append(rdRatio[0], ratio(dr["pg1"], dr["sqlite1"]))
		rdRatio[1] = append(rdRatio[1], ratio(dr["pg3"], dr["pg1"]))
		if !o.jsonOut {
			fmt.Fprintf(os.Stderr, "round %d: rotations/s %s; GET/s %s; load %s\n", r+1, fmtRates(rr), fmtRates(dr), loadavg())
		}
	}
	if o.rounds > 0 {
		for _, c := range clusters {
			rep.Rotate = append(rep.Rotate, rot[c.name].result(c.name, o.clients))
			rep.Read = append(rep.Read, rd[c.name].result(c.name, o.readC))
		}
		rep.Ratios["rotate_pg1_over_sqlite1"] = median(rotRatio[0])
		rep.Ratios["rotate_pg3_over_pg1"] = median(rotRatio[1])
		rep.Ratios["read_pg1_over_sqlite1"] = median(rdRatio[0])
		rep.Ratios["read_pg3_over_pg1"] = median(rdRatio[1])
	}

	if o.changes > 0 {
		w, err := watchLatency(clusters[0], clusters[2], o.changes)
		if err != nil {
			return fmt.Errorf("watch latency: %w", err)
		}
		rep.Watch = w
	}
	if o.verify {
		rep.AuditVerify = map[string]string{}
		for _, c := range clusters {
			rep.AuditVerify[c.name] = c.auditVerify()
		}
	}
	rep.LoadAvgEnd = loadavg()
	for _, cr := range append(append([]CaseResult{}, rep.Rotate...), rep.Read...) {
		if cr.Bad > 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s, %d clients: %d answers neither 2xx nor 409 (%v)", cr.Config, cr.Clients, cr.Bad, cr.Statuses))
		}
	}
	for _, w := range rep.Watch {
		if w.Lost > 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("watch %s: %d of %d events never arrived", w.Case, w.Lost, w.Changes))
		}
	}
	for name, v := range rep.AuditVerify {
		if !strings.HasPrefix(v, "ok") {
			rep.Failures = append(rep.Failures, fmt.Sprintf("audit verify on %s: %s", name, v))
		}
	}
	for _, c := range clusters {
		rep.Failures = append(rep.Failures, c.errorLines()...)
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printText(rep, o)
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d failures (see above)", len(rep.Failures))
	}
	return nil
}

func printText(rep Report, o options) {
	fmt.Printf("%d credentials per store; %d rounds of %s after %s warm-up, configurations interleaved; %d CPUs\n", rep.Creds, rep.Rounds, o.dur, o.warm, rep.CPUs)
	fmt.Printf("load average: start %s, end %s\n\n", rep.LoadAvgStart, rep.LoadAvgEnd)
	fmt.Printf("%-30s  %-8s  %8s  %-24s  %8s  %8s  %s\n", "case", "config", "median/s", "rounds/s", "p50", "p99", "statuses")
	for _, set := range []struct {
		name string
		rs   []CaseResult
	}{{"POST /v1/rotate (grace 0)", rep.Rotate}, {"GET ?reveal=true", rep.Read}} {
		for _, r := range set.rs {
			var rs []string
			for _, v := range r.PerSecond {
				rs = append(rs, fmt.Sprintf("%.0f", v))
			}
			fmt.Printf("%-30s  %-8s  %8.0f  %-24s  %6.1fms  %6.1fms  %v\n", fmt.Sprintf("%s, %d clients", set.name, r.Clients), r.Config, r.Median, strings.Join(rs, " "), r.P50Ms, r.P99Ms, r.Statuses)
		}
	}
	if len(rep.Rotate) > 0 {
		fmt.Printf("\nratios (median of per-round ratios): rotate PG1/SQLite %.2f, PG3/PG1 %.2f; GET PG1/SQLite %.2f, PG3/PG1 %.2f\n",
			rep.Ratios["rotate_pg1_over_sqlite1"], rep.Ratios["rotate_pg3_over_pg1"], rep.Ratios["read_pg1_over_sqlite1"], rep.Ratios["read_pg3_over_pg1"])
	}
	if len(rep.Watch) > 0 {
		fmt.Printf("\nwatch latency, PUT acknowledged -> event received on the stream (0 if it came first), and PUT sent -> event:\n")
		fmt.Printf("%-34s  %7s  %8s  %8s  %8s  %8s  %10s  %10s  %s\n", "case", "changes", "p50", "p95", "p99", "max", "sent p99", "sent max", "before ack / lost")
		for _, w := range rep.Watch {
			fmt.Printf("%-34s  %7d  %6.1fms  %6.1fms  %6.1fms  %6.1fms  %8.1fms  %8.1fms  %d / %d\n", w.Case, w.Changes, w.P50Ms, w.P95Ms, w.P99Ms, w.MaxMs, w.SentP99Ms, w.SentMaxMs, w.BeforeAck, w.Lost)
		}
	}
	if len(rep.AuditVerify) > 0 {
		fmt.Printf("\naudit verify: sqlite1 %s; pg1 %s; pg3 %s\n", rep.AuditVerify["sqlite1"], rep.AuditVerify["pg1"], rep.AuditVerify["pg3"])
	}
	for _, f := range rep.Failures {
		fmt.Printf("FAILURE: %s\n", f)
	}
}

// ---- processes ----

type instance struct {
	cmd  *exec.Cmd
	url  string
	logf string
	done chan struct{}
}

type cluster struct {
	name  string
	insts []*instance
	token string
	creds int // generic credentials created by seed
	hc    *http.Client
}

func startCluster(ctx context.Context, o options, dir, name, dsn string, n int) (*cluster, error) {
	cdir := filepath.Join(dir, name)
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return nil, err
	}
	store := dsn
	if store == "" {
		store = filepath.Join(cdir, "creds.db")
	}
	c := &cluster{name: name, hc: &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}}
	start := func(i int) (*instance, error) {
		in := &instance{logf: filepath.Join(cdir, fmt.Sprintf("serve%d.log", i)), done: make(chan struct{})}
		addrFile := filepath.Join(cdir, fmt.Sprintf("addr%d", i))
		logf, err := os.Create(in.logf)
		if err != nil {
			return nil, err
		}
		// A short lease so the three instances share retire work quickly;
		// rate limit off: the benchmark is one token doing everything.
		in.cmd = exec.Command(o.bin, "serve", "--store", store, "--key-file", filepath.Join(cdir, "root.key"),
			"--addr", "127.0.0.1:0", "--addr-file", addrFile, "--log-level", "warn", "--rate-limit", "0")
		in.cmd.Stdout, in.cmd.Stderr = logf, logf
		if err := in.cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		go func() { in.cmd.Wait(); logf.Close(); close(in.done) }()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			if b, err := os.ReadFile(addrFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
				in.url = strings.TrimSpace(string(b))
				if !strings.Contains(in.url, "://") {
					in.url = "http://" + in.url
				}
				return in, nil
			}
			select {
			case <-in.done:
				return in, fmt.Errorf("%s: serve %d exited before listening; its log: %s", name, i, in.logf)
			default:
			}
			if time.Now().After(deadline) {
				return in, fmt.Errorf("%s: serve %d did not write %s within 2 minutes", name, i, addrFile)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The first instance initialises the store (and writes admin.token
	// beside the key file); the others join it.
	in, err := start(0)
	if in != nil {
		c.insts = append(c.insts, in)
	}
	if err != nil {
		return c, err
	}
	tok, err := os.ReadFile(filepath.Join(cdir, "admin.token"))
	if err != nil {
		return c, err
	}
	c.token = strings.TrimSpace(string(tok))
	for i := 1; i < n; i++ {
		in, err := start(i)
		if in != nil {
			c.insts = append(c.insts, in)
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *cluster) stop() {
	for _, in := range c.insts {
		in.cmd.Process.Signal(os.Interrupt)
	}
	for _, in := range c.insts {
		select {
		case <-in.done:
		case <-time.After(30 * time.Second):
			in.cmd.Process.Kill()
			<-in.done
		}
	}
}

// errorLines returns the ERROR lines of the instances' logs.
func (c *cluster) errorLines() []string {
	var out []string
	for i, in := range c.insts {
		b, _ := os.ReadFile(in.logf)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) {
				out = append(out, fmt.Sprintf("%s instance %d log: %s", c.name, i, line))
			}
		}
	}
	return out
}

func createSchema(ctx context.Context, dsn, schema string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL at -pg: %w (start it, or pass -pg with a database you may create schemas in)", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create schema %s: %w", schema, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		// Retried: a shared server may briefly have no connection to spare.
		for wait := 100 * time.Millisecond; ; wait *= 2 {
			var conn *pgx.Conn
			conn, err = pgx.Connect(ctx, dsn)
			if err == nil {
				_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(ctx)
			}
			if err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if err != nil {
			log.Printf("drop schema %s: %v (drop it by hand: DROP SCHEMA %s CASCADE)", schema, err, schema)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		drop()
		return "", nil, fmt.Errorf("-pg must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}

// ---- requests ----

func credID(i int) string { return fmt.Sprintf("bench/c/%04d", i) }

func (c *cluster) do(ctx context.Context, inst int, method, path, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.insts[inst%len(c.insts)].url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

func (c *cluster) seed(n int) error {
	c.creds = n
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, b, err := c.do(context.Background(), i, "PUT", "/v1/credentials/"+credID(i), `{"type":"generic","secret":{"value":"`+randHex(16)+`"}}`)
			if err == nil && st != 200 {
				err = fmt.Errorf("PUT %s: %d %s", credID(i), st, b)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// rotate is client w's i-th request: a rotation with zero grace, which runs
// to retired before it answers. Client w rotates credentials w, w+C, ...
func (c *cluster) rotate(ctx context.Context, w, i, clients, creds int) (int, error) {
	id := credID((w + i*clients) % creds)
	st, _, err := c.do(ctx, w, "POST", "/v1/rotate/"+id, `{"grace":0,"reason":"bench/ha"}`)
	return st, err
}

func (c *cluster) read(ctx context.Context, w, i, clients, creds int) (int, error) {
	id := credID((w + i*clients) % creds)
	st, _, err := c.do(ctx, w, "GET", "/v1/credentials/"+id+"?reveal=true", "")
	return st, err
}

func (c *cluster) auditVerify() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, b, err := c.do(ctx, 0, "GET", "/v1/audit/verify", "")
	if err != nil {
		return err.Error()
	}
	if st != 200 {
		return fmt.Sprintf("%d %s", st, bytes.TrimSpace(b))
	}
	return "ok " + string(bytes.TrimSpace(b))
}

// ---- load ----

type result struct {
	rps      float64
	lats     []time.Duration
	statuses map[int]int
}

// load runs n clients in a closed loop for warm+dur and counts the requests
// that ended in the last dur (a rotation may take longer than a round on a
// busy machine, so requests are not required to start in it).
func (c *cluster) load(n int, dur, warm time.Duration, fn func(ctx context.Context, w, i, clients, creds int) (int, error)) result {
	creds := c.creds
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	from := start.Add(warm)
	end := from.Add(dur)
	var (
		mu  sync.Mutex
		out = result{statuses: map[int]int{}}
		wg  sync.WaitGroup
	)
	for w := range n {
		wg.Go(func() {
			var lats []time.Duration
			sts := map[int]int{}
			for i := 0; ; i++ {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				st, err := fn(ctx, w, i, n, creds)
				t1 := time.Now()
				if t1.Before(from) || t1.After(end) {
					continue
				}
				if err != nil {
					st = -1
				}
				sts[st]++
				if st/100 == 2 {
					lats = append(lats, t1.Sub(t0))
				}
			}
			mu.Lock()
			out.lats = append(out.lats, lats...)
			for k, v := range sts {
				out.statuses[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	out.rps = float64(len(out.lats)) / dur.Seconds()
	return out
}

type acc struct {
	rps      []float64
	lats     [][]time.Duration
	statuses map[int]int
}

func accOf(m map[string]*acc, k string) *acc {
	if m[k] == nil {
		m[k] = &acc{statuses: map[int]int{}}
	}
	return m[k]
}

func (a *acc) add(r result) {
	a.rps = append(a.rps, r.rps)
	a.lats = append(a.lats, r.lats)
	for k, v := range r.statuses {
		a.statuses[k] += v
	}
}

func (a *acc) result(config string, clients int) CaseResult {
	cr := CaseResult{Config: config, Clients: clients, PerSecond: a.rps, Median: median(a.rps), Statuses: map[string]int{}}
	// Latencies of the median round.
	idx := make([]int, len(a.rps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int {
		switch {
		case a.rps[x] < a.rps[y]:
			return -1
		case a.rps[x] > a.rps[y]:
			return 1
		}
		return 0
	})
	lats := slices.Clone(a.lats[idx[len(idx)/2]])
	slices.Sort(lats)
	cr.P50Ms, cr.P99Ms = ms(pct(lats, 50)), ms(pct(lats, 99))
	for k, v := range a.statuses {
		name := fmt.Sprint(k)
		if k == -1 {
			name = "transport-error"
		}
		cr.Statuses[name] = v
		if k/100 != 2 {
			cr.Non2xx += v
			if k != http.StatusConflict {
				cr.Bad += v
			}
		}
	}
	return cr
}

// ---- watch ----

type seen struct {
	id string
	at time.Time
}

// openWatch opens GET /v1/watch?prefix=w/ on instance inst and sends every
// event's credential ID, with the time it was read, to the channel.
func (c *cluster) openWatch(ctx context.Context, inst int) (<-chan seen, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.insts[inst].url+"/v1/watch?prefix=w/", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := (&http.Client{}).Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return nil, fmt.Errorf("GET /v1/watch on %s instance %d: %d %s", c.name, inst, res.StatusCode, b)
	}
	ch := make(chan seen, 1024)
	ready := make(chan struct{})
	go func() {
		defer res.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, ": watching") {
				once() // the stream's cursor is set: later events will come
				continue
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			t := time.Now()
			var ev struct {
				CredentialID string `json:"credential_id"`
			}
			if json.Unmarshal([]byte(data), &ev) == nil {
				ch <- seen{ev.CredentialID, t}
			}
		}
		once()
	}()
	<-ready
	return ch, nil
}

// watchLatency times -changes PUTs: alternately on the SQLite instance (its
// own watcher: the single-process baseline) and on PG3 instance A, whose
// event is timed both on A's own stream and on B's (cross-instance).
func watchLatency(sq, pg *cluster, n int) ([]WatchResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sqW, err := sq.openWatch(ctx, 0)
	if err != nil {
		return nil, err
	}
	sameW, err := pg.openWatch(ctx, 0)
	if err != nil {
		return nil, err
	}
	crossW, err := pg.openWatch(ctx, 1)
	if err != nil {
		return nil, err
	}
	cases := []*WatchResult{
		{Case: "PostgreSQL, PUT on A, watch on B"},
		{Case: "PostgreSQL, PUT on A, watch on A"},
		{Case: "SQLite, same instance"},
	}
	wait := func(ch <-chan seen, id string, sent, ack time.Time, w *WatchResult) {
		w.Changes++
		deadline := time.After(30 * time.Second)
		for {
			select {
			case s, ok := <-ch:
				if !ok {
					w.Lost++
					return
				}
				if s.id != id {
					continue
				}
				d := s.at.Sub(ack)
				if d < 0 {
					w.BeforeAck++
					d = 0
				}
				w.lat = append(w.lat, d)
				w.sent = append(w.sent, s.at.Sub(sent))
				return
			case <-deadline:
				w.Lost++
				return
			}
		}
	}
	for i := range n {
		id := fmt.Sprintf("w/%05d", i)
		body := `{"type":"generic","secret":{"value":"` + randHex(16) + `"}}`
		sent := time.Now()
		st, b, err := pg.do(ctx, 0, "PUT", "/v1/credentials/"+id, body)
		ack := time.Now()
		if err != nil || st != 200 {
			return nil, fmt.Errorf("PUT %s on %s: %d %s %v", id, pg.name, st, b, err)
		}
		wait(crossW, id, sent, ack, cases[0])
		wait(sameW, id, sent, ack, cases[1])
		sent = time.Now()
		st, b, err = sq.do(ctx, 0, "PUT", "/v1/credentials/"+id, body)
		ack = time.Now()
		if err != nil || st != 200 {
			return nil, fmt.Errorf("PUT %s on %s: %d %s %v", id, sq.name, st, b, err)
		}
		wait(sqW, id, sent, ack, cases[2])
	}
	var out []WatchResult
	for _, w := range cases {
		slices.Sort(w.lat)
		w.P50Ms, w.P95Ms, w.P99Ms = ms(pct(w.lat, 50)), ms(pct(w.lat, 95)), ms(pct(w.lat, 99))
		if len(w.lat) > 0 {
			w.MaxMs = ms(w.lat[len(w.lat)-1])
		}
		slices.Sort(w.sent)
		w.SentP50Ms, w.SentP99Ms = ms(pct(w.sent, 50)), ms(pct(w.sent, 99))
		if len(w.sent) > 0 {
			w.SentMaxMs = ms(w.sent[len(w.sent)-1])
		}
		out = append(out, *w)
	}
	return out, nil
}

// ---- helpers ----

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// ratio is a/b, or 0 when nothing completed in b's round (JSON has no NaN
// or infinity).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtRates(m map[string]float64) string {
	return fmt.Sprintf("sqlite1 %.0f, pg1 %.0f, pg3 %.0f", m["sqlite1"], m["pg1"], m["pg3"])
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
