package x509

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// versions returns two distinct certificate chains and keys, padded to a
// few hundred kilobytes so a write takes long enough to be interrupted.
func versions(t *testing.T) (chains, keys [2][]byte) {
	t.Helper()
	ca, err := NewSelfSignedCA("deploy test", time.Hour*24, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		out, err := ca.Issue(IssueRequest{CommonName: "deploy.test", DNSNames: []string{"deploy.test"}})
		if err != nil {
			t.Fatal(err)
		}
		chains[i] = append(out.ChainPEM, bytes.Repeat(ca.CertPEM(), 150)...)
		keys[i] = out.KeyPEM
	}
	return chains, keys
}

func oneOf(b []byte, vs [2][]byte) bool { return bytes.Equal(b, vs[0]) || bytes.Equal(b, vs[1]) }

// Readers polling the files while they are replaced see one whole version or
// the other, never a mix or a prefix.
func TestWriteAtomicConcurrentReaders(t *testing.T) {
	chains, keys := versions(t)
	dir := t.TempDir()
	d := Deploy{Type: "file", CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	if _, err := deployFile(d, chains[0], keys[0]); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				c, err1 := os.ReadFile(d.CertFile)
				k, err2 := os.ReadFile(d.KeyFile)
				if err1 != nil || err2 != nil || !oneOf(c, chains) || !oneOf(k, keys) {
					errc <- fmt.Errorf("read a partial file (cert %d bytes, key %d bytes, errors %v %v)", len(c), len(k), err1, err2)
					return
				}
				reads.Add(1)
			}
		}()
	}
	for i := range 20 {
		changed, err := deployFile(d, chains[(i+1)%2], keys[(i+1)%2])
		if err != nil || !changed {
			t.Fatalf("deploy %d: changed %v, %v", i, changed, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if reads.Load() == 0 {
		t.Fatal("no reads happened")
	}
	// Unchanged content is not rewritten.
	if changed, err := deployFile(d, chains[0], keys[0]); err != nil || changed {
		t.Fatalf("redeploy of the same content: changed %v, %v", changed, err)
	}
	fi, err := os.Stat(d.KeyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestMain doubles as the child of TestDeployCrashLeavesWholeFiles, which
// deploys in a loop until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("NEBULA_X509_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashChild(dir string) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			panic(err)
		}
		return b
	}
	chains := [2][]byte{read("chain0"), read("chain1")}
	keys := [2][]byte{read("key0"), read("key1")}
	d := Deploy{Type: "file", CertFile: filepath.Join(dir, "out", "tls.crt"), KeyFile: filepath.Join(dir, "out", "tls.key")}
	both := Deploy{Type: "file", CertFile: filepath.Join(dir, "out", "tls.pem"), KeyFile: filepath.Join(dir, "out", "tls.pem")}
	os.WriteFile(filepath.Join(dir, "started"), nil, 0o600)
	for i := 0; ; i++ {
		if _, err := deployFile(d, chains[i%2], keys[i%2]); err != nil {
			panic(err)
		}
		if _, err := deployFile(both, chains[i%2], keys[i%2]); err != nil {
			panic(err)
		}
	}
}

// A process killed (SIGKILL) in the middle of deploying leaves every file
// whole: the old version or the new one. The next deploy removes the
// temporary files the dead process left.
func TestDeployCrashLeavesWholeFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes") // under testing.Short only
	}
	chains, keys := versions(t)
	dir := t.TempDir()
	for i := range 2 {
		os.WriteFile(filepath.Join(dir, fmt.Sprint("chain", i)), chains[i], 0o600)
		os.WriteFile(filepath.Join(dir, fmt.Sprint("key", i)), keys[i], 0o600)
	}
	os.Mkdir(filepath.Join(dir, "out"), 0o700)
	combined := [2][]byte{append(append([]byte{}, keys[0]...), chains[0]...), append(append([]byte{}, keys[1]...), chains[1]...)}
	interrupted := 0
	seen := map[string]bool{} // files some child has written whole
	for round := range 8 {
		os.Remove(filepath.Join(dir, "started"))
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "NEBULA_X509_CRASH_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("child did not start")
			}
		}
		time.Sleep(time.Duration(5+rand.IntN(60)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		if tmp, _ := filepath.Glob(filepath.Join(dir, "out", ".*.tmp-*")); len(tmp) > 0 {
			interrupted++ // killed mid-write
		}
		for _, f := range []struct {
			name string
			want [2][]byte
		}{{"tls.crt", chains}, {"tls.key", keys}, {"tls.pem", combined}} {
			b, err := os.ReadFile(filepath.Join(dir, "out", f.name))
			if os.IsNotExist(err) && !seen[f.name] {
				continue // every child so far was killed before its first write finished (a loaded machine)
			}
			seen[f.name] = true
			if err != nil || !oneOf(b, f.want) {
				t.Fatalf("round %d: %s is not a whole version (%d bytes, %v)", round, f.name, len(b), err)
			}
		}
	}
	t.Logf("%d of 8 kills interrupted a write", interrupted)
	d := Deploy{Type: "file", CertFile: filepath.Join(dir, "out", "tls.crt"), KeyFile: filepath.Join(dir, "out", "tls.key")}
	if _, err := deployFile(d, chains[0], append([]byte("# changed\n"), keys[0]...)); err != nil {
		t.Fatal(err)
	}
	if _, err := deployFile(d, chains[1], keys[1]); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "out", ".tls.crt.tmp-*"))
	left2, _ := filepath.Glob(filepath.Join(dir, "out", ".tls.key.tmp-*"))
	if len(left)+len(left2) != 0 {
		t.Fatalf("temporary files of the killed process remain: %v %v", left, left2)
	}
}

func TestReloadRunsOnlyOnChange(t *testing.T) {
	chains, keys := versions(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "reloads")
	r := New(Config{})
	d := Deploy{Type: "file", CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k"), ReloadCommand: []string{"sh", "-c", "echo x >> " + log}}
	f := &Fields{Deploy: []Deploy{d}}
	for i, v := range []int{0, 0, 1, 1, 0} {
		c := credentialOf(chains[v], keys[v])
		if _, err := r.deploy(t.Context(), f, c); err != nil {
			t.Fatalf("deploy %d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(log)
	if n := bytes.Count(b, []byte("x")); n != 3 {
		t.Fatalf("reload ran %d times for 3 changes", n)
	}
}

func credentialOf(chain, key []byte) rotator.Credential {
	return rotator.Credential{Version: 1, Fields: map[string]any{FieldCertificate: string(chain)}, Secret: secret.Map{SecretPrivateKey: secret.New(string(key))}}
}
