// Package storetest is the conformance suite of store.Store. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openEmpty(t) })
//	}
//
// open must return a new, empty store and close it when t ends (t.Cleanup).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Run runs the conformance suite, one subtest per area, each on a fresh store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Meta", testMeta},
		{"KEKs", testKEKs},
		{"Credentials", testCredentials},
		{"CredentialState", testCredentialState},
		{"CredentialStateRotation", testCredentialStateRotation},
		{"UpdateRelaxed", testUpdateRelaxed},
		{"ListCredentials", testListCredentials},
		{"PurgeCredential", testPurgeCredential},
		{"DueCredentials", testDueCredentials},
		{"Versions", testVersions},
		{"ListVersionKeys", testListVersionKeys},
		{"Labels", testLabels},
		{"CredentialWrite", testCredentialWrite},
		{"Rotations", testRotations},
		{"UpdateRotationFence", testUpdateRotationFence},
		{"ClaimRotation", testClaimRotation},
		{"ListRotations", testListRotations},
		{"DueRotations", testDueRotations},
		{"History", testHistory},
		{"Audit", testAudit},
		{"Tokens", testTokens},
		{"Events", testEvents},
		{"Consumers", testConsumers},
		{"Instances", testInstances},
		{"Notify", testNotify},
		{"Times", testTimes},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ViewSnapshot", testViewSnapshot},
		{"ViewDuringUpdate", testViewDuringUpdate},
		{"UpdateRollback", testUpdateRollback},
		{"UpdatePanic", testUpdatePanic},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentCreateRotation", testConcurrentCreateRotation},
		{"ConcurrentInsertVersion", testConcurrentInsertVersion},
		{"ConcurrentAudit", testConcurrentAudit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			tt.fn(t, s)
		})
	}
}

// t0 is a time with nanoseconds and a zone, to check that stores keep
// microseconds and return UTC.
var t0 = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+2", 2*3600))

func at(d time.Duration) time.Time { return t0.Add(d) }
func ptr(t time.Time) *time.Time   { return &t }

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// equal compares got with want after normalizing both: times to UTC with
// microsecond precision, empty byte slices to nil.
func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

var timeType = reflect.TypeFor[time.Time]()

func normalize(v any) any {
	if v == nil {
		return nil
	}
	rv := reflect.ValueOf(v)
	out := reflect.New(rv.Type()).Elem()
	normValue(out, rv)
	return out.Interface()
}

func normValue(dst, src reflect.Value) {
	switch {
	case src.Type() == timeType:
		tm := src.Interface().(time.Time)
		dst.Set(reflect.ValueOf(time.UnixMicro(tm.UnixMicro()).UTC()))
	case src.Kind() == reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(src.Type().Elem())
		normValue(p.Elem(), src.Elem())
		dst.Set(p)
	case src.Kind() == reflect.Slice && src.Type().Elem().Kind() == reflect.Uint8:
		if src.Len() > 0 {
			dst.Set(src)
		}
	case src.Kind() == reflect.Slice:
		if src.Len() == 0 {
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			normValue(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	case src.Kind() == reflect.Struct:
		for i := range src.NumField() {
			normValue(dst.Field(i), src.Field(i))
		}
	default:
		dst.Set(src)
	}
}

func credential(id, typ string) *store.Credential {
	return &store.Credential{
		ID:        id,
		Type:      typ,
		Settings:  []byte(`{"interval":"720h"}`),
		CreatedAt: at(0),
		UpdatedAt: at(time.Second),
	}
}

func version(id string, n int) *store.Version {
	return &store.Version{
		CredentialID: id,
		Version:      n,
		Fields:       []byte(`{"username":"app"}`),
		KEKID:        "kek-1",
		DataKey:      []byte(fmt.Sprintf("wrapped-key-%s-%d", id, n)),
		Ciphertext:   []byte(fmt.Sprintf("sealed-%s-%d", id, n)),
		CreatedAt:    at(time.Duration(n) * time.Minute),
	}
}

func rotation(id string) *store.Rotation {
	return &store.Rotation{
		CredentialID: id,
		Kind:         "rotate",
		Step:         "prepare",
		Open:         true,
		Strategy:     "dual",
		FromVersion:  1,
		ToVersion:    2,
		Actor:        "alice",
		Reason:       "scheduled",
		Data:         []byte(`{"k":"v"}`),
		DueAt:        at(0),
		StartedAt:    at(0),
		UpdatedAt:    at(0),
	}
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetMeta(ctx, "mode")
		wantErr(t, "GetMeta missing", err, store.ErrNotFound)
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "SetMeta", tx.SetMeta(ctx, "mode", []byte("keyfile")))
		noErr(t, "SetMeta", tx.SetMeta(ctx, "salt", []byte{0, 1, 2, 255}))
		return tx.SetMeta(ctx, "mode", []byte("passphrase"))
	})
	view(t, s, func(tx store.Tx) error {
		for key, want := range map[string][]byte{"mode": []byte("passphrase"), "salt": {0, 1, 2, 255}} {
			got, err := tx.GetMeta(ctx, key)
			noErr(t, "GetMeta", err)
			equal(t, "GetMeta "+key, got, want)
		}
		return nil
	})
}

func testKEKs(t *testing.T, s store.Store) {
	ctx := t.Context()
	k1 := store.KEK{ID: "kek-1", Wrapped: []byte("w1"), CreatedAt: at(0)}
	k2 := store.KEK{ID: "kek-2", Wrapped: []byte("w2"), CreatedAt: at(time.Hour)}
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutKEK", tx.PutKEK(ctx, &k2))
		noErr(t, "PutKEK", tx.PutKEK(ctx, &k1))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("a", 1)))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("b", 1)))
		v := version("b", 2)
		v.KEKID = "kek-2"
		return tx.InsertVersion(ctx, v)
	})
	view(t, s, func(tx store.Tx) error {
		keks, err := tx.ListKEKs(ctx)
		noErr(t, "ListKEKs", err)
		equal(t, "ListKEKs", keks, []store.KEK{k1, k2})
		for kek, want := range map[string]int{"kek-1": 2, "kek-2": 1, "kek-3": 0} {
			n, err := tx.CountVersionsByKEK(ctx, kek)
			noErr(t, "CountVersionsByKEK", err)
			if n != want {
				t.Errorf("CountVersionsByKEK(%s) = %d, want %d", kek, n, want)
			}
		}
		return nil
	})
	// Replace by ID: retire kek-1.
	k1.RetiredAt = ptr(at(2 * time.Hour))
	k1.Wrapped = []byte("rewrapped")
	update(t, s, func(tx store.Tx) error { return tx.PutKEK(ctx, &k1) })
	view(t, s, func(tx store.Tx) error {
		keks, err := tx.ListKEKs(ctx)
		noErr(t, "ListKEKs", err)
		equal(t, "ListKEKs after retire", keks, []store.KEK{k1, k2})
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "DeleteKEK", tx.DeleteKEK(ctx, "kek-1"))
		return tx.DeleteKEK(ctx, "kek-1") // idempotent
	})
	view(t, s, func(tx store.Tx) error {
		keks, err := tx.ListKEKs(ctx)
		noErr(t, "ListKEKs", err)
		equal(t, "ListKEKs after delete", keks, []store.KEK{k2})
		return nil
	})
}

func testCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := credential("db/main", "postgres")
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetCredential(ctx, c.ID)
		wantErr(t, "GetCredential missing", err, store.ErrNotFound)
		return nil
	})
	update(t, s, func(tx store.Tx) error { return tx.PutCredential(ctx, c) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetCredential(ctx, c.ID)
		noErr(t, "GetCredential", err)
		equal(t, "GetCredential", got, c)
		if got.DeletedAt != nil || got.NextDueAt != nil {
			t.Errorf("NULL times came back as %v, %v", got.DeletedAt, got.NextDueAt)
		}
		return nil
	})
	// Replace: soft delete and schedule; a soft-deleted credential is still returned.
	c.Type = "mysql"
	c.Settings = []byte(`{}`)
	c.UpdatedAt = at(time.Hour)
	c.DeletedAt = ptr(at(2 * time.Hour))
	c.NextDueAt = ptr(at(3 * time.Hour))
	update(t, s, func(tx store.Tx) error { return tx.PutCredential(ctx, c) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetCredential(ctx, c.ID)
		noErr(t, "GetCredential", err)
		equal(t, "GetCredential after replace", got, c)
		return nil
	})
}

func testCredentialState(t *testing.T, s store.Store) {
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetCredentialState(ctx, "missing", "current", 0)
		wantErr(t, "GetCredentialState missing", err, store.ErrNotFound)
		return nil
	})
	c := credential("svc/a", "redis")
	c.NextDueAt = ptr(at(time.Hour))
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutCredential", tx.PutCredential(ctx, c))
		noErr(t, "PutCredential other", tx.PutCredential(ctx, credential("svc/b", "redis")))
		for n := 1; n <= 3; n++ {
			noErr(t, "InsertVersion", tx.InsertVersion(ctx, version(c.ID, n)))
		}
		noErr(t, "InsertVersion other", tx.InsertVersion(ctx, version("svc/b", 1)))
		noErr(t, "SetLabel", tx.SetLabel(ctx, "svc/b", "current", 1))
		noErr(t, "SetLabel", tx.SetLabel(ctx, c.ID, "current", 2))
		return tx.SetLabel(ctx, c.ID, "previous", 1)
	})
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.GetCredentialState(ctx, c.ID, "current", 0)
		noErr(t, "GetCredentialState", err)
		equal(t, "labels of the version", cs.Labels, []string{"current"})
		equal(t, "version by label", cs.Version, version(c.ID, 2))
		byNumber, err := tx.GetCredentialState(ctx, c.ID, "current", 3)
		noErr(t, "GetCredentialState by number", err)
		equal(t, "version by number", byNumber.Version, version(c.ID, 3))
		equal(t, "labels of an unlabelled version", byNumber.Labels, []string(nil))
		previous, err := tx.GetCredentialState(ctx, c.ID, "", 1)
		noErr(t, "GetCredentialState by number", err)
		equal(t, "labels of version 1", previous.Labels, []string{"previous"})
		for _, q := range []struct {
			label string
			n     int
		}{{"pending", 0}, {"", 9}, {"", 0}} {
			none, err := tx.GetCredentialState(ctx, c.ID, q.label, q.n)
			noErr(t, "GetCredentialState missing version", err)
			if none.Version != nil || none.Labels != nil || none.Type != "redis" {
				t.Errorf("label %q version %d: %+v, labels %q", q.label, q.n, none.Version, none.Labels)
			}
		}
		if cs.Type != "redis" || cs.DeletedAt != nil || cs.NextDueAt == nil || !cs.NextDueAt.Equal(at(time.Hour).Truncate(time.Microsecond)) || cs.Open != nil {
			t.Errorf("state: %+v", cs)
		}
		return nil
	})
	r := rotation(c.ID)
	r.Step = "grace"
	r.GraceEndsAt = ptr(at(2 * time.Hour))
	update(t, s, func(tx store.Tx) error {
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		return tx.SetLabel(ctx, c.ID, "pending", 3)
	})
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.GetCredentialState(ctx, c.ID, "pending", 0)
		noErr(t, "GetCredentialState", err)
		equal(t, "pending version", cs.Version, version(c.ID, 3))
		equal(t, "labels of the pending version", cs.Labels, []string{"pending"})
		if cs.Open == nil || cs.Open.Step != "grace" || !cs.Open.GraceEndsAt.Equal(at(2*time.Hour).Truncate(time.Microsecond)) || string(cs.Open.Data) != `{"k":"v"}` {
			t.Errorf("open rotation: %+v", cs.Open)
		}
		other, err := tx.GetCredentialState(ctx, "svc/b", "current", 0)
		noErr(t, "GetCredentialState other", err)
		if other.Open != nil || len(other.Labels) != 1 || other.Labels[0] != "current" {
			t.Errorf("another credential's rotation or labels leaked: %+v", other)
		}
		return nil
	})
	// A version named by several labels has them all, sorted.
	update(t, s, func(tx store.Tx) error {
		noErr(t, "SetLabel", tx.SetLabel(ctx, c.ID, "previous", 3))
		return tx.SetLabel(ctx, c.ID, "current", 3)
	})
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.GetCredentialState(ctx, c.ID, "current", 0)
		noErr(t, "GetCredentialState", err)
		equal(t, "version named by three labels", cs.Version, version(c.ID, 3))
		equal(t, "its labels", cs.Labels, []string{"current", "pending", "previous"})
		old, err := tx.GetCredentialState(ctx, c.ID, "", 2)
		noErr(t, "GetCredentialState", err)
		equal(t, "labels of a version no label names", old.Labels, []string(nil))
		return nil
	})
}

// testCredentialWrite: GetCredentialWrite reads the row as GetCredential
// does, and whether a rotation is open, the highest version ever and the
// current label's version, each of this credential only.
func testCredentialWrite(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := credential("w/a", "postgres")
	c.NextDueAt = ptr(at(time.Hour))
	update(t, s, func(tx store.Tx) error {
		_, _, err := tx.GetCredentialWrite(ctx, c.ID)
		wantErr(t, "GetCredentialWrite missing", err, store.ErrNotFound)
		noErr(t, "PutCredential", tx.PutCredential(ctx, c))
		got, w, err := tx.GetCredentialWrite(ctx, c.ID)
		noErr(t, "GetCredentialWrite without versions", err)
		equal(t, "write info without versions", w, store.WriteInfo{})
		want, err := tx.GetCredential(ctx, c.ID)
		noErr(t, "GetCredential", err)
		equal(t, "row", got, want)
		noErr(t, "PutCredential other", tx.PutCredential(ctx, credential("w/b", "postgres")))
		for n := 1; n <= 3; n++ {
			noErr(t, "InsertVersion", tx.InsertVersion(ctx, version(c.ID, n)))
		}
		for n := 1; n <= 5; n++ {
			noErr(t, "InsertVersion other", tx.InsertVersion(ctx, version("w/b", n)))
		}
		noErr(t, "SetLabel other", tx.SetLabel(ctx, "w/b", "current", 4))
		noErr(t, "SetLabel", tx.SetLabel(ctx, c.ID, "previous", 1))
		noErr(t, "SetLabel", tx.SetLabel(ctx, c.ID, "current", 2))
		noErr(t, "CreateRotation other", tx.CreateRotation(ctx, rotation("w/b")))
		return tx.DeleteVersion(ctx, c.ID, 3)
	})
	r := rotation(c.ID)
	view(t, s, func(tx store.Tx) error {
		_, w, err := tx.GetCredentialWrite(ctx, c.ID)
		noErr(t, "GetCredentialWrite", err)
		equal(t, "write info", w, store.WriteInfo{MaxVersion: 3, Current: 2})
		_, w, err = tx.GetCredentialWrite(ctx, "w/b")
		noErr(t, "GetCredentialWrite other", err)
		equal(t, "other's write info", w, store.WriteInfo{Rotating: true, MaxVersion: 5, Current: 4})
		return nil
	})
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
	view(t, s, func(tx store.Tx) error {
		_, w, err := tx.GetCredentialWrite(ctx, c.ID)
		noErr(t, "GetCredentialWrite rotating", err)
		equal(t, "write info, rotation open", w, store.WriteInfo{Rotating: true, MaxVersion: 3, Current: 2})
		return nil
	})
	r.Open = false
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) })
	view(t, s, func(tx store.Tx) error {
		_, w, err := tx.GetCredentialWrite(ctx, c.ID)
		noErr(t, "GetCredentialWrite after the rotation", err)
		equal(t, "write info, rotation closed", w, store.WriteInfo{MaxVersion: 3, Current: 2})
		return nil
	})
}

func testUpdateRelaxed(t *testing.T, s store.Store) {
	ru, ok := s.(store.RelaxedUpdater)
	if !ok {
		t.Skip("store does not implement store.RelaxedUpdater (optional)")
	}
	ctx := t.Context()
	noErr(t, "UpdateRelaxed", ru.UpdateRelaxed(ctx, func(tx store.Tx) error {
		return tx.PutCredential(ctx, credential("relaxed/a", "generic"))
	}))
	boom := errors.New("boom")
	err := ru.UpdateRelaxed(ctx, func(tx store.Tx) error {
		noErr(t, "PutCredential", tx.PutCredential(ctx, credential("relaxed/b", "generic")))
		return boom
	})
	wantErr(t, "UpdateRelaxed rollback", err, boom)
	// Interleaved with ordinary updates from other goroutines.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("relaxed/c%d", i)
			put := func(tx store.Tx) error { return tx.PutCredential(ctx, credential(id, "generic")) }
			if i%2 == 0 {
				noErr(t, "UpdateRelaxed", ru.UpdateRelaxed(ctx, put))
			} else {
				noErr(t, "Update", s.Update(ctx, put))
			}
		}()
	}
	wg.Wait()
	view(t, s, func(tx store.Tx) error {
		cs, err := tx.ListCredentials(ctx, store.ListOptions{Prefix: "relaxed/"})
		noErr(t, "ListCredentials", err)
		if got := ids(cs); len(got) != 9 || got[0] != "relaxed/a" {
			t.Errorf("after relaxed updates: %v", got)
		}
		return nil
	})
}

func ids(cs []store.Credential) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func testListCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	type cred struct {
		id, typ string
		deleted bool
	}
	creds := []cred{
		{"app/a", "postgres", false},
		{"app/b", "redis", false},
		{"app/c", "postgres", true},
		{"app/c/d", "postgres", false},
		{"app0", "apikey", false},
		{"appz", "apikey", false},
		{"b", "postgres", false},
		{"ké/1", "apikey", false},
		{"kë/1", "apikey", false},
	}
	update(t, s, func(tx store.Tx) error {
		for i := len(creds) - 1; i >= 0; i-- { // insertion order must not matter
			c := credential(creds[i].id, creds[i].typ)
			if creds[i].deleted {
				c.DeletedAt = ptr(at(time.Hour))
			}
			noErr(t, "PutCredential", tx.PutCredential(ctx, c))
		}
		return nil
	})
	tests := []struct {
		opts store.ListOptions
		want []string
	}{
		{store.ListOptions{}, []string{"app/a", "app/b", "app/c/d", "app0", "appz", "b", "ké/1", "kë/1"}},
		{store.ListOptions{IncludeDeleted: true}, []string{"app/a", "app/b", "app/c", "app/c/d", "app0", "appz", "b", "ké/1", "kë/1"}},
		{store.ListOptions{Prefix: "app/"}, []string{"app/a", "app/b", "app/c/d"}},
		{store.ListOptions{Prefix: "app/", IncludeDeleted: true}, []string{"app/a", "app/b", "app/c", "app/c/d"}},
		{store.ListOptions{Prefix: "app"}, []string{"app/a", "app/b", "app/c/d", "app0", "appz"}},
		{store.ListOptions{Prefix: "app/c"}, []string{"app/c/d"}},
		{store.ListOptions{Prefix: "ké"}, []string{"ké/1"}},
		{store.ListOptions{Prefix: "k"}, []string{"ké/1", "kë/1"}},
		{store.ListOptions{Prefix: "zzz"}, []string{}},
		{store.ListOptions{Type: "postgres"}, []string{"app/a", "app/c/d", "b"}},
		{store.ListOptions{Type: "postgres", Prefix: "app/", IncludeDeleted: true}, []string{"app/a", "app/c", "app/c/d"}},
		{store.ListOptions{Type: "nope"}, []string{}},
		{store.ListOptions{Limit: 2}, []string{"app/a", "app/b"}},
		{store.ListOptions{After: "app/b", Limit: 2}, []string{"app/c/d", "app0"}},
		{store.ListOptions{After: "app/c", Limit: 2, IncludeDeleted: true}, []string{"app/c/d", "app0"}},
		{store.ListOptions{After: "app0", Prefix: "app"}, []string{"appz"}},
		{store.ListOptions{After: "a", Prefix: "b"}, []string{"b"}},
		{store.ListOptions{After: "kë/1"}, []string{}},
	}
	view(t, s, func(tx store.Tx) error {
		for _, tt := range tests {
			got, err := tx.ListCredentials(ctx, tt.opts)
			noErr(t, "ListCredentials", err)
			equal(t, fmt.Sprintf("ListCredentials(%+v)", tt.opts), ids(got), tt.want)
		}
		// Paging through everything, two at a time, visits each once.
		var all []string
		opts := store.ListOptions{Limit: 2, IncludeDeleted: true}
		for {
			page, err := tx.ListCredentials(ctx, opts)
			noErr(t, "ListCredentials", err)
			if len(page) == 0 {
				break
			}
			all = append(all, ids(page)...)
			opts.After = page[len(page)-1].ID
		}
		equal(t, "paged", all, tests[1].want)
		// Full rows come back.
		got, err := tx.ListCredentials(ctx, store.ListOptions{Prefix: "b"})
		noErr(t, "ListCredentials", err)
		equal(t, "ListCredentials rows", got, []store.Credential{*credential("b", "postgres")})
		return nil
	})
}

// seedCredential writes a credential with versions 1..n, a label, a rotation and history.
func seedCredential(t *testing.T, s store.Store, id string, n int) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutCredential", tx.PutCredential(ctx, credential(id, "postgres")))
		for i := 1; i <= n; i++ {
			noErr(t, "InsertVersion", tx.InsertVersion(ctx, version(id, i)))
		}
		noErr(t, "SetLabel", tx.SetLabel(ctx, id, "current", n))
		r := rotation(id)
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		noErr(t, "AppendHistory", tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: at(0), Action: "put"}))
		noErr(t, "AppendAudit", tx.AppendAudit(ctx, &store.AuditRecord{At: at(0), Payload: []byte(id)}))
		return tx.AppendEvent(ctx, &store.Event{At: at(0), Kind: "current_changed", CredentialID: id, Version: n})
	})
}

func testPurgeCredential(t *testing.T, s store.Store) {
	ctx := t.Context()
	seedCredential(t, s, "a", 3)
	seedCredential(t, s, "b", 2)
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PurgeCredential", tx.PurgeCredential(ctx, "a"))
		noErr(t, "PurgeCredential again", tx.PurgeCredential(ctx, "a"))
		return tx.PurgeCredential(ctx, "never-existed")
	})
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetCredential(ctx, "a")
		wantErr(t, "GetCredential purged", err, store.ErrNotFound)
		_, err = tx.GetVersion(ctx, "a", 1)
		wantErr(t, "GetVersion purged", err, store.ErrNotFound)
		vs, err := tx.ListVersions(ctx, "a")
		noErr(t, "ListVersions", err)
		labels, err := tx.Labels(ctx, "a")
		noErr(t, "Labels", err)
		rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: "a"})
		noErr(t, "ListRotations", err)
		hs, err := tx.ListHistory(ctx, "a", 0)
		noErr(t, "ListHistory", err)
		_, err = tx.OpenRotation(ctx, "a")
		wantErr(t, "OpenRotation purged", err, store.ErrNotFound)
		if len(vs) != 0 || len(labels) != 0 || len(rs) != 0 || len(hs) != 0 {
			t.Errorf("purge left versions %v, labels %v, rotations %v, history %v", vs, labels, rs, hs)
		}
		max, err := tx.MaxVersion(ctx, "a")
		noErr(t, "MaxVersion", err)
		if max != 0 {
			t.Errorf("MaxVersion after purge = %d, want 0", max)
		}
		// The other credential is intact; audit and events are kept.
		vs, err = tx.ListVersions(ctx, "b")
		noErr(t, "ListVersions", err)
		labels, err = tx.Labels(ctx, "b")
		noErr(t, "Labels", err)
		rs, err = tx.ListRotations(ctx, store.RotationFilter{CredentialID: "b"})
		noErr(t, "ListRotations", err)
		hs, err = tx.ListHistory(ctx, "b", 0)
		noErr(t, "ListHistory", err)
		if len(vs) != 2 || len(labels) != 1 || len(rs) != 1 || len(hs) != 1 {
			t.Errorf("purge of a touched b: versions %d, labels %v, rotations %d, history %d", len(vs), labels, len(rs), len(hs))
		}
		audit, err := tx.ListAudit(ctx, 0, 0)
		noErr(t, "ListAudit", err)
		events, err := tx.ListEvents(ctx, 0, 0)
		noErr(t, "ListEvents", err)
		if len(audit) != 2 || len(events) != 2 {
			t.Errorf("purge touched audit (%d records) or events (%d)", len(audit), len(events))
		}
		return nil
	})
	// The ID can be used again, from version 1.
	seedCredential(t, s, "a", 1)
}

func testDueCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	put := func(tx store.Tx, id string, due *time.Time, deleted bool) {
		c := credential(id, "postgres")
		c.NextDueAt = due
		if deleted {
			c.DeletedAt = ptr(at(0))
		}
		noErr(t, "PutCredential", tx.PutCredential(ctx, c))
	}
	var rotID int64
	update(t, s, func(tx store.Tx) error {
		put(tx, "late", ptr(now.Add(-2*time.Hour)), false)
		put(tx, "exact", ptr(now), false)
		put(tx, "early", ptr(now.Add(-3*time.Hour)), false)
		put(tx, "future", ptr(now.Add(time.Microsecond)), false)
		put(tx, "never", nil, false)
		put(tx, "deleted", ptr(now.Add(-time.Hour)), true)
		put(tx, "rotating", ptr(now.Add(-time.Hour)), false)
		put(tx, "rotated", ptr(now.Add(-time.Minute)), false)
		r := rotation("rotating")
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		r = rotation("rotated")
		r.Open = false
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		r = rotation("rotated")
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		rotID = r.ID
		return nil
	})
	due := func(limit int) []string {
		var got []store.Credential
		view(t, s, func(tx store.Tx) error {
			var err error
			got, err = tx.DueCredentials(ctx, now, limit)
			return err
		})
		return ids(got)
	}
	equal(t, "DueCredentials", due(10), []string{"early", "late", "exact"})
	equal(t, "DueCredentials limit 2", due(2), []string{"early", "late"})
	equal(t, "DueCredentials no limit", due(0), []string{"early", "late", "exact"})
	// Closing the open rotation makes its credential due again.
	update(t, s, func(tx store.Tx) error {
		r, err := tx.GetRotation(ctx, rotID)
		noErr(t, "GetRotation", err)
		r.Open = false
		r.FinishedAt = ptr(now)
		return tx.UpdateRotation(ctx, r)
	})
	equal(t, "DueCredentials after close", due(10), []string{"early", "late", "rotated", "exact"})
}

func testVersions(t *testing.T, s store.Store) {
	ctx := t.Context()
	v1, v2, v3 := version("c", 1), version("c", 2), version("c", 3)
	v2.ExpiresAt = ptr(at(24 * time.Hour))
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetVersion(ctx, "c", 1)
		wantErr(t, "GetVersion missing", err, store.ErrNotFound)
		n, err := tx.MaxVersion(ctx, "c")
		noErr(t, "MaxVersion", err)
		if n != 0 {
			t.Errorf("MaxVersion of nothing = %d", n)
		}
		vs, err := tx.ListVersions(ctx, "c")
		noErr(t, "ListVersions", err)
		if len(vs) != 0 {
			t.Errorf("ListVersions of nothing = %v", vs)
		}
		ns, err := tx.VersionNumbers(ctx, "c")
		noErr(t, "VersionNumbers", err)
		if len(ns) != 0 {
			t.Errorf("VersionNumbers of nothing = %v", ns)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, v3))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, v1))
		return tx.InsertVersion(ctx, v2)
	})
	err := s.Update(ctx, func(tx store.Tx) error {
		dup := version("c", 2)
		dup.Ciphertext = []byte("other")
		return tx.InsertVersion(ctx, dup)
	})
	wantErr(t, "InsertVersion duplicate", err, store.ErrConflict)
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetVersion(ctx, "c", 2)
		noErr(t, "GetVersion", err)
		equal(t, "GetVersion", got, v2)
		vs, err := tx.ListVersions(ctx, "c")
		noErr(t, "ListVersions", err)
		equal(t, "ListVersions", vs, []store.Version{*v1, *v2, *v3})
		ns, err := tx.VersionNumbers(ctx, "c")
		noErr(t, "VersionNumbers", err)
		equal(t, "VersionNumbers", ns, []int{1, 2, 3})
		n, err := tx.MaxVersion(ctx, "c")
		noErr(t, "MaxVersion", err)
		if n != 3 {
			t.Errorf("MaxVersion = %d, want 3", n)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "UpdateVersionKey", tx.UpdateVersionKey(ctx, "c", 2, "kek-2", []byte("rewrapped")))
		wantErr(t, "UpdateVersionKey missing", tx.UpdateVersionKey(ctx, "c", 9, "kek-2", []byte("x")), store.ErrNotFound)
		noErr(t, "DeleteVersion", tx.DeleteVersion(ctx, "c", 3))
		return tx.DeleteVersion(ctx, "c", 3) // idempotent
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetVersion(ctx, "c", 2)
		noErr(t, "GetVersion", err)
		want := *v2
		want.KEKID, want.DataKey = "kek-2", []byte("rewrapped")
		equal(t, "GetVersion after rewrap", got, &want)
		_, err = tx.GetVersion(ctx, "c", 3)
		wantErr(t, "GetVersion deleted", err, store.ErrNotFound)
		ns, err := tx.VersionNumbers(ctx, "c")
		noErr(t, "VersionNumbers after delete", err)
		equal(t, "VersionNumbers after delete", ns, []int{1, 2})
		// MaxVersion counts versions ever inserted.
		n, err := tx.MaxVersion(ctx, "c")
		noErr(t, "MaxVersion", err)
		if n != 3 {
			t.Errorf("MaxVersion after deleting the newest = %d, want 3", n)
		}
		return nil
	})
}

func testListVersionKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"b", "a", "c"} {
			for n := 1; n <= 3; n++ {
				noErr(t, "InsertVersion", tx.InsertVersion(ctx, version(id, n)))
			}
		}
		return nil
	})
	type key struct {
		ID string
		N  int
	}
	var got []key
	view(t, s, func(tx store.Tx) error {
		afterID, afterN := "", 0
		for {
			page, err := tx.ListVersionKeys(ctx, afterID, afterN, 2)
			noErr(t, "ListVersionKeys", err)
			if len(page) == 0 {
				return nil
			}
			if len(page) > 2 {
				t.Fatalf("ListVersionKeys returned %d > limit 2", len(page))
			}
			for _, v := range page {
				if len(v.Ciphertext) != 0 {
					t.Errorf("ListVersionKeys returned a ciphertext for %s/%d", v.CredentialID, v.Version)
				}
				want := version(v.CredentialID, v.Version)
				want.Ciphertext = nil
				equal(t, "ListVersionKeys row", v, *want)
				got = append(got, key{v.CredentialID, v.Version})
			}
			last := page[len(page)-1]
			afterID, afterN = last.CredentialID, last.Version
		}
	})
	want := []key{{"a", 1}, {"a", 2}, {"a", 3}, {"b", 1}, {"b", 2}, {"b", 3}, {"c", 1}, {"c", 2}, {"c", 3}}
	equal(t, "ListVersionKeys", got, want)
	view(t, s, func(tx store.Tx) error {
		page, err := tx.ListVersionKeys(ctx, "b", 2, 0)
		noErr(t, "ListVersionKeys", err)
		if len(page) != 4 || page[0].CredentialID != "b" || page[0].Version != 3 {
			t.Errorf("ListVersionKeys after b/2 = %v", page)
		}
		return nil
	})
}

func testLabels(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for n := 1; n <= 3; n++ {
			noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("l", n)))
		}
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("other", 1)))
		return nil
	})
	labels := func() map[string]int {
		var m map[string]int
		view(t, s, func(tx store.Tx) error {
			var err error
			m, err = tx.Labels(ctx, "l")
			return err
		})
		return m
	}
	if m := labels(); m == nil || len(m) != 0 {
		t.Fatalf("Labels with none = %#v, want an empty map", m)
	}
	update(t, s, func(tx store.Tx) error {
		noErr(t, "SetLabel", tx.SetLabel(ctx, "l", "current", 1))
		noErr(t, "SetLabel", tx.SetLabel(ctx, "l", "previous", 1))
		noErr(t, "SetLabel", tx.SetLabel(ctx, "other", "current", 1))
		return nil
	})
	equal(t, "Labels", labels(), map[string]int{"current": 1, "previous": 1})
	// A label sits on one version: setting it again moves it.
	update(t, s, func(tx store.Tx) error {
		noErr(t, "SetLabel", tx.SetLabel(ctx, "l", "current", 3))
		return tx.SetLabel(ctx, "l", "next", 2)
	})
	equal(t, "Labels after move", labels(), map[string]int{"current": 3, "previous": 1, "next": 2})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "SetLabel 0", tx.SetLabel(ctx, "l", "next", 0))
		noErr(t, "SetLabel 0 again", tx.SetLabel(ctx, "l", "next", 0))
		wantErr(t, "SetLabel on a missing version", tx.SetLabel(ctx, "l", "current", 7), store.ErrNotFound)
		return nil
	})
	equal(t, "Labels after remove", labels(), map[string]int{"current": 3, "previous": 1})
	// Deleting a version removes its labels.
	update(t, s, func(tx store.Tx) error { return tx.DeleteVersion(ctx, "l", 1) })
	equal(t, "Labels after DeleteVersion", labels(), map[string]int{"current": 3})
	view(t, s, func(tx store.Tx) error {
		m, err := tx.Labels(ctx, "other")
		noErr(t, "Labels", err)
		equal(t, "Labels of other", m, map[string]int{"current": 1})
		return nil
	})
}

func testRotations(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := rotation("x")
	r.GraceEndsAt = ptr(at(time.Hour))
	r.LeaseOwner, r.LeaseUntil, r.Fence = "node-1", at(time.Minute), 7
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetRotation(ctx, 1)
		wantErr(t, "GetRotation missing", err, store.ErrNotFound)
		_, err = tx.OpenRotation(ctx, "x")
		wantErr(t, "OpenRotation missing", err, store.ErrNotFound)
		return nil
	})
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
	if r.ID == 0 {
		t.Fatal("CreateRotation did not set ID")
	}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRotation(ctx, r.ID)
		noErr(t, "GetRotation", err)
		equal(t, "GetRotation", got, r)
		got, err = tx.OpenRotation(ctx, "x")
		noErr(t, "OpenRotation", err)
		equal(t, "OpenRotation", got, r)
		return nil
	})
	err := s.Update(ctx, func(tx store.Tx) error { return tx.CreateRotation(ctx, rotation("x")) })
	wantErr(t, "second open rotation", err, store.ErrRotationInProgress)
	// Closed rotations do not count; other credentials are independent.
	var closed, y *store.Rotation
	update(t, s, func(tx store.Tx) error {
		closed = rotation("x")
		closed.Open = false
		closed.FinishedAt = ptr(at(time.Hour))
		noErr(t, "CreateRotation closed", tx.CreateRotation(ctx, closed))
		y = rotation("y")
		return tx.CreateRotation(ctx, y)
	})
	if closed.ID == r.ID || y.ID == r.ID || y.ID == closed.ID {
		t.Fatalf("rotation IDs not distinct: %d %d %d", r.ID, closed.ID, y.ID)
	}
	// Closing r, then a new rotation may open.
	r.Open, r.Step, r.FinishedAt = false, "done", ptr(at(2*time.Hour))
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) })
	var next *store.Rotation
	update(t, s, func(tx store.Tx) error {
		next = rotation("x")
		return tx.CreateRotation(ctx, next)
	})
	// Reopening r while next is open is refused.
	err = s.Update(ctx, func(tx store.Tx) error {
		r.Open = true
		return tx.UpdateRotation(ctx, r)
	})
	r.Open = false
	wantErr(t, "reopening a rotation", err, store.ErrRotationInProgress)
	view(t, s, func(tx store.Tx) error {
		got, err := tx.OpenRotation(ctx, "x")
		noErr(t, "OpenRotation", err)
		equal(t, "OpenRotation", got, next)
		got, err = tx.GetRotation(ctx, r.ID)
		noErr(t, "GetRotation", err)
		equal(t, "GetRotation closed", got, r)
		return nil
	})
}

func testUpdateRotationFence(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := rotation("f")
	r.Fence = 3
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
	r.Step, r.Attempt, r.LastError, r.ErrorClass = "apply", 2, "timeout", "transient"
	r.Data = []byte(`{"step":"apply"}`)
	r.UpdatedAt = at(time.Minute)
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, r) })
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRotation(ctx, r.ID)
		noErr(t, "GetRotation", err)
		equal(t, "GetRotation after UpdateRotation", got, r)
		return nil
	})
	stale := *r
	stale.Fence = 2
	stale.Step = "stale"
	err := s.Update(ctx, func(tx store.Tx) error { return tx.UpdateRotation(ctx, &stale) })
	wantErr(t, "UpdateRotation with a stale fence", err, store.ErrFenced)
	missing := *r
	missing.ID = r.ID + 1000
	err = s.Update(ctx, func(tx store.Tx) error { return tx.UpdateRotation(ctx, &missing) })
	wantErr(t, "UpdateRotation of a missing rotation", err, store.ErrNotFound)
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRotation(ctx, r.ID)
		noErr(t, "GetRotation", err)
		equal(t, "GetRotation after fenced update", got, r)
		return nil
	})
}

func testClaimRotation(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	r := rotation("c")
	update(t, s, func(tx store.Tx) error { return tx.CreateRotation(ctx, r) })
	claim := func(owner string, now, until time.Time) (*store.Rotation, error) {
		var got *store.Rotation
		err := s.Update(ctx, func(tx store.Tx) error {
			var err error
			got, err = tx.ClaimRotation(ctx, r.ID, owner, now, until)
			return err
		})
		return got, err
	}
	// A free lease (zero LeaseUntil) is taken; the fence goes up.
	got, err := claim("a", now, now.Add(time.Minute))
	noErr(t, "ClaimRotation free", err)
	want := *r
	want.LeaseOwner, want.LeaseUntil, want.Fence = "a", now.Add(time.Minute), r.Fence+1
	equal(t, "ClaimRotation", got, &want)
	// Another owner cannot take a live lease.
	_, err = claim("b", now.Add(30*time.Second), now.Add(2*time.Minute))
	wantErr(t, "ClaimRotation of a live lease", err, store.ErrFenced)
	// The owner renews its own lease; the fence still goes up.
	got, err = claim("a", now.Add(30*time.Second), now.Add(2*time.Minute))
	noErr(t, "ClaimRotation renew", err)
	if got.Fence != r.Fence+2 || !got.LeaseUntil.Equal(now.Add(2*time.Minute).Truncate(time.Microsecond)) {
		t.Fatalf("renewed claim: fence %d, lease until %v", got.Fence, got.LeaseUntil)
	}
	aFence := got.Fence
	// At the expiry instant the lease is free: b takes over and a is fenced out.
	got, err = claim("b", now.Add(2*time.Minute), now.Add(3*time.Minute))
	noErr(t, "ClaimRotation expired", err)
	if got.LeaseOwner != "b" || got.Fence != aFence+1 {
		t.Fatalf("takeover: owner %q fence %d", got.LeaseOwner, got.Fence)
	}
	stale := *got
	stale.Fence = aFence
	stale.Step = "a-was-here"
	err = s.Update(ctx, func(tx store.Tx) error { return tx.UpdateRotation(ctx, &stale) })
	wantErr(t, "UpdateRotation by the old owner", err, store.ErrFenced)
	// The new owner writes with its fence.
	got.Step = "b-was-here"
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, got) })
	view(t, s, func(tx store.Tx) error {
		cur, err := tx.GetRotation(ctx, r.ID)
		noErr(t, "GetRotation", err)
		equal(t, "GetRotation after takeover", cur, got)
		return nil
	})
	// Closed and missing rotations cannot be claimed.
	got.Open = false
	update(t, s, func(tx store.Tx) error { return tx.UpdateRotation(ctx, got) })
	_, err = claim("b", now.Add(time.Hour), now.Add(2*time.Hour))
	wantErr(t, "ClaimRotation closed", err, store.ErrFenced)
	err = s.Update(ctx, func(tx store.Tx) error {
		_, err := tx.ClaimRotation(ctx, r.ID+1000, "a", now, now)
		return err
	})
	wantErr(t, "ClaimRotation missing", err, store.ErrNotFound)
}

func rotationIDs(rs []store.Rotation) []int64 {
	out := []int64{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func testListRotations(t *testing.T, s store.Store) {
	ctx := t.Context()
	var a1, b1, a2, b2 *store.Rotation
	update(t, s, func(tx store.Tx) error {
		a1 = rotation("a")
		a1.Open = false
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, a1))
		b1 = rotation("b")
		b1.Open = false
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, b1))
		a2 = rotation("a")
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, a2))
		b2 = rotation("b")
		return tx.CreateRotation(ctx, b2)
	})
	tests := []struct {
		f    store.RotationFilter
		want []int64
	}{
		{store.RotationFilter{}, []int64{b2.ID, a2.ID, b1.ID, a1.ID}},
		{store.RotationFilter{Limit: 3}, []int64{b2.ID, a2.ID, b1.ID}},
		{store.RotationFilter{OpenOnly: true}, []int64{b2.ID, a2.ID}},
		{store.RotationFilter{CredentialID: "a"}, []int64{a2.ID, a1.ID}},
		{store.RotationFilter{CredentialID: "a", Limit: 1}, []int64{a2.ID}},
		{store.RotationFilter{CredentialID: "b", OpenOnly: true}, []int64{b2.ID}},
		{store.RotationFilter{CredentialID: "zz"}, []int64{}},
	}
	view(t, s, func(tx store.Tx) error {
		for _, tt := range tests {
			got, err := tx.ListRotations(ctx, tt.f)
			noErr(t, "ListRotations", err)
			equal(t, fmt.Sprintf("ListRotations(%+v)", tt.f), rotationIDs(got), tt.want)
		}
		got, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: "b", OpenOnly: true})
		noErr(t, "ListRotations", err)
		equal(t, "ListRotations rows", got, []store.Rotation{*b2})
		return nil
	})
}

func testDueRotations(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	mk := func(tx store.Tx, id string, due time.Time, open bool, leaseUntil time.Time) *store.Rotation {
		r := rotation(id)
		r.DueAt, r.Open, r.LeaseUntil = due, open, leaseUntil
		if leaseUntil.After(now) {
			r.LeaseOwner = "someone"
		}
		noErr(t, "CreateRotation", tx.CreateRotation(ctx, r))
		return r
	}
	var late, exact, early, expired *store.Rotation
	update(t, s, func(tx store.Tx) error {
		late = mk(tx, "late", now.Add(-time.Minute), true, time.Time{})
		exact = mk(tx, "exact", now, true, time.Time{})
		early = mk(tx, "early", now.Add(-time.Hour), true, time.Time{})
		expired = mk(tx, "expired", now.Add(-30*time.Minute), true, now) // lease ends now: free
		mk(tx, "future", now.Add(time.Microsecond), true, time.Time{})
		mk(tx, "closed", now.Add(-time.Hour), false, time.Time{})
		mk(tx, "leased", now.Add(-time.Hour), true, now.Add(time.Second))
		return nil
	})
	due := func(limit int) []int64 {
		var got []store.Rotation
		view(t, s, func(tx store.Tx) error {
			var err error
			got, err = tx.DueRotations(ctx, now, limit)
			return err
		})
		return rotationIDs(got)
	}
	equal(t, "DueRotations", due(10), []int64{early.ID, expired.ID, late.ID, exact.ID})
	equal(t, "DueRotations limit", due(2), []int64{early.ID, expired.ID})
	equal(t, "DueRotations no limit", due(0), []int64{early.ID, expired.ID, late.ID, exact.ID})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.DueRotations(ctx, now, 1)
		noErr(t, "DueRotations", err)
		equal(t, "DueRotations rows", got, []store.Rotation{*early})
		return nil
	})
}

func testHistory(t *testing.T, s store.Store) {
	ctx := t.Context()
	var hs []*store.HistoryEntry
	update(t, s, func(tx store.Tx) error {
		for i := range 3 {
			h := &store.HistoryEntry{
				CredentialID: "h", At: at(time.Duration(i) * time.Minute), Action: "rotate",
				Actor: "bob", Reason: "policy", FromVersion: i, ToVersion: i + 1, RotationID: int64(10 + i),
				Outcome: "ok", Detail: "switched", DurationMS: int64(100 * i),
			}
			noErr(t, "AppendHistory", tx.AppendHistory(ctx, h))
			hs = append(hs, h)
		}
		return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: "other", At: at(0), Action: "put"})
	})
	if hs[0].ID == 0 || hs[0].ID == hs[1].ID {
		t.Fatalf("AppendHistory IDs: %d %d", hs[0].ID, hs[1].ID)
	}
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListHistory(ctx, "h", 0)
		noErr(t, "ListHistory", err)
		equal(t, "ListHistory", got, []store.HistoryEntry{*hs[2], *hs[1], *hs[0]})
		got, err = tx.ListHistory(ctx, "h", 2)
		noErr(t, "ListHistory", err)
		equal(t, "ListHistory limit", got, []store.HistoryEntry{*hs[2], *hs[1]})
		got, err = tx.ListHistory(ctx, "none", 5)
		noErr(t, "ListHistory", err)
		if len(got) != 0 {
			t.Errorf("ListHistory of none = %v", got)
		}
		return nil
	})
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		_, err := tx.LastAudit(ctx)
		wantErr(t, "LastAudit empty", err, store.ErrNotFound)
		return nil
	})
	var recs []store.AuditRecord
	for i := range 4 {
		update(t, s, func(tx store.Tx) error {
			a := &store.AuditRecord{At: at(time.Duration(i) * time.Second), Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)),
				Hash: []byte(fmt.Sprintf("hash-%d", i))}
			if prev, err := tx.LastAudit(ctx); err == nil {
				a.PrevHash = prev.Hash
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := tx.AppendAudit(ctx, a); err != nil {
				return err
			}
			if a.Seq != int64(i+1) {
				t.Errorf("AppendAudit Seq = %d, want %d", a.Seq, i+1)
			}
			recs = append(recs, *a)
			return nil
		})
	}
	view(t, s, func(tx store.Tx) error {
		last, err := tx.LastAudit(ctx)
		noErr(t, "LastAudit", err)
		equal(t, "LastAudit", last, &recs[3])
		got, err := tx.ListAudit(ctx, 0, 0)
		noErr(t, "ListAudit", err)
		equal(t, "ListAudit", got, recs)
		got, err = tx.ListAudit(ctx, 1, 2)
		noErr(t, "ListAudit", err)
		equal(t, "ListAudit after 1 limit 2", got, recs[1:3])
		got, err = tx.ListAudit(ctx, 4, 10)
		noErr(t, "ListAudit", err)
		if len(got) != 0 {
			t.Errorf("ListAudit after the last = %v", got)
		}
		return nil
	})
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	t1 := store.Token{ID: "t1", Name: "ci", Hash: []byte("h1"), Grants: []byte(`["read:*"]`), CreatedAt: at(0)}
	t2 := store.Token{ID: "t2", Name: "ops", Hash: []byte("h2"), Grants: []byte(`["*"]`), CreatedAt: at(0), ExpiresAt: ptr(at(time.Hour))}
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetTokenByHash(ctx, []byte("h1"))
		wantErr(t, "GetTokenByHash missing", err, store.ErrNotFound)
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "PutToken", tx.PutToken(ctx, &t2))
		return tx.PutToken(ctx, &t1)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetTokenByHash(ctx, []byte("h2"))
		noErr(t, "GetTokenByHash", err)
		equal(t, "GetTokenByHash", got, &t2)
		all, err := tx.ListTokens(ctx)
		noErr(t, "ListTokens", err)
		equal(t, "ListTokens", all, []store.Token{t1, t2})
		return nil
	})
	err := s.Update(ctx, func(tx store.Tx) error {
		return tx.PutToken(ctx, &store.Token{ID: "t3", Name: "dup", Hash: []byte("h1"), CreatedAt: at(0)})
	})
	wantErr(t, "PutToken with a taken hash", err, store.ErrConflict)
	// Replace by ID with a new hash; the old hash no longer finds it.
	t1.Hash, t1.Name = []byte("h1b"), "ci-2"
	update(t, s, func(tx store.Tx) error { return tx.PutToken(ctx, &t1) })
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetTokenByHash(ctx, []byte("h1"))
		wantErr(t, "GetTokenByHash old hash", err, store.ErrNotFound)
		got, err := tx.GetTokenByHash(ctx, []byte("h1b"))
		noErr(t, "GetTokenByHash", err)
		equal(t, "GetTokenByHash replaced", got, &t1)
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		noErr(t, "DeleteToken", tx.DeleteToken(ctx, "t1"))
		return tx.DeleteToken(ctx, "t1")
	})
	view(t, s, func(tx store.Tx) error {
		all, err := tx.ListTokens(ctx)
		noErr(t, "ListTokens", err)
		equal(t, "ListTokens after delete", all, []store.Token{t2})
		return nil
	})
}

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	var evs []store.Event
	update(t, s, func(tx store.Tx) error {
		for i := range 3 {
			e := store.Event{At: at(time.Duration(i) * time.Second), Kind: "current_changed",
				CredentialID: "e", Version: i + 1, Detail: []byte(`{"by":"test"}`)}
			noErr(t, "AppendEvent", tx.AppendEvent(ctx, &e))
			evs = append(evs, e)
		}
		return nil
	})
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("event Seq not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
		}
	}
	var e4 store.Event
	update(t, s, func(tx store.Tx) error {
		e4 = store.Event{At: at(time.Minute), Kind: "rotation_failed", CredentialID: "f"}
		return tx.AppendEvent(ctx, &e4)
	})
	if e4.Seq <= evs[2].Seq {
		t.Fatalf("event Seq in a later transaction %d <= %d", e4.Seq, evs[2].Seq)
	}
	evs = append(evs, e4)
	view(t, s, func(tx store.Tx) error {
		got, err := tx.ListEvents(ctx, 0, 0)
		noErr(t, "ListEvents", err)
		equal(t, "ListEvents", got, evs)
		got, err = tx.ListEvents(ctx, evs[0].Seq, 2)
		noErr(t, "ListEvents", err)
		equal(t, "ListEvents after first, limit 2", got, evs[1:3])
		got, err = tx.ListEvents(ctx, e4.Seq, 0)
		noErr(t, "ListEvents", err)
		if len(got) != 0 {
			t.Errorf("ListEvents after the last = %v", got)
		}
		return nil
	})
}

func testTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	local := time.FixedZone("UTC-7", -7*3600)
	tests := []time.Time{
		time.Date(2030, 1, 2, 3, 4, 5, 6_789, local), // sub-microsecond: truncated
		time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1969, 7, 20, 20, 17, 40, 500_000, local), // before the Unix epoch
		time.Unix(0, 0),
	}
	for i, tm := range tests {
		id := fmt.Sprintf("t%d", i)
		c := credential(id, "x")
		c.CreatedAt, c.UpdatedAt, c.NextDueAt = tm, time.Time{}, ptr(tm)
		update(t, s, func(tx store.Tx) error { return tx.PutCredential(ctx, c) })
		view(t, s, func(tx store.Tx) error {
			got, err := tx.GetCredential(ctx, id)
			noErr(t, "GetCredential", err)
			want := tm.Truncate(time.Microsecond)
			for _, g := range []time.Time{got.CreatedAt, *got.NextDueAt} {
				if g.Location() != time.UTC {
					t.Errorf("time %v came back in %v, want UTC", g, g.Location())
				}
				if !g.Equal(want) {
					t.Errorf("time %v came back as %v, want %v", tm, g, want)
				}
			}
			if !got.UpdatedAt.IsZero() {
				t.Errorf("zero time came back as %v", got.UpdatedAt)
			}
			if got.DeletedAt != nil {
				t.Errorf("nil time came back as %v", got.DeletedAt)
			}
			return nil
		})
	}
}

func testViewIsReadOnly(t *testing.T, s store.Store) {
	ctx := t.Context()
	seedCredential(t, s, "ro", 1)
	writes := map[string]func(tx store.Tx) error{
		"SetMeta":       func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v")) },
		"PutKEK":        func(tx store.Tx) error { return tx.PutKEK(ctx, &store.KEK{ID: "k", CreatedAt: at(0)}) },
		"DeleteKEK":     func(tx store.Tx) error { return tx.DeleteKEK(ctx, "k") },
		"PutCredential": func(tx store.Tx) error { return tx.PutCredential(ctx, credential("new", "x")) },
		"PurgeCredential": func(tx store.Tx) error {
			return tx.PurgeCredential(ctx, "ro")
		},
		"InsertVersion": func(tx store.Tx) error { return tx.InsertVersion(ctx, version("ro", 2)) },
		"UpdateVersionKey": func(tx store.Tx) error {
			return tx.UpdateVersionKey(ctx, "ro", 1, "k", []byte("x"))
		},
		"DeleteVersion":  func(tx store.Tx) error { return tx.DeleteVersion(ctx, "ro", 1) },
		"SetLabel":       func(tx store.Tx) error { return tx.SetLabel(ctx, "ro", "x", 1) },
		"CreateRotation": func(tx store.Tx) error { return tx.CreateRotation(ctx, rotation("new")) },
		"UpdateRotation": func(tx store.Tx) error {
			r, err := tx.OpenRotation(ctx, "ro")
			if err != nil {
				t.Fatalf("OpenRotation: %v", err)
			}
			return tx.UpdateRotation(ctx, r)
		},
		"ClaimRotation": func(tx store.Tx) error {
			r, err := tx.OpenRotation(ctx, "ro")
			if err != nil {
				t.Fatalf("OpenRotation: %v", err)
			}
			_, err = tx.ClaimRotation(ctx, r.ID, "me", at(0), at(time.Hour))
			return err
		},
		"AppendHistory": func(tx store.Tx) error {
			return tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: "ro", At: at(0)})
		},
		"AppendAudit": func(tx store.Tx) error { return tx.AppendAudit(ctx, &store.AuditRecord{At: at(0)}) },
		"PutToken": func(tx store.Tx) error {
			return tx.PutToken(ctx, &store.Token{ID: "t", Hash: []byte("h"), CreatedAt: at(0)})
		},
		"DeleteToken": func(tx store.Tx) error { return tx.DeleteToken(ctx, "t") },
		"AppendEvent": func(tx store.Tx) error { return tx.AppendEvent(ctx, &store.Event{At: at(0)}) },
	}
	for name, write := range writes {
		err := s.View(ctx, func(tx store.Tx) error {
			if err := write(tx); err == nil {
				t.Errorf("%s in a View succeeded", name)
			}
			return nil
		})
		noErr(t, "View", err)
	}
	view(t, s, func(tx store.Tx) error {
		if vs, err := tx.ListVersions(ctx, "ro"); err != nil || len(vs) != 1 {
			t.Errorf("versions after writes in a View: %v, %v", vs, err)
		}
		if _, err := tx.GetCredential(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a View wrote a credential: %v", err)
		}
		return nil
	})
}

// testViewSnapshot checks that a View sees one snapshot: an Update committed
// after its first read is invisible to it.
func testViewSnapshot(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("v1")) })
	view(t, s, func(tx store.Tx) error {
		v, err := tx.GetMeta(ctx, "k")
		noErr(t, "GetMeta", err)
		equal(t, "first read", v, []byte("v1"))
		update(t, s, func(tx store.Tx) error {
			noErr(t, "PutCredential", tx.PutCredential(ctx, credential("snap", "x")))
			return tx.SetMeta(ctx, "k", []byte("v2"))
		})
		v, err = tx.GetMeta(ctx, "k")
		noErr(t, "GetMeta", err)
		equal(t, "read after a concurrent commit", v, []byte("v1"))
		_, err = tx.GetCredential(ctx, "snap")
		wantErr(t, "credential committed after the snapshot", err, store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		v, err := tx.GetMeta(ctx, "k")
		noErr(t, "GetMeta", err)
		equal(t, "read in a new View", v, []byte("v2"))
		return nil
	})
}

// testViewDuringUpdate checks that a View neither waits for an Update in
// progress nor sees its uncommitted writes.
func testViewDuringUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", []byte("old")) })
	done := make(chan error, 1)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.SetMeta(ctx, "k", []byte("new")); err != nil {
			return err
		}
		go func() {
			done <- s.View(ctx, func(tx store.Tx) error {
				v, err := tx.GetMeta(ctx, "k")
				if err == nil && string(v) != "old" {
					err = fmt.Errorf("View saw an uncommitted write: %q", v)
				}
				return err
			})
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("View blocked behind an Update")
		}
	})
	noErr(t, "Update with a View inside", err)
}

var errBoom = errors.New("boom")

func testUpdateRollback(t *testing.T, s store.Store) {
	ctx := t.Context()
	seedCredential(t, s, "rb", 1)
	err := s.Update(ctx, func(tx store.Tx) error {
		noErr(t, "PutCredential", tx.PutCredential(ctx, credential("rb-new", "x")))
		noErr(t, "InsertVersion", tx.InsertVersion(ctx, version("rb", 2)))
		noErr(t, "SetLabel", tx.SetLabel(ctx, "rb", "current", 2))
		noErr(t, "SetMeta", tx.SetMeta(ctx, "k", []byte("v")))
		noErr(t, "AppendAudit", tx.AppendAudit(ctx, &store.AuditRecord{At: at(0)}))
		noErr(t, "AppendEvent", tx.AppendEvent(ctx, &store.Event{At: at(0)}))
		return fmt.Errorf("wrapped: %w", errBoom)
	})
	wantErr(t, "Update returning an error", err, errBoom)
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetCredential(ctx, "rb-new")
		wantErr(t, "credential of a rolled back Update", err, store.ErrNotFound)
		_, err = tx.GetVersion(ctx, "rb", 2)
		wantErr(t, "version of a rolled back Update", err, store.ErrNotFound)
		_, err = tx.GetMeta(ctx, "k")
		wantErr(t, "meta of a rolled back Update", err, store.ErrNotFound)
		labels, err := tx.Labels(ctx, "rb")
		noErr(t, "Labels", err)
		equal(t, "labels after rollback", labels, map[string]int{"current": 1})
		n, err := tx.MaxVersion(ctx, "rb")
		noErr(t, "MaxVersion", err)
		if n != 1 {
			t.Errorf("MaxVersion after rollback = %d, want 1", n)
		}
		audit, err := tx.ListAudit(ctx, 0, 0)
		noErr(t, "ListAudit", err)
		events, err := tx.ListEvents(ctx, 0, 0)
		noErr(t, "ListEvents", err)
		if len(audit) != 1 || len(events) != 1 {
			t.Errorf("rolled back appends kept: %d audit records, %d events", len(audit), len(events))
		}
		return nil
	})
	// A failed insert inside a transaction that then succeeds keeps the rest.
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "InsertVersion duplicate", tx.InsertVersion(ctx, version("rb", 1)), store.ErrConflict)
		wantErr(t, "CreateRotation second", tx.CreateRotation(ctx, rotation("rb")), store.ErrRotationInProgress)
		return tx.SetMeta(ctx, "after-conflict", []byte("kept"))
	})
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetMeta(ctx, "after-conflict")
		noErr(t, "GetMeta after a conflict", err)
		return nil
	})
}

func testUpdatePanic(t *testing.T, s store.Store) {
	ctx := t.Context()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Update swallowed a panic")
			}
		}()
		s.Update(ctx, func(tx store.Tx) error {
			noErr(t, "SetMeta", tx.SetMeta(ctx, "panic", []byte("x")))
			panic("boom")
		})
	}()
	// Nothing was written and the store still works.
	update(t, s, func(tx store.Tx) error {
		_, err := tx.GetMeta(ctx, "panic")
		wantErr(t, "meta of a panicked Update", err, store.ErrNotFound)
		return tx.SetMeta(ctx, "ok", []byte("y"))
	})
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Update(ctx, func(tx store.Tx) error {
		return tx.SetMeta(ctx, "k", []byte("v"))
	})
	if err == nil {
		t.Fatal("Update with a canceled context succeeded")
	}
	err = s.View(ctx, func(tx store.Tx) error {
		_, err := tx.GetMeta(ctx, "k")
		return err
	})
	if err == nil {
		t.Fatal("View with a canceled context succeeded")
	}
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetMeta(t.Context(), "k")
		wantErr(t, "meta written with a canceled context", err, store.ErrNotFound)
		return nil
	})
}

const workers = 8

// race runs fn in workers goroutines at once and returns their errors.
func race(fn func(i int) error) []error {
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, workers)
	)
	for i := range workers {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// exactlyOne checks that one error is nil and all others match target.
func exactlyOne(t *testing.T, what string, errs []error, target error) {
	t.Helper()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, target):
			t.Errorf("%s: unexpected error %v", what, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%s: %d of %d succeeded, want exactly 1 (errors %v)", what, ok, len(errs), errs)
	}
}

func testConcurrentCreateRotation(t *testing.T, s store.Store) {
	ctx := t.Context()
	errs := race(func(i int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			// Look first, as a caller would: the check alone does not decide.
			if _, err := tx.OpenRotation(ctx, "cc"); err == nil {
				return fmt.Errorf("saw an open rotation: %w", store.ErrRotationInProgress)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			r := rotation("cc")
			r.Actor = fmt.Sprint("worker-", i)
			return tx.CreateRotation(ctx, r)
		})
	})
	exactlyOne(t, "concurrent CreateRotation", errs, store.ErrRotationInProgress)
	view(t, s, func(tx store.Tx) error {
		rs, err := tx.ListRotations(ctx, store.RotationFilter{CredentialID: "cc"})
		noErr(t, "ListRotations", err)
		if len(rs) != 1 {
			t.Errorf("%d rotations stored, want 1", len(rs))
		}
		return nil
	})
}

func testConcurrentInsertVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	errs := race(func(i int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			v := version("cv", 1)
			v.Ciphertext = []byte(fmt.Sprint("worker-", i))
			return tx.InsertVersion(ctx, v)
		})
	})
	exactlyOne(t, "concurrent InsertVersion", errs, store.ErrConflict)
	// Callers that pick MaxVersion+1 all get distinct numbers.
	errs = race(func(i int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			n, err := tx.MaxVersion(ctx, "cv")
			if err != nil {
				return err
			}
			return tx.InsertVersion(ctx, version("cv", n+1))
		})
	})
	for _, err := range errs {
		noErr(t, "InsertVersion MaxVersion+1", err)
	}
	view(t, s, func(tx store.Tx) error {
		vs, err := tx.ListVersions(ctx, "cv")
		noErr(t, "ListVersions", err)
		if len(vs) != workers+1 || vs[workers].Version != workers+1 {
			t.Errorf("after concurrent puts: %d versions, last %d", len(vs), vs[len(vs)-1].Version)
		}
		return nil
	})
}

// testConcurrentAudit appends to the hash chain from many goroutines, each
// reading LastAudit first: the chain must come out gapless and linked.
func testConcurrentAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	errs := race(func(i int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			a := &store.AuditRecord{At: at(0), Payload: []byte(fmt.Sprint(i)), Hash: []byte(fmt.Sprint("h", i))}
			if prev, err := tx.LastAudit(ctx); err == nil {
				a.PrevHash = prev.Hash
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := tx.AppendAudit(ctx, a); err != nil {
				return err
			}
			return tx.AppendEvent(ctx, &store.Event{At: at(0), Kind: "audit", Version: i})
		})
	})
	for _, err := range errs {
		noErr(t, "concurrent AppendAudit", err)
	}
	view(t, s, func(tx store.Tx) error {
		recs, err := tx.ListAudit(ctx, 0, 0)
		noErr(t, "ListAudit", err)
		if len(recs) != workers {
			t.Fatalf("%d audit records, want %d", len(recs), workers)
		}
		for i, r := range recs {
			if r.Seq != int64(i+1) {
				t.Errorf("record %d has Seq %d", i, r.Seq)
			}
			if i > 0 && string(r.PrevHash) != string(recs[i-1].Hash) {
				t.Errorf("record %d: PrevHash %q, previous Hash %q", r.Seq, r.PrevHash, recs[i-1].Hash)
			}
		}
		evs, err := tx.ListEvents(ctx, 0, 0)
		noErr(t, "ListEvents", err)
		if len(evs) != workers {
			t.Errorf("%d events, want %d", len(evs), workers)
		}
		return nil
	})
}
