package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// openStep returns the step of the open rotation GetCredentialState reports
// for id's current version, "" if none. The stores read the rotations table
// only when the credential's row says a rotation is open (a flag kept by
// triggers), so this is what checks the flag.
func openStep(t *testing.T, s store.Store, id string) string {
	t.Helper()
	var step string
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.GetCredentialState(t.Context(), id, "current", 0)
		noErr(t, "GetCredentialState "+id, err)
		if cs.Open != nil {
			step = cs.Open.Step
			if !cs.Open.Open || cs.Open.CredentialID != id {
				t.Errorf("%s: open rotation %+v", id, cs.Open)
			}
		}
		return nil
	})
	return step
}

// putCurrent writes credential id with version 1 as current, and nothing else.
func putCurrent(t *testing.T, s store.Store, id string) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutCredential", tx.PutCredential(ctx, credential(id, "redis")))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version(id, 1)))
		return tx.SetLabel(ctx, id, "current", 1)
	})
}

// Flag reads the open-rotation flag of credential id from the store's
// tables (a backend's test knows where).
type Flag func(t *testing.T, id string) bool

// flagged is a store with, if known, a way to read its flags.
type flagged struct {
	store.Store
	flag Flag
}

func wantStep(t *testing.T, s flagged, what, id, want string) {
	t.Helper()
	if got := openStep(t, s, id); got != want {
		t.Errorf("%s: open rotation step of %s = %q, want %q", what, id, got, want)
	}
	if s.flag != nil {
		if got := s.flag(t, id); got != (want != "") {
			t.Errorf("%s: open-rotation flag of %s = %v, want %v", what, id, got, want != "")
		}
	}
}

// testCredentialStateRotation follows the open rotation GetCredentialState
// reports through every write that opens, changes or ends a rotation.
func testCredentialStateRotation(t *testing.T, s store.Store) {
	credentialStateRotation(t, flagged{Store: s})
}

// RunRotationOpenFlag runs the checks of the CredentialStateRotation test
// of Run and checks the open-rotation flag (read by flag) at every step
// too: a flag left set when no rotation is open gives right answers, only
// slower ones.
func RunRotationOpenFlag(t *testing.T, s store.Store, flag Flag) {
	credentialStateRotation(t, flagged{s, flag})
}

func credentialStateRotation(t *testing.T, s flagged) {
	ctx := t.Context()
	putCurrent(t, s, "svc/a")
	putCurrent(t, s, "svc/b")
	wantStep(t, s, "no rotation", "svc/a", "")

	// Open, then step changes.
	r := rotation("svc/a")
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
	wantStep(t, s, "opened", "svc/a", "prepare")
	wantStep(t, s, "another credential", "svc/b", "")
	r.Step, r.Data, r.GraceEndsAt = "grace", []byte(`{"step":"grace"}`), ptr(at(time.Hour))
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) })
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.GetCredentialState(ctx, "svc/a", "current", 0)
		noErr(t, "GetCredentialState", err)
		if cs.Open == nil || cs.Open.Step != "grace" || string(cs.Open.Data) != `{"step":"grace"}` ||
			cs.Open.GraceEndsAt == nil || !cs.Open.GraceEndsAt.Equal(at(time.Hour).Truncate(time.Microsecond)) {
			t.Errorf("after a step change: %+v", cs.Open)
		}
		return nil
	})
	// A lease taken (an HA claim or a stale takeover) keeps it open.
	update(t, s, func(tx store.Tx) error {
		c, err := tx.ClaimRotation(ctx, r.ID, "node-2", at(0), at(time.Minute))
		if err == nil {
			r.LeaseOwner, r.LeaseUntil, r.Fence = c.LeaseOwner, c.LeaseUntil, c.Fence
		}
		return err
	})
	wantStep(t, s, "claimed", "svc/a", "grace")
	// A soft delete and a restore rewrite the credential's row: the flag stays.
	update(t, s, func(tx store.Tx) error {
		c := credential("svc/a", "redis")
		c.DeletedAt = ptr(at(time.Minute))
		return tx.PutCredential(ctx, c)
	})
	wantStep(t, s, "deleted", "svc/a", "grace")
	update(t, s, func(tx store.Tx) error { return tx.PutCredential(ctx, credential("svc/a", "redis")) })
	wantStep(t, s, "restored", "svc/a", "grace")

	// Ended: committed, rolled back, abandoned (the store sees a closed row
	// with its last step).
	for i, end := range []string{"committed", "rolled_back", "abandoned"} {
		if i > 0 {
			r = rotation("svc/a")
			update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
			wantStep(t, s, "reopened before "+end, "svc/a", "prepare")
		}
		r.Step, r.Open, r.FinishedAt = end, false, ptr(at(2*time.Hour))
		update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) })
		wantStep(t, s, end, "svc/a", "")
	}

	// A transaction that opens a rotation and fails leaves no flag; one that
	// ends it and fails leaves it open.
	errBoom := errors.New("boom")
	err := s.Update(ctx, func(tx store.Tx) error {
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, rotation("svc/b")))
		return errBoom
	})
	wantErr(t, "failed Update", err, errBoom)
	wantStep(t, s, "opened in a failed transaction", "svc/b", "")
	rb := rotation("svc/b")
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, rb) })
	err = s.Update(ctx, func(tx store.Tx) error {
		closed := *rb
		closed.Open, closed.Step = false, "committed"
		noErr(t, "UpdateRotation", tx.UpdateRotation(ctx, &closed))
		return errBoom
	})
	wantErr(t, "failed Update", err, errBoom)
	wantStep(t, s, "ended in a failed transaction", "svc/b", "prepare")
	// A second open rotation is refused and changes nothing.
	err = s.Update(ctx, func(tx store.Tx) error { return tx.CreateRotation(ctx, rotation("svc/b")) })
	wantErr(t, "second open rotation", err, store.ErrRotationInProgress)
	wantStep(t, s, "after a refused second rotation", "svc/b", "prepare")
	// Closed rotations written as such do not open anything.
	update(t, s, func(tx store.Tx) error {
		c := rotation("svc/a")
		c.Open, c.Step, c.FinishedAt = false, "committed", ptr(at(time.Hour))
		return tx.CreateRotation(ctx, c)
	})
	wantStep(t, s, "a closed rotation written", "svc/a", "")

	// Purged with its open rotation, then created again: nothing open.
	update(t, s, func(tx store.Tx) error { return tx.PurgeCredential(ctx, "svc/b") })
	putCurrent(t, s, "svc/b")
	wantStep(t, s, "purged and created again", "svc/b", "")

	// A rotation written before its credential's row (a restore or an import
	// writing in another order), then the row, in one transaction and in two.
	update(t, s, func(tx store.Tx) error {
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, rotation("svc/c")))
		noErr(t, "PutCredential", tx.PutCredential(ctx, credential("svc/c", "redis")))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("svc/c", 1)))
		return tx.SetLabel(ctx, "svc/c", "current", 1)
	})
	wantStep(t, s, "rotation before its credential", "svc/c", "prepare")
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, rotation("svc/d")) })
	putCurrent(t, s, "svc/d")
	wantStep(t, s, "rotation before its credential, two transactions", "svc/d", "prepare")
}

// RunUpgrade checks that upgrading a store whose schema predates the
// open-rotation flag (migration 8) sets the flag for the rotations open at
// upgrade time. open opens the store at the same place each time (migrating
// it to the latest version; RunUpgrade closes it); downgrade, called with no
// store open, takes the schema back to version 7 as an older binary left it,
// keeping the rows.
func RunUpgrade(t *testing.T, open func(t *testing.T) store.Store, downgrade func(t *testing.T), flag Flag) {
	ctx := t.Context()
	s := flagged{open(t), flag}
	for _, id := range []string{"up/open", "up/closed", "up/none", "up/grace"} {
		putCurrent(t, s, id)
	}
	update(t, s, func(tx store.Tx) error {
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, rotation("up/open")))
		closed := rotation("up/closed")
		closed.Open, closed.Step, closed.FinishedAt = false, "committed", ptr(at(time.Hour))
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, closed))
		g := rotation("up/grace")
		g.Step, g.GraceEndsAt = "grace", ptr(at(time.Hour))
		return tx.CreateRotation(ctx, g)
	})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	downgrade(t)
	s.Store = open(t)
	for id, want := range map[string]string{"up/open": "prepare", "up/closed": "", "up/none": "", "up/grace": "grace"} {
		wantStep(t, s, "after the upgrade", id, want)
	}
	// The triggers are in place after the upgrade too.
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, rotation("up/none")) })
	wantStep(t, s, "opened after the upgrade", "up/none", "prepare")
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
