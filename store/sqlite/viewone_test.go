package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/nebula-credential/nebula-credential/store"
)

// ViewOne runs one statement without an explicit transaction and refuses a
// second one, which would read from another snapshot.
func TestViewOneRefusesASecondStatement(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	for range 20 { // more than the readers: connections go back to the pool
		var got []byte
		if err := s.ViewOne(ctx, func(tx store.Tx) error {
			var err error
			got, err = tx.GetMeta(ctx, "k")
			return err
		}); err != nil || string(got) != "v" {
			t.Fatalf("ViewOne: %q, %v", got, err)
		}
	}
	err = s.ViewOne(ctx, func(tx store.Tx) error {
		if _, err := tx.GetMeta(ctx, "k"); err != nil {
			return err
		}
		_, err := tx.GetMeta(ctx, "k")
		return err
	})
	if err == nil {
		t.Fatal("a second statement in ViewOne succeeded")
	}
	if err := s.ViewOne(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", nil) }); err == nil {
		t.Fatal("a write in ViewOne succeeded")
	}
	// The store still writes: no read snapshot was left open.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("w")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.ViewOne(ctx, func(tx store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
