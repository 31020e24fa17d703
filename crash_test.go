package credential_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// The crash tests run a child process (this test binary, selected by
// NC_CRASH_CHILD) that works on a store and the file-backed fake target, and
// SIGKILL it — at a chosen journal step or at a random moment. The parent then
// reopens the store (recovery runs) and checks the invariant: every credential
// decrypts, the target accepts its current version, no rotation is stuck and
// no secret is left live on the target beyond current.

func childConfig(dir string, create bool) credential.Config {
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "creds.db"))
	if err != nil {
		panic(err)
	}
	tg := rotatortest.NewTarget(filepath.Join(dir, "target.json"))
	reg := rotator.NewRegistry()
	reg.Register(string(fakeType), tg.Rotator())
	return credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "creds.key"), Create: create, Rotators: reg}
}

// TestCrashChild is the child side; it does nothing unless NC_CRASH_CHILD is set.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv("NC_CRASH_CHILD")
	if mode == "" {
		return
	}
	dir := os.Getenv("NC_CRASH_DIR")
	killStep := os.Getenv("NC_KILL_STEP")
	cfg := childConfig(dir, false)
	cfg.Engine.AfterStep = func(_, step string) {
		if step == killStep {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	ctx := context.Background()
	m, err := credential.Open(ctx, cfg)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	tg := rotatortest.NewTarget(filepath.Join(dir, "target.json"))
	if d, _ := strconv.Atoi(os.Getenv("NC_DELAY_MS")); d > 0 {
		tg.SetDelay(time.Duration(d) * time.Millisecond)
	}
	if os.Getenv("NC_FAIL_VERIFY") != "" {
		tg.FailNext("verify", rotatortest.Failure{Class: rotator.ClassRejected})
	}
	fmt.Println("ready")
	zero := time.Duration(0)
	for i := 0; ; i++ {
		switch mode {
		case "rotate":
			_, err = m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: &zero})
			var re *rotation.RotationError
			if errors.As(err, &re) {
				err = nil // an injected failure rolled back
			}
		case "once":
			<-waitForFile(filepath.Join(dir, "go"))
			_, err = m.Rotate(ctx, "app/db", credential.RotateOptions{})
			switch {
			case err == nil:
				fmt.Println("rotated")
			case errors.Is(err, credential.ErrRotationInProgress):
				fmt.Println("in progress")
			default:
				fmt.Println("error:", err)
			}
			os.Exit(0)
		case "put":
			for _, id := range []string{"p/a", "p/b", "p/c"} {
				_, err = m.Put(ctx, id, credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"v": secret.New(fmt.Sprintf("%s-%d", id, time.Now().UnixNano()))}})
			}
		case "keyrotate":
			_, err = m.RotateKEK(ctx, nil)
		case "restore":
			var f *os.File
			if f, err = os.Open(filepath.Join(dir, "backup.ncb")); err == nil {
				_, err = m.Restore(ctx, f, credential.RestoreOptions{})
				f.Close()
			}
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if killStep != "" { // the step was never reached
			os.Exit(3)
		}
	}
}

type crashEnv struct {
	t   *testing.T
	dir string
	tg  *rotatortest.Target
}

func newCrashEnv(t *testing.T) *crashEnv {
	dir := t.TempDir()
	c := &crashEnv{t: t, dir: dir, tg: rotatortest.NewTarget(filepath.Join(dir, "target.json"))}
	m, err := credential.Open(context.Background(), childConfig(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	pw := secret.New("initial-password-0001")
	if _, err := m.Put(context.Background(), "app/db", credential.PutRequest{Type: fakeType, Fields: map[string]any{"host": "fake", "username": "app"}, Secret: secret.Map{"password": pw}}); err != nil {
		t.Fatal(err)
	}
	c.tg.AddUser("app", secret.Map{"password": pw})
	m.Close()
	return c
}

// child starts the child in mode; with kill > 0 it SIGKILLs it that long after
// it is ready. It returns whether the child died of SIGKILL.
func (c *crashEnv) child(mode string, extra []string, kill time.Duration) bool {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NC_CRASH_CHILD="+mode, "NC_CRASH_DIR="+c.dir)
	cmd.Env = append(cmd.Env, extra...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	line, _ := rd.ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Wait()
		c.t.Fatalf("child not ready: %q %s", line, stderr.String())
	}
	if kill > 0 {
		time.Sleep(kill)
		cmd.Process.Signal(syscall.SIGKILL)
	}
	rest, _ := bufio.NewReader(rd).ReadString(0)
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() && st.Signal() == syscall.SIGKILL {
			return true
		}
		c.t.Fatalf("child failed: %v\n%s%s", err, rest, stderr.String())
	}
	return false
}

// check reopens the store (recovery runs), finishes due work and checks the
// invariant. It returns the current version.
func (c *crashEnv) check(minVersion int) int {
	c.t.Helper()
	m, err := credential.Open(context.Background(), childConfig(c.dir, false))
	if err != nil {
		c.t.Fatalf("reopen after kill: %v", err)
	}
	defer m.Close()
	if _, err := m.Engine().Tick(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	open, err := m.Rotations(context.Background(), "", true, 10)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(open) != 0 {
		c.t.Fatalf("rotation stuck after recovery: %+v", open[0])
	}
	cur, err := m.Get(context.Background(), "app/db", credential.GetOptions{})
	if err != nil {
		c.t.Fatalf("current not readable: %v", err)
	}
	if cur.Version < minVersion {
		c.t.Fatalf("current went back from %d to %d", minVersion, cur.Version)
	}
	if !c.tg.Authenticates(rotator.Credential{Fields: cur.Fields, Secret: cur.Secret}) {
		c.t.Fatalf("target rejects current version %d (%v)", cur.Version, c.tg.Users())
	}
	if n := c.tg.Accepted("app"); n != 1 {
		c.t.Fatalf("target accepts %d secrets after recovery, want only current", n)
	}
	return cur.Version
}

func TestCrashAtEveryStep(t *testing.T) {
	steps := []string{rotation.StepPlanned, rotation.StepStaged, rotation.StepApplied, rotation.StepVerified, rotation.StepCommitted, rotation.StepGrace, rotation.StepRetired}
	c := newCrashEnv(t)
	v := 1
	for _, step := range steps {
		if !c.child("rotate", []string{"NC_KILL_STEP=" + step}, 0) {
			t.Fatalf("step %s: child was not killed", step)
		}
		v = c.check(v)
	}
	// The rollback path: verify fails, the child dies while reverting.
	for _, step := range []string{rotation.StepRollingBack, rotation.StepRolledBack} {
		if !c.child("rotate", []string{"NC_KILL_STEP=" + step, "NC_FAIL_VERIFY=1"}, 0) {
			t.Fatalf("step %s: child was not killed", step)
		}
		v = c.check(v)
	}
}

func TestCrashAtRandomMoments(t *testing.T) {
	n := 120
	if testing.Short() {
		n = 20
	}
	c := newCrashEnv(t)
	v := 1
	killed := 0
	for i := range n {
		// Slow target calls so kills land inside steps as well as between them.
		if c.child("rotate", []string{"NC_DELAY_MS=" + strconv.Itoa(i%3)}, time.Duration(rand.IntN(40_000))*time.Microsecond) {
			killed++
		}
		v = c.check(v)
	}
	if killed < n*9/10 {
		t.Fatalf("only %d of %d children were killed mid-work", killed, n)
	}
	t.Logf("%d kills; credential at version %d, always recoverable", killed, v)
}

// otherCheck opens the store and returns every generic credential's value.
func readAll(t *testing.T, dir string) map[string]string {
	t.Helper()
	m, err := credential.Open(context.Background(), childConfig(dir, false))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer m.Close()
	out := map[string]string{}
	items, _, err := m.List(context.Background(), credential.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range items {
		c, err := m.Get(context.Background(), s.ID, credential.GetOptions{})
		if err != nil {
			t.Fatalf("%s unreadable after kill: %v", s.ID, err)
		}
		for _, v := range c.Secret {
			out[s.ID] = v.Reveal()
		}
	}
	return out
}

func TestCrashDuringPut(t *testing.T) {
	c := newCrashEnv(t)
	last := map[string]int{}
	for range 25 {
		c.child("put", nil, time.Duration(rand.IntN(30_000))*time.Microsecond)
		for id, val := range readAll(t, c.dir) {
			if id == "app/db" {
				continue
			}
			// Values are "<id>-<i>"; a credential is at its old or a newer state.
			n, err := strconv.Atoi(strings.TrimPrefix(val, id+"-"))
			if err != nil {
				t.Fatalf("%s holds a value that was never written", id)
			}
			if n < last[id] {
				t.Fatalf("%s went back from %d to %d", id, last[id], n)
			}
			last[id] = n
		}
	}
}

func TestCrashDuringKeyRotate(t *testing.T) {
	c := newCrashEnv(t)
	m, _ := credential.Open(context.Background(), childConfig(c.dir, false))
	want := map[string]string{}
	for i := range 300 {
		id := fmt.Sprintf("k/%03d", i)
		v := fmt.Sprintf("value-%d", i)
		m.Put(context.Background(), id, credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"v": secret.New(v)}})
		want[id] = v
	}
	m.Close()
	for range 15 {
		c.child("keyrotate", nil, time.Duration(rand.IntN(60_000))*time.Microsecond)
		got := readAll(t, c.dir)
		for id, v := range want {
			if got[id] != v {
				t.Fatalf("%s changed or lost after a killed key rotate", id)
			}
		}
	}
	// A final uninterrupted run leaves one key in use.
	m, _ = credential.Open(context.Background(), childConfig(c.dir, false))
	defer m.Close()
	if _, err := m.RotateKEK(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ks, _ := m.Keys(context.Background())
	if len(ks) != 1 || !ks[0].Active {
		t.Fatalf("keys after a completed rotate: %+v", ks)
	}
}

func TestCrashDuringRestore(t *testing.T) {
	c := newCrashEnv(t)
	m, _ := credential.Open(context.Background(), childConfig(c.dir, false))
	for i := range 200 {
		m.Put(context.Background(), fmt.Sprintf("r/%03d", i), credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"v": secret.New(fmt.Sprintf("backup-%d", i))}})
	}
	f, _ := os.Create(filepath.Join(c.dir, "backup.ncb"))
	if _, err := m.Backup(context.Background(), f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Change every value after the backup: a credential is then either at this
	// state or at the backup's, never neither.
	for i := range 200 {
		m.Put(context.Background(), fmt.Sprintf("r/%03d", i), credential.PutRequest{Type: credential.Generic, Secret: secret.Map{"v": secret.New(fmt.Sprintf("later-%d", i))}})
	}
	m.Close()
	for range 15 {
		c.child("restore", nil, time.Duration(rand.IntN(80_000))*time.Microsecond)
		got := readAll(t, c.dir)
		restored := got["r/000"] == "backup-0"
		for i := range 200 {
			id := fmt.Sprintf("r/%03d", i)
			want := fmt.Sprintf("later-%d", i)
			if restored {
				want = fmt.Sprintf("backup-%d", i)
			}
			if got[id] != want {
				t.Fatalf("%s = partial restore (restored=%v)", id, restored)
			}
		}
	}
}

func waitForFile(path string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			if _, err := os.Stat(path); err == nil {
				close(ch)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return ch
}

// Two processes rotate the same credential at the same moment: exactly one
// rotation runs, the other gets ErrRotationInProgress.
func TestTwoProcessesRotateOnce(t *testing.T) {
	for round := range 5 {
		c := newCrashEnv(t)
		c.tg.SetDelay(5 * time.Millisecond)
		var cmds []*exec.Cmd
		var outs []*testenv.Buffer
		for range 2 {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "NC_CRASH_CHILD=once", "NC_CRASH_DIR="+c.dir)
			out := &testenv.Buffer{}
			cmd.Stdout = out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds, outs = append(cmds, cmd), append(outs, out)
		}
		// Both are ready when both printed; then release them together.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(outs[0].String(), "ready") || !strings.Contains(outs[1].String(), "ready") {
			if time.Now().After(deadline) {
				t.Fatal("children not ready")
			}
			time.Sleep(time.Millisecond)
		}
		os.WriteFile(filepath.Join(c.dir, "go"), nil, 0o600)
		for _, cmd := range cmds {
			cmd.Wait()
		}
		all := outs[0].String() + outs[1].String()
		if strings.Count(all, "rotated") != 1 || strings.Count(all, "in progress") != 1 {
			t.Fatalf("round %d: %q", round, all)
		}
		m, err := credential.Open(context.Background(), childConfig(c.dir, false))
		if err != nil {
			t.Fatal(err)
		}
		cur, err := m.Get(context.Background(), "app/db", credential.GetOptions{})
		m.Close()
		if err != nil || cur.Version != 2 || cur.State != credential.StateGrace || c.tg.Accepted("app") != 2 {
			t.Fatalf("round %d: %v version %d state %s", round, err, cur.Version, cur.State)
		}
	}
}
