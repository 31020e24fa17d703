package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

// TestNotifySurvivesSIGKILL runs the built binary's `serve` as a child
// process and SIGKILLs it between an event's commit and its delivery, 50
// times: right after the rotation's API answer (the event may not even be
// fanned out yet), or while the delivery is in flight to a receiver that
// holds it. After a last start, every committed rotation is delivered at
// least once, signed, and none is lost.
func TestNotifySurvivesSIGKILL(t *testing.T) {
	const rounds = 50
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "nebula-credential")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	dbPath, keyPath := filepath.Join(dir, "s.db"), filepath.Join(dir, "s.key")

	// The receiver holds every request until the gate opens; a held request
	// whose sender dies is not a delivery.
	var (
		mu       sync.Mutex
		got      = map[string][]byte{} // event ID -> body, delivered
		inflight = map[string]bool{}   // event IDs seen, delivered or not
		headers  = map[string]string{} // event ID -> signature
	)
	gate := make(chan struct{})
	seen := make(chan string, 1000)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		key := r.Header.Get(notify.HeaderIdempotencyKey)
		mu.Lock()
		first := !inflight[key]
		inflight[key] = true
		mu.Unlock()
		if first {
			var p notify.Payload
			_ = json.Unmarshal(b, &p)
			seen <- p.CredentialID
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		mu.Lock()
		got[key] = b
		headers[key] = r.Header.Get(notify.HeaderSignature)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go rcv.Serve(ln)
	t.Cleanup(func() { rcv.Close() })

	// The store: credentials with zero grace, an admin token, a subscription.
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: keyPath, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	zero := rotation.Duration(0)
	for i := range rounds {
		if _, err := m.Put(ctx, fmt.Sprintf("app/c%02d", i), credential.PutRequest{Type: credential.Generic,
			Secret: secret.FromStrings(map[string]string{"key": fmt.Sprintf("initial-%02d", i)}), Settings: &credential.Settings{Grace: &zero}}); err != nil {
			t.Fatal(err)
		}
	}
	_, tok, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &notify.Service{Store: m.Store(), Keys: m.SubscriptionKeys()}
	_, key, err := svc.Add(ctx, notify.AddRequest{URL: secret.New("http://" + ln.Addr().String() + "/hook"), Events: []string{notify.KindCommitted}})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()

	start := func(n int) (*exec.Cmd, string) {
		t.Helper()
		addrFile := filepath.Join(dir, fmt.Sprintf("addr%d.txt", n))
		cmd := exec.Command(bin, "serve", "--store", dbPath, "--key-file", keyPath, "--addr", "127.0.0.1:0", "--addr-file", addrFile,
			"--notify-timeout", "1s", "--notify-poll", "20ms", "--notify-backoff", "10ms", "--notify-backoff-max", "100ms", "--log-level", "error")
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
				return cmd, strings.TrimSpace(string(b))
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("serve did not write its address")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	rotate := func(base, id string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/v1/rotate/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Reveal())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("rotate %s: %d %s", id, resp.StatusCode, b)
		}
	}

	for i := range rounds {
		cmd, base := start(i)
		rotate(base, fmt.Sprintf("app/c%02d", i))
		if i%2 == 1 {
			// Wait until this event's delivery is in flight (held by the
			// receiver); earlier events may be re-sent meanwhile.
			want := fmt.Sprintf("app/c%02d", i)
			deadline := time.After(2 * time.Minute)
		wait:
			for {
				select {
				case id := <-seen:
					if id == want {
						break wait
					}
				case <-deadline:
					t.Fatalf("round %d: the delivery of %s never started", i, want)
				}
			}
		}
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
	}
	mu.Lock()
	if len(got) != 0 {
		t.Fatalf("%d deliveries completed while the receiver held them", len(got))
	}
	mu.Unlock()

	// The last start, with the receiver answering: everything arrives.
	close(gate)
	cmd, _ := start(rounds)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(3 * time.Minute)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= rounds {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the last start only %d of %d notifications arrived", n, rounds)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	creds := map[string]bool{}
	for k, b := range got {
		var p notify.Payload
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		if p.Kind != notify.KindCommitted || p.ID != k {
			t.Errorf("unexpected payload %s", b)
		}
		creds[p.CredentialID] = true
		if err := notify.Verify([]byte(key.Reveal()), headers[k], b, time.Now(), 0); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	for i := range rounds {
		if id := fmt.Sprintf("app/c%02d", i); !creds[id] {
			t.Errorf("the rotation of %s was never notified", id)
		}
	}
}
