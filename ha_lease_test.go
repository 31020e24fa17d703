package credential_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/rotatortest"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// TestLeaseRenewedDuringLongStep: a rotator call that takes several lease
// lifetimes is not taken over by another instance's scheduler while its
// owner is alive (the lease is renewed under it), and an owner whose
// rotation was claimed by another (as after a long pause) stops its step and
// writes nothing more.
func TestLeaseRenewedDuringLongStep(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PGStoreDB(t)
	dir := t.TempDir()
	tg := rotatortest.NewTarget(filepath.Join(dir, "target.json"))
	openM := func(owner string, create bool) *credential.Manager {
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		reg := rotator.NewRegistry()
		reg.Register(string(fakeType), tg.Rotator())
		m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: filepath.Join(dir, "root.key"), Create: create, Rotators: reg,
			Engine: rotation.Config{Owner: owner, LeaseTTL: time.Second, StepTimeout: 10 * time.Minute, TickInterval: 20 * time.Millisecond}})
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	a := openM("inst-a", true)
	b := openM("inst-b", false)
	bctx, stopB := context.WithCancel(ctx)
	bDone := make(chan struct{})
	go func() { defer close(bDone); b.Engine().Run(bctx) }()
	defer func() { stopB(); <-bDone }()

	grace := rotation.Duration(time.Hour)
	put := func(id string) {
		pw, _ := secret.PasswordPolicy{}.Generate()
		sec := secret.Map{"password": pw}
		user := strings.ReplaceAll(id, "/", "_")
		if _, err := a.Put(ctx, id, credential.PutRequest{Type: fakeType, Fields: map[string]any{"host": "fake", "username": user}, Secret: sec,
			Settings: &credential.Settings{Grace: &grace}}); err != nil {
			t.Fatal(err)
		}
		tg.AddUser(user, sec)
	}

	// Every call takes 3 lease lifetimes; B's scheduler looks every 20ms.
	put("lease/long")
	tg.SetDelay(3 * time.Second)
	r, err := a.Rotate(ctx, "lease/long", credential.RotateOptions{Reason: "long step"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != rotation.StepGrace {
		t.Fatalf("step %s, want grace", r.Step)
	}
	rs, err := a.Rotations(ctx, "lease/long", false, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Fence != 1 {
		t.Fatalf("the rotation was taken over while its owner was alive: %+v", rs)
	}

	// A's next rotation is claimed by someone else mid-step: A stops at once
	// (long before the 10-minute call would end) and its writes are refused.
	put("lease/stolen")
	tg.SetDelay(time.Second) // the stage in the planning transaction
	errc := make(chan error, 1)
	go func() {
		_, err := a.Rotate(ctx, "lease/stolen", credential.RotateOptions{Reason: "stolen"})
		errc <- err
	}()
	var id int64
	deadline := time.Now().Add(2 * time.Minute)
	for id == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the rotation never opened")
		}
		time.Sleep(5 * time.Millisecond)
		_ = a.Store().View(ctx, func(tx store.Tx) error {
			if o, err := tx.OpenRotation(ctx, "lease/stolen"); err == nil {
				id = o.ID
			}
			return nil
		})
	}
	tg.SetDelay(10 * time.Minute) // every later call
	stopB()                       // only the thief below takes it
	<-bDone
	time.Sleep(1500 * time.Millisecond) // A is inside a 10-minute call now
	var claimed *store.Rotation
	far := time.Now().Add(time.Hour)
	if err := b.Store().Update(ctx, func(tx store.Tx) error {
		var err error
		claimed, err = tx.ClaimRotation(ctx, id, "thief", far, far.Add(time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("the fenced owner's rotation succeeded")
		}
		if !errors.Is(err, store.ErrFenced) {
			t.Errorf("the fenced owner stopped with %v, want ErrFenced", err)
		}
		t.Logf("fenced owner stopped: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the fenced owner kept running its step")
	}
	_ = b.Store().View(ctx, func(tx store.Tx) error {
		cur, err := tx.GetRotation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cur.LeaseOwner != "thief" || cur.Fence != claimed.Fence || cur.Step != claimed.Step || cur.Attempt != claimed.Attempt || cur.LastError != claimed.LastError {
			t.Errorf("the fenced owner wrote after losing its lease: %+v, claimed as %+v", cur, claimed)
		}
		return nil
	})
	tg.SetDelay(0)
}
