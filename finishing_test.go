package credential_test

import (
	"context"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// TestRotateWhileLastOneFinishes: a rotation asked for as soon as the last
// one ended in the store (its retired event, sent while its driver still
// finishes) waits for that driver and runs; it used to fail with "already
// being driven by this process" and leave the new rotation planned.
func TestRotateWhileLastOneFinishes(t *testing.T) {
	e := newEnv(t, nil)
	e.put("app/db", nil)
	ctx := context.Background()
	got := make(chan error, 1)
	started := false
	e.m.Engine().Subscribe(func(ev rotation.Event) {
		if ev.Kind != rotation.EventRetired || started {
			return
		}
		started = true
		go func() {
			_, err := e.m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: dur(0), Reason: "right after"})
			got <- err
		}()
		// Give the second rotation the chance to meet this driver still
		// holding the credential; it must wait, not fail.
		select {
		case err := <-got:
			got <- err
		case <-time.After(time.Second):
		}
	})
	if _, err := e.m.Rotate(ctx, "app/db", credential.RotateOptions{Grace: dur(0), Reason: "first"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("rotation asked for as the last one finished: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the second rotation never returned")
	}
	if cur := e.get("app/db", "current"); cur.Version != 3 {
		t.Fatalf("current is version %d, want 3", cur.Version)
	}
}
