package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServeCheckNoticesServerExit: a check waiting on an address file fails
// at once, without waiting out --wait, when the serve that wrote the file
// exits; a file no running process holds is never probed.
func TestServeCheckNoticesServerExit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := filepath.Join(t.TempDir(), "addr.txt")
	lock, err := writeAddrFile(path, []byte("http://"+ln.Addr().String()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if held, known := addrFileHeld(path); !known || !held {
		t.Fatalf("held=%v known=%v while the writer holds it", held, known)
	}
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := runWith([]string{"serve", "check", "--addr-file", path, "--wait", "10m"}, strings.NewReader(""), &out, &errb)
		done <- result{code, out.String(), errb.String()}
	}()
	// The probe's connection shows that check read the file and saw it held.
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	lock.Close() // the server exits
	conn.Close()
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute): // far below --wait: only the exit can end it
		t.Fatal("check did not notice that the server exited")
	}
	if r.code != exitFailed || !strings.Contains(r.stderr, "has exited") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// Now no process holds the file: it is not probed (another server may
	// have the port), and the error says why.
	ln.Close()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln2.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	if err := writeFileAtomic(path, []byte("http://"+ln2.Addr().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runWith([]string{"serve", "check", "--addr-file", path}, strings.NewReader(""), &out, &errb); code != exitFailed || !strings.Contains(errb.String(), "no longer running") {
		t.Fatalf("stale file: exit %d, stderr %q", code, errb.String())
	}
	select {
	case <-accepted:
		t.Fatal("check probed an address from a file no server holds")
	default:
	}
}

// TestServeCheckPidExited: with --pid, check fails at once when that
// process has exited, zombie (not yet reaped) included.
func TestServeCheckPidExited(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal("start true:", err)
	}
	pid := cmd.Process.Pid
	defer cmd.Wait()
	// Not reaped yet: a zombie once it exits.
	deadline := time.Now().Add(2 * time.Minute)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the exited child never showed as gone")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out, errb bytes.Buffer
	code := runWith([]string{"serve", "check", "--addr-file", filepath.Join(t.TempDir(), "never.txt"), "--pid", strconv.Itoa(pid), "--wait", "10m"}, strings.NewReader(""), &out, &errb)
	if code != exitFailed || !strings.Contains(errb.String(), "process "+strconv.Itoa(pid)) || !strings.Contains(errb.String(), "has exited") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if processGone(os.Getpid()) {
		t.Fatal("this process counts as gone")
	}
}
