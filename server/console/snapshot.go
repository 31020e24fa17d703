package console

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/store"
)

// snapshot is one read of every credential's row and every open rotation:
// what the overview and the list's state filters and sorts need. It holds
// no secret and no version data except certificates' expiry.
type snapshot struct {
	at    time.Time
	rows  []credRow // by ID
	byDue []int     // indexes of rows with a NextDueAt and no open rotation, soonest first
	byAge []int     // indexes of rows, least recently changed first
	open  []store.Rotation
	certs []int // indexes of certificate rows with an expiry, soonest first
}

type credRow struct {
	ID        string
	Type      string
	State     credential.State
	CreatedAt time.Time
	UpdatedAt time.Time
	NextDueAt *time.Time
	ExpiresAt *time.Time // current version's, certificates only
	Open      *store.Rotation
}

// snapshotCache rebuilds the snapshot at most once per TTL, and sooner
// (but at most once a second) after an event of this process's engine.
type snapshotCache struct {
	m     *credential.Manager
	ttl   time.Duration
	clock func() time.Time
	unsub func()

	mu    sync.Mutex
	cur   *snapshot
	dirty bool
	build sync.Mutex // one rebuild at a time
}

func newSnapshotCache(m *credential.Manager, ttl time.Duration, clock func() time.Time) *snapshotCache {
	sc := &snapshotCache{m: m, ttl: ttl, clock: clock}
	sc.unsub = m.Engine().Subscribe(func(rotation.Event) {
		sc.mu.Lock()
		sc.dirty = true
		sc.mu.Unlock()
	})
	return sc
}

func (sc *snapshotCache) close() { sc.unsub() }

// invalidate makes the next get rebuild (after a console action).
func (sc *snapshotCache) invalidate() {
	sc.mu.Lock()
	sc.cur = nil
	sc.mu.Unlock()
}

func (sc *snapshotCache) fresh(now time.Time) *snapshot {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	s := sc.cur
	if s == nil {
		return nil
	}
	age := now.Sub(s.at)
	if age < 0 || age >= sc.ttl || (sc.dirty && age >= time.Second) {
		return nil
	}
	return s
}

func (sc *snapshotCache) get(ctx context.Context) (*snapshot, error) {
	if s := sc.fresh(sc.clock()); s != nil {
		return s, nil
	}
	sc.build.Lock()
	defer sc.build.Unlock()
	if s := sc.fresh(sc.clock()); s != nil {
		return s, nil
	}
	sc.mu.Lock()
	sc.dirty = false
	sc.mu.Unlock()
	s, err := readSnapshot(ctx, sc.m.Store(), sc.clock())
	if err != nil {
		return nil, err
	}
	sc.mu.Lock()
	sc.cur = s
	sc.mu.Unlock()
	return s, nil
}

// readSnapshot walks the credentials in primary-key order, pages of 1000,
// and the open rotations (one indexed query), in one read transaction.
func readSnapshot(ctx context.Context, st store.Store, now time.Time) (*snapshot, error) {
	s := &snapshot{at: now}
	err := st.View(ctx, func(tx store.Tx) error {
		s.rows = s.rows[:0]
		after := ""
		for {
			page, err := tx.ListCredentials(ctx, store.ListOptions{After: after, Limit: 1000})
			if err != nil {
				return err
			}
			for _, c := range page {
				s.rows = append(s.rows, credRow{ID: c.ID, Type: c.Type, State: credential.StateActive, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, NextDueAt: c.NextDueAt})
			}
			if len(page) < 1000 {
				break
			}
			after = page[len(page)-1].ID
		}
		open, err := tx.ListRotations(ctx, store.RotationFilter{OpenOnly: true})
		if err != nil {
			return err
		}
		s.open = open
		for i := range s.rows {
			if s.rows[i].Type != string(credential.Certificate) {
				continue
			}
			cs, err := tx.GetCredentialState(ctx, s.rows[i].ID, credential.LabelCurrent, 0)
			if err != nil {
				return err
			}
			if cs.Version != nil && cs.Version.ExpiresAt != nil {
				s.rows[i].ExpiresAt = cs.Version.ExpiresAt
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range s.open {
		r := &s.open[i]
		if j, ok := slices.BinarySearchFunc(s.rows, r.CredentialID, func(c credRow, id string) int { return cmp.Compare(c.ID, id) }); ok {
			s.rows[j].Open = r
			s.rows[j].State = credential.State(rotation.StateOf(r))
		}
	}
	for i := range s.rows {
		c := &s.rows[i]
		c.NextDueAt = rotation.NextShown(c.NextDueAt, c.Open, now)
		if c.Open == nil && c.ExpiresAt != nil && !c.ExpiresAt.After(now) {
			c.State = credential.StateExpired
		}
		if c.NextDueAt != nil && c.Open == nil {
			s.byDue = append(s.byDue, i)
		}
		if c.ExpiresAt != nil {
			s.certs = append(s.certs, i)
		}
	}
	slices.SortStableFunc(s.byDue, func(a, b int) int { return s.rows[a].NextDueAt.Compare(*s.rows[b].NextDueAt) })
	slices.SortStableFunc(s.certs, func(a, b int) int { return s.rows[a].ExpiresAt.Compare(*s.rows[b].ExpiresAt) })
	s.byAge = make([]int, len(s.rows))
	for i := range s.byAge {
		s.byAge[i] = i
	}
	slices.SortStableFunc(s.byAge, func(a, b int) int { return s.rows[a].UpdatedAt.Compare(s.rows[b].UpdatedAt) })
	return s, nil
}

// visibility returns the filter of a principal's grants: the acl evaluator
// the API uses, with a shortcut for a grant that covers everything.
func visibility(grants []acl.Grant) func(id string) bool {
	if acl.Visible(grants, "") {
		return func(string) bool { return true }
	}
	return func(id string) bool { return acl.Visible(grants, id) }
}
