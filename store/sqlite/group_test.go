package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/store"
)

// Concurrent Updates share commits (group commit), and each keeps its own
// outcome: a failed or panicking fn loses its writes and only its writes, the
// others are all there, and the audit chain their entries form verifies.
func TestGroupCommit(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const writers, each = 32, 20
	errFail := errors.New("fn failed on purpose")
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("c/%02d/%02d", w, i)
				mode := (w + i) % 5
				write := func(tx store.Tx) error {
					now := time.Now()
					if err := tx.PutCredential(ctx, &store.Credential{ID: id, Type: "generic", Settings: []byte("{}"), CreatedAt: now, UpdatedAt: now}); err != nil {
						return err
					}
					if err := audit.Append(ctx, tx, audit.Entry{At: now, Action: "put", CredentialID: id, Outcome: "ok"}); err != nil {
						return err
					}
					switch mode {
					case 1:
						return errFail
					case 2:
						panic("fn panics on purpose")
					}
					return nil
				}
				var err error
				func() {
					defer func() {
						if r := recover(); r != nil {
							err = errFail
						}
					}()
					if mode == 3 {
						err = s.UpdateRelaxed(ctx, write)
					} else {
						err = s.Update(ctx, write)
					}
				}()
				switch {
				case mode == 1 || mode == 2:
					if !errors.Is(err, errFail) {
						errs <- fmt.Errorf("%s: got %v, want the fn's failure", id, err)
					}
				case err != nil:
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	kept := 0
	if err := s.View(ctx, func(tx store.Tx) error {
		for w := range writers {
			for i := range each {
				id := fmt.Sprintf("c/%02d/%02d", w, i)
				_, err := tx.GetCredential(ctx, id)
				switch mode := (w + i) % 5; {
				case mode == 1 || mode == 2:
					if !errors.Is(err, store.ErrNotFound) {
						t.Errorf("%s: a failed update's write is there (err %v)", id, err)
					}
				case err != nil:
					t.Errorf("%s: %v", id, err)
				default:
					kept++
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n, err := audit.Verify(ctx, s, nil)
	if err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	if n != int64(kept) {
		t.Errorf("audit entries = %d, want one per kept update (%d)", n, kept)
	}
	commits, updates := s.GroupStats()
	t.Logf("%d updates in %d commits", updates, commits)
	if updates != int64(kept) {
		t.Errorf("group stats count %d committed updates, want %d", updates, kept)
	}
	if commits >= updates {
		t.Errorf("%d commits for %d concurrent updates: no commit was shared", commits, updates)
	}
	// The writer keeps synchronous=NORMAL after a relaxed batch until a
	// durable one begins (the last batch of the run may be either): after a
	// durable Update it must be FULL again.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	var level int
	if err := s.writer.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != 2 {
		t.Errorf("synchronous = %d after a durable update, want 2 (FULL)", level)
	}
}

// A caller whose context is already done gets its error and does not hold up
// or spoil the others.
func TestGroupCommitCanceled(t *testing.T) {
	s := openTemp(t)
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Update(canceled, func(tx store.Tx) error { return tx.SetMeta(canceled, "k", []byte("v")) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with a canceled context: %v", err)
	}
	ctx := t.Context()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("w")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(ctx, func(tx store.Tx) error {
		v, err := tx.GetMeta(ctx, "k")
		if err == nil && string(v) != "w" {
			err = fmt.Errorf("meta k = %q, want w", v)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
