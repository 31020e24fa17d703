package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/server"
)

// childMain runs the agent as a separate process (the test binary re-run).
func childMain(config string) int {
	cfg, err := LoadConfig(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	forward := os.Getenv("NC_AGENT_CHILD_FORWARD") == "1" // as `run` does
	a, err := New(cfg, Options{Token: os.Getenv("NC_AGENT_CHILD_TOKEN"), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), ForwardSignals: forward})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	if !forward {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		var ee *ExitError
		if errors.As(err, &ee) {
			return ee.Code
		}
		return 1
	}
	return 0
}

// checkFile: the destination holds every line the same and ends in END.
func checkFile(b []byte) error {
	s := string(b)
	if !strings.HasSuffix(s, "END\n") {
		return fmt.Errorf("%d bytes, no END: empty or partial", len(b))
	}
	ls := strings.Split(strings.TrimSuffix(s, "END\n"), "\n")
	ls = ls[:len(ls)-1]
	if len(ls) != 2000 {
		return fmt.Errorf("%d lines, want 2000", len(ls))
	}
	for _, l := range ls {
		if l != ls[0] {
			return fmt.Errorf("mixed versions: %q and %q", ls[0], l)
		}
	}
	return nil
}

// TestSIGKILLDuringRotations kills the agent process at random moments while
// credentials rotate; a reader checks the destination 10,000 times and never
// sees it empty, partial or mixed. After the last restart the agent reaches
// the current version, runs the owed action, and a further restart runs none.
func TestSIGKILLDuringRotations(t *testing.T) {
	kills := 50
	if testing.Short() {
		kills = 10
	}
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "kill-secret-0")
	dir := t.TempDir()
	dest := filepath.Join(dir, "app.conf")
	actions := filepath.Join(dir, "actions")
	cfgPath := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
servers: [%s]
templates:
  - contents: |
      {{- $v := field "app/x" "version" }}{{ $p := secret "app/x" "password" }}{{ range 2000 }}v={{ $v }} p={{ $p }}
      {{ end }}END
    destination: app.conf
    action:
      command: [sh, -c, 'echo "$NEBULA_CREDENTIAL_VERSION" >> %s']
`, s.ts.URL, actions)), 0o600)
	if _, err := LoadConfig(cfgPath); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "NC_AGENT_CHILD_CONFIG="+cfgPath, "NC_AGENT_CHILD_TOKEN="+s.token)
		cmd.Stderr = os.Stderr
		if testing.Verbose() {
			cmd.Stderr = nil
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	fileVersion := func() string {
		b, _ := os.ReadFile(dest)
		v, _, _ := strings.Cut(string(b), " ")
		return strings.TrimPrefix(v, "v=")
	}
	cmd := start()
	waitFor("the first render", func() bool { return fileVersion() == "1" })

	// the reader
	var (
		checks  atomic.Int64
		bad     atomic.Value
		stopR   = make(chan struct{})
		readers sync.WaitGroup
	)
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stopR:
				return
			default:
			}
			b, err := os.ReadFile(dest)
			if err == nil {
				err = checkFile(b)
			}
			if err != nil {
				bad.Store(err.Error())
			}
			checks.Add(1)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	// the rotations
	stopW := make(chan struct{})
	var writer sync.WaitGroup
	var version atomic.Int64
	version.Store(1)
	writer.Add(1)
	go func() {
		defer writer.Done()
		for i := 1; ; i++ {
			select {
			case <-stopW:
				return
			case <-time.After(time.Duration(5+rand.IntN(30)) * time.Millisecond):
			}
			zero := time.Duration(0)
			if _, err := s.m.Rotate(context.Background(), "app/x", credential.RotateOptions{Grace: &zero}); err != nil {
				t.Errorf("rotate: %v", err)
				return
			}
			version.Add(1)
		}
	}()
	for range kills {
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		cmd = start()
	}
	close(stopW)
	writer.Wait()
	cur := fmt.Sprint(version.Load())
	waitFor("the current version on disk", func() bool { return fileVersion() == cur })
	acted := func() []string { b, _ := os.ReadFile(actions); return strings.Fields(string(b)) }
	waitFor("the owed action", func() bool { a := acted(); return len(a) > 0 && a[len(a)-1] == cur })
	for checks.Load() < 10000 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stopR)
	readers.Wait()
	if b := bad.Load(); b != nil {
		t.Fatalf("the reader saw a bad file: %v", b)
	}
	// a restart with everything current runs no action
	n := len(acted())
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	before := time.Now()
	cmd = start()
	waitFor("a report after the restart", func() bool {
		cs, _ := server.ListConsumers(context.Background(), s.m.Store(), "app/x", time.Now(), time.Minute, nil)
		for _, c := range cs {
			if c.LastSeen.After(before) && c.Version == int(version.Load()) {
				return true
			}
		}
		return false
	})
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if got := acted(); len(got) != n {
		t.Errorf("a restart with current files ran the action: %v", got[n:])
	}
	t.Logf("%d kills, %d rotations, %d reads, %d actions", kills, version.Load()-1, checks.Load(), n)
}
