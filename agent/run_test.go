package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// srv is a real server on a real store, in process.
type srv struct {
	m     *credential.Manager
	s     *server.Server
	ts    *httptest.Server
	token string
}

func newSrv(t testing.TB, cc server.ConsumerConfig) *srv {
	t.Helper()
	return newSrvWith(t, cc, rotatortest.NewTarget("").Rotator())
}

func newSrvWith(t testing.TB, cc server.ConsumerConfig, pgRotator rotator.Rotator) *srv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), pgRotator)
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "c.key"), Create: true, Rotators: reg})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Manager: m, WatchPollInterval: 20 * time.Millisecond, WatchHeartbeat: 100 * time.Millisecond, RateLimit: 100000, Consumers: cc})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	_, tok, err := server.CreateToken(ctx, st, server.TokenRequest{Name: "agent", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		s.Close()
		m.Close()
	})
	return &srv{m: m, s: s, ts: ts, token: tok.Reveal()}
}

func (s *srv) put(t testing.TB, id, pw string) *credential.Credential {
	t.Helper()
	c, err := s.m.Put(context.Background(), id, credential.PutRequest{Type: credential.Postgres,
		Fields: map[string]any{"host": "127.0.0.1", "port": 5432, "database": "orders", "username": "app"},
		Secret: secret.FromStrings(map[string]string{"password": pw})})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// started is a running agent.
type started struct {
	a      *Agent
	cancel context.CancelFunc
	done   chan error
	syncs  chan SyncInfo
	log    *testenv.Buffer
}

func startAgent(t testing.TB, cfg *Config, token string) *started {
	t.Helper()
	st := &started{done: make(chan error, 1), syncs: make(chan SyncInfo, 1000), log: &testenv.Buffer{}}
	a, err := New(cfg, Options{Token: token, Logger: slog.New(slog.NewTextHandler(st.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Stderr: st.log, Stdout: st.log, OnSync: func(si SyncInfo) { st.syncs <- si }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st.a, st.cancel = a, cancel
	go func() { st.done <- a.Run(ctx) }()
	t.Cleanup(func() { st.stop(t) })
	return st
}

func (st *started) stop(t testing.TB) error {
	st.cancel()
	select {
	case err := <-st.done:
		st.done <- err
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("the agent did not stop")
		return nil
	}
}

// waitVersion waits for a pass that delivered version v of id.
func (st *started) waitVersion(t testing.TB, id string, v int) SyncInfo {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case si := <-st.syncs:
			if si.Versions[id] >= v {
				return si
			}
		case err := <-st.done:
			t.Fatalf("the agent stopped: %v\n%s", err, st.log)
		case <-deadline:
			t.Fatalf("version %d of %s never delivered\n%s", v, id, st.log)
		}
	}
}

func loadCfg(t testing.TB, dir, text string) *Config {
	t.Helper()
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lines(t testing.TB, p string) []string {
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestAgentDeliversAndActsOncePerChange(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "prod/db", "first-secret-1111")
	dir := t.TempDir()
	cfg := loadCfg(t, dir, fmt.Sprintf(`
name: test-agent
servers: [%s]
full_check: 1h
templates:
  - contents: '{{ pgpass "prod/db" }}'
    destination: pgpass
    action: {command: [sh, -c, 'echo "$NEBULA_CREDENTIAL_ID@$NEBULA_CREDENTIAL_VERSION:$*" >> actions', sh, "$NEBULA_CREDENTIAL_VERSIONS"]}
  - contents: '{{ secret "prod/db" "password" | env "DB_PASSWORD" }}'
    destination: app.env
    mode: "0640"
    action: {command: [sh, -c, 'echo "$NEBULA_CREDENTIAL_ID@$NEBULA_CREDENTIAL_VERSION:$*" >> actions', sh, "$NEBULA_CREDENTIAL_VERSIONS"]}
`, s.ts.URL))
	// commands run in the agent's working folder; point them at dir
	for i := range cfg.Templates {
		cfg.Templates[i].Action.Command[2] = strings.ReplaceAll(cfg.Templates[i].Action.Command[2], ">> actions", ">> "+filepath.Join(dir, "actions"))
	}
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "prod/db", 1)
	if got := lines(t, filepath.Join(dir, "pgpass")); len(got) != 1 || got[0] != "127.0.0.1:5432:orders:app:first-secret-1111" {
		t.Errorf("pgpass = %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "app.env")); fi.Mode().Perm() != 0o640 {
		t.Errorf("app.env mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "pgpass")); fi.Mode().Perm() != 0o600 {
		t.Errorf("pgpass mode %v", fi.Mode())
	}
	s.put(t, "prod/db", "second-secret-2222")
	si := st.waitVersion(t, "prod/db", 2)
	if len(si.Written) != 2 || si.Actions != 1 {
		t.Errorf("pass = %+v, want 2 files and 1 action", si)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app.env")); string(b) != "DB_PASSWORD='second-secret-2222'\n" {
		t.Errorf("app.env = %q", b)
	}
	// one action per change: the first delivery and the second
	if got := lines(t, filepath.Join(dir, "actions")); len(got) != 2 || got[0] != "prod/db@1:$NEBULA_CREDENTIAL_VERSIONS" || got[1] != "prod/db@2:$NEBULA_CREDENTIAL_VERSIONS" {
		t.Errorf("actions = %q (argv holds nothing from the environment)", got)
	}
	// the consumer report reached the server
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cs, err := server.ListConsumers(context.Background(), s.m.Store(), "prod/db", time.Now(), time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 1 && cs[0].Version == 2 && cs[0].ActionOK && cs[0].Name == "test-agent" && cs[0].Kind == "agent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers = %+v", cs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// a restart reaches current without an action
	st.stop(t)
	st2 := startAgent(t, cfg, s.token)
	st2.waitVersion(t, "prod/db", 2)
	s.put(t, "prod/db", "third-secret-3333")
	st2.waitVersion(t, "prod/db", 3)
	if got := lines(t, filepath.Join(dir, "actions")); len(got) != 3 || got[2] != "prod/db@3:$NEBULA_CREDENTIAL_VERSIONS" {
		t.Errorf("after restart actions = %q", got)
	}
	var state map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "agent.state.json"))
	if err := json.Unmarshal(b, &state); err != nil || state["last_seq"].(float64) == 0 {
		t.Errorf("state = %s (%v)", b, err)
	}
	for _, pw := range []string{"first-secret-1111", "second-secret-2222", "third-secret-3333"} {
		for _, where := range []string{st.log.String(), st2.log.String(), string(b)} {
			if strings.Contains(where, pw) {
				t.Errorf("secret %q in the log or state:\n%s", pw, where)
			}
		}
	}
}

func TestAgentKeepsFilesWhenServerUnreachable(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "prod/db", "kept-secret-1111")
	// a second address that refuses connections comes first: failover
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	dir := t.TempDir()
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s, %s]
health_addr: 127.0.0.1:0
retry_max: 1s
full_check: 1s
templates:
  - contents: '{{ secret "prod/db" "password" }}'
    destination: pw
`, deadURL, s.ts.URL))
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "prod/db", 1)
	health := func() (int, map[string]any) {
		res, err := http.Get("http://" + st.a.HealthAddr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var h map[string]any
		json.NewDecoder(res.Body).Decode(&h)
		return res.StatusCode, h
	}
	if code, h := health(); code != 200 || h["status"] != "ok" {
		t.Errorf("health = %d %v", code, h)
	}
	s.ts.CloseClientConnections()
	s.ts.Close()
	// the periodic pass fails: the file stays, health says so
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, h := health()
		if code == 503 && h["status"] == "unreachable" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never said unreachable: %d %v\n%s", code, h, st.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pw")); err != nil || string(b) != "kept-secret-1111" {
		t.Errorf("file = %q %v", b, err)
	}
	if !strings.Contains(st.log.String(), "server unreachable") || strings.Contains(st.log.String(), "kept-secret-1111") {
		t.Errorf("log:\n%s", st.log)
	}
}

// TestRunForwardsSignalsIncludingDuringRestart runs the agent as its own
// process with an exec child, as `run` does: SIGTERM and SIGINT sent to the
// agent reach the child and the agent exits with the child's status; one
// sent while a restart waits for the old child to stop reaches that child,
// and no new child starts.
func TestRunForwardsSignalsIncludingDuringRestart(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "fwd-secret-1")
	child := `echo "start $$" >> "$OUT"
trap 'echo usr1 >> "$OUT"' USR1
trap 'echo term >> "$OUT"; exit 9' TERM
trap 'echo int >> "$OUT"; exit 8' INT
while :; do sleep 0.05; done`
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		restart bool
		want    string
		code    int
	}{
		{"TERM", syscall.SIGTERM, false, "term", 9},
		{"INT", syscall.SIGINT, false, "int", 8},
		{"TERM during a restart", syscall.SIGTERM, true, "term", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cfgPath := filepath.Join(dir, "agent.yaml")
			// the restart asks the child to stop with USR1, which it ignores
			// (a slow shutdown): the kill timeout is far away
			text := fmt.Sprintf("servers: [%s]\ntemplates:\n  - contents: '{{ secret \"app/x\" \"password\" }}'\n    destination: pw\nexec:\n  command: [sh, -c, %q]\n  on_change: restart\n  signal: USR1\n  kill_timeout: 10m\n", s.ts.URL, child)
			if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(cfgPath); err != nil {
				t.Fatal(err)
			}
			var stderr testenv.Buffer
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "NC_AGENT_CHILD_CONFIG="+cfgPath, "NC_AGENT_CHILD_TOKEN="+s.token, "NC_AGENT_CHILD_FORWARD=1", "OUT="+out)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			waitOut := func(want string) {
				t.Helper()
				for deadline := time.Now().Add(2 * time.Minute); ; {
					b, _ := os.ReadFile(out)
					if strings.Contains(string(b), want) {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("no %q in %q\n%s", want, b, stderr.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			waitOut("start")
			if tc.restart {
				s.put(t, "app/x", "fwd-secret-"+testenv.UniqueName(""))
				waitOut("usr1") // the restart is waiting for the child to stop
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			var err error
			select {
			case err = <-waited:
			case <-time.After(2 * time.Minute):
				cmd.Process.Kill()
				t.Fatalf("the agent did not exit after %v\n%s", tc.sig, stderr.String())
			}
			code := exitCode(err)
			b, _ := os.ReadFile(out)
			if code != tc.code || !strings.Contains(string(b), tc.want) {
				t.Errorf("agent status %d (want the child's %d), child saw %q\n%s", code, tc.code, b, stderr.String())
			}
			if n := strings.Count(string(b), "start"); n != 1 {
				t.Errorf("the child started %d times, want 1: %q", n, b)
			}
			if strings.Contains(stderr.String(), "fwd-secret") {
				t.Error("a secret is in the agent's log")
			}
		})
	}
}

// TestWatchFailsOverWhenTheStreamBreaks: two addresses of one server (one
// store). When the stream on the first breaks, the agent reopens it on the
// second at once, resuming after the last event (Last-Event-ID), and a
// change made after the break arrives through the second stream, with no
// fetch having failed and the full check an hour away.
func TestWatchFailsOverWhenTheStreamBreaks(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "fo-secret-1")
	var (
		mu      sync.Mutex
		resumed []string
	)
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/watch" {
			mu.Lock()
			resumed = append(resumed, r.Header.Get("Last-Event-ID"))
			mu.Unlock()
		}
		s.s.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { second.CloseClientConnections(); second.Close() })
	dir := t.TempDir()
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s, %s]
full_check: 1h
retry_max: 1h
health_addr: 127.0.0.1:0
templates:
  - contents: '{{ secret "app/x" "password" }}'
    destination: pw
`, s.ts.URL, second.URL))
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "app/x", 1)
	s.put(t, "app/x", "fo-secret-2") // an event: the agent has a cursor now
	st.waitVersion(t, "app/x", 2)
	// the first address goes away: its stream breaks
	s.ts.CloseClientConnections()
	s.ts.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := len(resumed)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never opened the stream on the second address\n%s", st.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := s.m.Get(context.Background(), "app/x", credential.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.put(t, "app/x", "fo-secret-3")
	st.waitVersion(t, "app/x", c.Version+1)
	if b, _ := os.ReadFile(filepath.Join(dir, "pw")); string(b) != "fo-secret-3" {
		t.Errorf("pw = %q", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if resumed[0] == "" || resumed[0] == "0" {
		t.Errorf("the stream on the second address did not resume after the last event: Last-Event-ID %q", resumed[0])
	}
	log := st.log.String()
	if !strings.Contains(log, "the watch stream ended; reconnecting") || strings.Contains(log, "server unreachable") {
		t.Errorf("log:\n%s", log)
	}
	if res, err := http.Get("http://" + st.a.HealthAddr() + "/healthz"); err == nil {
		var h map[string]any
		json.NewDecoder(res.Body).Decode(&h)
		res.Body.Close()
		if h["server"] != second.URL {
			t.Errorf("health names server %v, want %s", h["server"], second.URL)
		}
	}
	for _, pw := range []string{"fo-secret-1", "fo-secret-2", "fo-secret-3"} {
		if strings.Contains(log, pw) {
			t.Errorf("secret %q in the log", pw)
		}
	}
}

// TestWatchLeavesASilentServer: the first address accepts the stream and
// then says nothing, not even a keep-alive (a connection dead without a
// word). After the idle limit the agent moves to the second address and
// follows changes there.
func TestWatchLeavesASilentServer(t *testing.T) {
	old := watchIdle
	watchIdle = time.Second // the test server's keep-alive comes every 100 ms
	t.Cleanup(func() { watchIdle = old })
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "silent-secret-1")
	hang := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/watch" {
			s.s.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); silent.CloseClientConnections(); silent.Close() })
	dir := t.TempDir()
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s, %s]
full_check: 1h
templates:
  - contents: '{{ secret "app/x" "password" }}'
    destination: pw
`, silent.URL, s.ts.URL))
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "app/x", 1)
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(st.log.String(), `following the watch stream" server=`+s.ts.URL); {
		if time.Now().After(deadline) {
			t.Fatalf("the agent never left the silent server\n%s", st.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.put(t, "app/x", "silent-secret-2")
	st.waitVersion(t, "app/x", 2)
	if b, _ := os.ReadFile(filepath.Join(dir, "pw")); string(b) != "silent-secret-2" {
		t.Errorf("pw = %q", b)
	}
}
