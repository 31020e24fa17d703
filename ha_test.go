package credential_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/internal/testenv"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/postgres"
)

// haInstance is one server process of a shared deployment, in-process: its
// own store connections, Manager and scheduler.
type haInstance struct {
	m    *credential.Manager
	stop context.CancelFunc
	done chan struct{}
}

func startInstance(t *testing.T, dsn, keyFile, owner string, create bool) *haInstance {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	m, err := credential.Open(ctx, credential.Config{Store: st, CloseStore: true, KeyFile: keyFile, Create: create,
		Engine: rotation.Config{Owner: owner, LeaseTTL: 4 * time.Second, TickInterval: 50 * time.Millisecond}})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	in := &haInstance{m: m, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		m.Engine().Run(rctx)
	}()
	return in
}

// kill stops the instance abruptly: its scheduler is cut off mid-step and
// its connections closed, leaving whatever leases it held to expire.
func (in *haInstance) kill() {
	in.stop()
	in.m.Close()
	<-in.done
}

// TestSchedulersShareOnePostgresStore runs three schedulers on one
// PostgreSQL store, with one of them killed and restarted over and over:
// every due time is rotated exactly once (the journal names each rotation's
// due time), and nothing stays open.
func TestSchedulersShareOnePostgresStore(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PGStoreDB(t)
	keyFile := filepath.Join(t.TempDir(), "root.key")
	ins := []*haInstance{startInstance(t, dsn, keyFile, "inst-0", true)}
	for i := 1; i < 3; i++ {
		ins = append(ins, startInstance(t, dsn, keyFile, fmt.Sprint("inst-", i), false))
	}
	defer func() {
		for _, in := range ins {
			in.kill()
		}
	}()
	const creds, want = 10, 60
	grace := rotation.Duration(0)
	for i := range creds {
		_, err := ins[0].m.Put(ctx, fmt.Sprintf("ha/%02d", i), credential.PutRequest{Type: credential.Generic,
			Secret:   secret.Map{"key": secret.New("v1")},
			Settings: &credential.Settings{Grace: &grace, Policies: []rotation.Policy{{Kind: rotation.Periodic, Interval: rotation.Duration(time.Second)}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	count := func() (total, open int) {
		for i := range creds {
			rs, err := ins[len(ins)-1].m.Rotations(ctx, fmt.Sprintf("ha/%02d", i), false, 10000)
			if err != nil {
				t.Fatal(err)
			}
			total += len(rs)
			for _, r := range rs {
				if r.Open {
					open++
				}
			}
		}
		return
	}
	deadline := time.Now().Add(3 * time.Minute)
	kills := 0
	for n := 0; ; n++ {
		if total, _ := count(); total >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d rotations before the deadline", func() int { n, _ := count(); return n }())
		}
		time.Sleep(300 * time.Millisecond)
		if n%5 == 4 { // kill one instance and start a replacement
			k := kills % len(ins)
			ins[k].kill()
			ins[k] = startInstance(t, dsn, keyFile, fmt.Sprintf("inst-%d-%d", k, kills), false)
			kills++
		}
	}
	// Stop scheduling new work and let one instance finish what is open.
	for _, in := range ins[1:] {
		in.kill()
	}
	ins = ins[:1]
	for i := range creds {
		id := fmt.Sprintf("ha/%02d", i)
		if err := ins[0].m.Store().Update(ctx, func(tx store.Tx) error {
			c, err := tx.GetCredential(ctx, id)
			if err != nil {
				return err
			}
			c.NextDueAt = nil
			return tx.PutCredential(ctx, c)
		}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		_, open := count()
		if open == 0 {
			break
		}
		if time.Now().After(deadline.Add(time.Minute)) {
			t.Fatalf("%d rotations still open", open)
		}
		time.Sleep(200 * time.Millisecond)
	}
	total := 0
	for i := range creds {
		id := fmt.Sprintf("ha/%02d", i)
		rs, err := ins[0].m.Rotations(ctx, id, false, 10000)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int64{}
		for _, r := range rs {
			total++
			if !strings.HasPrefix(r.Reason, "policy: due ") {
				t.Errorf("%s rotation %d: reason %q does not name its due time", id, r.ID, r.Reason)
				continue
			}
			if prev, dup := seen[r.Reason]; dup {
				t.Errorf("%s: due time rotated twice (rotations %d and %d: %s)", id, prev, r.ID, r.Reason)
			}
			seen[r.Reason] = r.ID
		}
		c, err := ins[0].m.Get(ctx, id, credential.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Version < 2 {
			t.Errorf("%s never rotated", id)
		}
	}
	t.Logf("%d rotations of %d credentials on 3 instances, %d kills", total, creds, kills)
}
