package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/server"
)

// TestActionsSignalTimeoutAndNoSecret: a signal to the process in a pid file,
// a command that times out and one that fails; their errors reach the log
// and the consumer report, and no secret reaches either, nor argv.
func TestActionsSignalTimeoutAndNoSecret(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "action-secret-1111")
	dir := t.TempDir()
	hups := filepath.Join(dir, "hups")
	proc := exec.Command("sh", "-c", `trap 'echo hup >> "$HUPS"' HUP; while :; do sleep 0.05; done`)
	proc.Env = append(os.Environ(), "HUPS="+hups)
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	pidFile := filepath.Join(dir, "app.pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(proc.Process.Pid)+"\n"), 0o600)
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s]
templates:
  - contents: '{{ secret "app/x" "password" }}'
    destination: a
    action: {signal: HUP, pid_file: %s}
  - contents: 'x{{ secret "app/x" "password" }}'
    destination: b
    action: {command: [sleep, "30"], timeout: 1s}
  - contents: 'y{{ secret "app/x" "password" }}'
    destination: c
    action: {command: [sh, -c, 'echo "$NEBULA_CREDENTIAL_VERSION" > %s; exit 7']}
  - contents: '{{ secret "app/x" "password" | base64decode }}'
    destination: d
`, s.ts.URL, pidFile, filepath.Join(dir, "c.version")))
	st := startAgent(t, cfg, s.token)
	var si SyncInfo
	deadline := time.After(2 * time.Minute)
	for si.Actions == 0 {
		select {
		case <-deadline:
			t.Fatalf("no pass ran the actions\n%s", st.log)
		default:
		}
		// template d always fails, so OnSync does not fire: watch the log
		if strings.Contains(st.log.String(), "exited with status 7") && strings.Contains(st.log.String(), "timed out") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if b, _ := os.ReadFile(hups); strings.Count(string(b), "hup") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process in the pid file got no HUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "c.version")); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("the command's NEBULA_CREDENTIAL_VERSION = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Errorf("a failed template wrote its file: %v", err)
	}
	var report string
	for deadline := time.Now().Add(2 * time.Minute); ; {
		cs, _ := server.ListConsumers(context.Background(), s.m.Store(), "app/x", time.Now(), time.Minute, nil)
		if len(cs) == 1 && !cs[0].ActionOK && cs[0].ActionError != "" {
			report = cs[0].ActionError
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed action reported: %+v", cs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	log := st.log.String()
	if !strings.Contains(log, "base64decode") {
		t.Errorf("the template error is not in the log:\n%s", log)
	}
	for _, where := range []string{log, report} {
		if strings.Contains(where, "action-secret-1111") {
			t.Errorf("the secret leaked into %q", where)
		}
	}
}

// TestExecChildSignalAndRestart: with on_change signal the child gets HUP
// and keeps running; with restart a child that ignores TERM is killed after
// kill_timeout and started again with the new environment.
func TestExecChildSignalAndRestart(t *testing.T) {
	s := newSrv(t, server.ConsumerConfig{})
	s.put(t, "app/x", "exec-secret-1")
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	t.Setenv("OUT", out)
	cfg := loadCfg(t, dir, fmt.Sprintf(`
servers: [%s]
templates:
  - contents: '{{ secret "app/x" "password" }}'
    destination: pw
exec:
  command: [sh, -c, 'echo "start $$" >> "$OUT"; trap "echo hup >> \"$OUT\"" HUP; while :; do sleep 0.05; done']
  on_change: signal
`, s.ts.URL))
	st := startAgent(t, cfg, s.token)
	st.waitVersion(t, "app/x", 1)
	waitLines := func(want string, n int) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			b, _ := os.ReadFile(out)
			if strings.Count(string(b), want) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want %d %q in %q\n%s", n, want, b, st.log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLines("start", 1)
	s.put(t, "app/x", "exec-secret-2")
	st.waitVersion(t, "app/x", 2)
	waitLines("hup", 1)
	if b, _ := os.ReadFile(out); strings.Count(string(b), "start") != 1 {
		t.Errorf("on_change signal restarted the child: %q", b)
	}
	st.stop(t)

	// restart, a child that ignores TERM, the new value in its env
	os.Remove(out)
	cfg2 := &Config{Servers: []string{s.ts.URL}, Env: []EnvVar{{Name: "PW", ID: "app/x", Field: "password"}},
		Exec: &Exec{Command: []string{"sh", "-c", `trap "" TERM; echo "start $PW" >> "$OUT"; while :; do sleep 0.05; done`}, KillTimeout: Duration(500 * time.Millisecond)}}
	if err := cfg2.Validate(); err != nil {
		t.Fatal(err)
	}
	st2 := startAgent(t, cfg2, s.token)
	st2.waitVersion(t, "app/x", 2)
	waitLines("start exec-secret-2", 1)
	s.put(t, "app/x", "exec-secret-3")
	st2.waitVersion(t, "app/x", 3)
	waitLines("start exec-secret-3", 1)
	if !strings.Contains(st2.log.String(), "killing it") {
		t.Errorf("the child ignoring TERM was not killed:\n%s", st2.log)
	}
	if strings.Contains(st2.log.String(), "exec-secret") {
		t.Error("a secret is in the log")
	}
}
