package credential_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/secret"
)

// TestPutMany: one transaction writes a batch; an item the store refuses
// (another type under its ID, a rotation in progress) or that fails the
// checks is reported and the others are written, each with history.
func TestPutMany(t *testing.T) {
	m := openAt(t, t.TempDir(), true, nil)
	ctx := context.Background()
	if _, err := m.Put(ctx, "app/busy", gen("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, "app/busy", credential.RotateOptions{}); err != nil {
		t.Fatal(err) // generic: now in grace, an open rotation
	}
	if _, err := m.Put(ctx, "app/typed", credential.PutRequest{Type: credential.APIKey, Secret: secret.Map{"key": secret.New("k")}}); err != nil {
		t.Fatal(err)
	}
	items := []credential.PutItem{
		{ID: "app/a", PutRequest: gen("a")},
		{ID: "app/busy", PutRequest: gen("b")},
		{ID: "app/typed", PutRequest: gen("t")},
		{ID: "Bad ID", PutRequest: gen("x")},
		{ID: "app/c", PutRequest: gen("c1")},
		{ID: "app/c", PutRequest: gen("c2")},
	}
	// A dry run reports the same outcomes and writes nothing.
	dry, err := m.PutManyDryRun(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, "app/a", credential.GetOptions{}); err == nil {
		t.Fatal("the dry run wrote app/a")
	}
	if hs, _ := m.History(ctx, "app/busy", 10); len(hs) != 2 {
		t.Fatalf("the dry run left history on app/busy: %+v", hs)
	}
	res, err := m.PutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for i := range items {
		if dry[i].Version != res[i].Version || (dry[i].Err == nil) != (res[i].Err == nil) {
			t.Errorf("item %d: dry run %d %v, import %d %v", i, dry[i].Version, dry[i].Err, res[i].Version, res[i].Err)
		}
	}
	want := []struct {
		version int
		err     error
	}{{1, nil}, {0, credential.ErrRotationInProgress}, {0, credential.ErrConflict}, {0, credential.ErrInvalid}, {1, nil}, {2, nil}}
	for i, w := range want {
		if res[i].Version != w.version || (w.err == nil) != (res[i].Err == nil) || (w.err != nil && !errors.Is(res[i].Err, w.err)) {
			t.Errorf("item %d (%s): version %d err %v; want version %d err %v", i, items[i].ID, res[i].Version, res[i].Err, w.version, w.err)
		}
	}
	c, err := m.Get(ctx, "app/c", credential.GetOptions{})
	if err != nil || c.Version != 2 || c.Secret["value"].Reveal() != "c2" {
		t.Fatalf("app/c: %+v %v", c, err)
	}
	if _, err := m.Get(ctx, "app/busy", credential.GetOptions{Version: 3}); err == nil {
		t.Fatal("the refused item was written")
	}
	hs, err := m.History(ctx, "app/a", 10)
	if err != nil || len(hs) != 1 || hs[0].Action != "put" {
		t.Fatalf("history of app/a: %+v %v", hs, err)
	}
}

// BenchmarkImport compares a batched import (PutMany, 1000 per transaction)
// with the baseline of one Put per credential, in the same run:
//
//	go test -run '^$' -bench 'Import' -benchtime 20000x .
//
// Goal: PutMany >= 2,000 credentials/s (the creds/s metric).
func BenchmarkImport(b *testing.B) {
	for _, tc := range []struct {
		name  string
		batch int
	}{{"PutLoop", 1}, {"PutMany1000", 1000}} {
		b.Run(tc.name, func(b *testing.B) {
			m, _ := benchManager(b)
			ctx := context.Background()
			n := 0
			for b.Loop() {
				if tc.batch == 1 {
					if _, err := m.Put(ctx, fmt.Sprintf("bulk/%07d", n), gen("v")); err != nil {
						b.Fatal(err)
					}
					n++
					continue
				}
				// b.N counts credentials: write a batch every tc.batch iterations.
				n++
				if n%tc.batch != 0 {
					continue
				}
				items := make([]credential.PutItem, tc.batch)
				for i := range items {
					items[i] = credential.PutItem{ID: fmt.Sprintf("bulk/%07d", n-tc.batch+i), PutRequest: gen("v")}
				}
				res, err := m.PutMany(ctx, items)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creds/s")
		})
	}
}
