package notify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/store"
)

// Journal steps read by the checks (package rotation owns them; notify does
// not import it to stay a leaf of store).
const (
	stepGrace   = "grace"
	stepRetired = "retired"
	kindRotate  = "rotate"
)

// consumersLookback bounds how long after a grace ended its consumers are
// still examined.
const consumersLookback = 24 * time.Hour

// Check looks for the conditions that are not stored events — a grace period
// ending within a subscription's GraceWarn, a current version expiring
// within its ExpiryDays, a credential overdue for rotation by OverdueFor,
// consumers still on the old version when grace ended — and queues one
// delivery per condition and subscription. The event IDs are deterministic
// (kind, credential, rotation or version or due time), so running Check
// again, or on several servers at once, queues nothing twice. Run calls it
// every CheckInterval.
func (d *Dispatcher) Check(ctx context.Context) error {
	var rows []store.Subscription
	if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
		var err error
		rows, err = tx.ListSubscriptions(ctx)
		return err
	}); err != nil || len(rows) == 0 {
		return err
	}
	subs := make([]*Subscription, 0, len(rows))
	wants := map[string]bool{}
	for i := range rows {
		if s, err := decodeSub(&rows[i]); err == nil {
			subs = append(subs, s)
			for _, k := range s.Events {
				wants[k] = true
			}
		}
	}
	now := d.now()
	var found []candidate

	if wants[KindGraceEnding] || wants[KindConsumersStale] {
		var open, recent []store.Rotation
		if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
			var err error
			if open, err = tx.ListRotations(ctx, store.RotationFilter{OpenOnly: true, Limit: 10000}); err != nil {
				return err
			}
			recent, err = tx.ListRotations(ctx, store.RotationFilter{Limit: 1000})
			return err
		}); err != nil {
			return fmt.Errorf("list rotations: %w", err)
		}
		for _, r := range open {
			if r.Step != stepGrace || r.GraceEndsAt == nil {
				continue
			}
			p := &Payload{Schema: Schema, ID: fmt.Sprintf("%s:%s:r%d", KindGraceEnding, r.CredentialID, r.ID), Kind: KindGraceEnding, At: now,
				CredentialID: r.CredentialID, Version: r.ToVersion,
				Detail: map[string]any{"rotation_id": r.ID, "previous": r.FromVersion, "grace_ends_at": r.GraceEndsAt.UTC().Format(time.RFC3339)}}
			ends := *r.GraceEndsAt
			found = append(found, candidate{p, func(s *Subscription) bool { return ends.Sub(now) <= time.Duration(s.GraceWarn) }})
		}
		if wants[KindConsumersStale] {
			c, err := d.consumersBehind(ctx, recent, now)
			if err != nil {
				return err
			}
			found = append(found, c...)
		}
	}

	if wants[KindOverdue] || wants[KindCertExpiring] {
		c, err := d.credentialConditions(ctx, now, wants[KindCertExpiring])
		if err != nil {
			return err
		}
		found = append(found, c...)
	}

	if len(found) == 0 {
		return nil
	}
	return d.svc.Store.Update(ctx, func(tx store.Tx) error {
		for _, c := range found {
			c.p.Summary = summary(c.p)
			var matching []*Subscription
			for _, s := range subs {
				if s.Wants(c.p.Kind, c.p.CredentialID) && c.applies(s) {
					matching = append(matching, s)
				}
			}
			if err := insertFor(ctx, tx, matching, c.p, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// candidate is a condition found; applies says which subscriptions' own
// thresholds it crosses.
type candidate struct {
	p       *Payload
	applies func(*Subscription) bool
}

func always(*Subscription) bool { return true }

func (d *Dispatcher) consumersBehind(ctx context.Context, recent []store.Rotation, now time.Time) ([]candidate, error) {
	var out []candidate
	for _, r := range recent {
		if r.Open || r.Kind != kindRotate || r.Step != stepRetired || r.GraceEndsAt == nil || r.FinishedAt == nil ||
			now.Sub(*r.FinishedAt) > consumersLookback {
			continue
		}
		var cs []store.Consumer
		if err := d.svc.Store.View(ctx, func(tx store.Tx) error {
			var err error
			cs, err = tx.ListConsumers(ctx, r.CredentialID)
			return err
		}); err != nil {
			return nil, fmt.Errorf("list consumers of %s: %w", r.CredentialID, err)
		}
		var behind []string
		for _, c := range cs {
			// Live during the grace period and not on the new version.
			if c.Version < r.ToVersion && c.LastSeen.After(r.StartedAt) {
				behind = append(behind, c.ID)
			}
		}
		if len(behind) == 0 {
			continue
		}
		slices.Sort(behind)
		p := &Payload{Schema: Schema, ID: fmt.Sprintf("%s:%s:r%d", KindConsumersStale, r.CredentialID, r.ID), Kind: KindConsumersStale, At: now,
			CredentialID: r.CredentialID, Version: r.ToVersion,
			Detail: map[string]any{"rotation_id": r.ID, "old_version": r.FromVersion, "grace_ended_at": r.GraceEndsAt.UTC().Format(time.RFC3339),
				"count": len(behind), "consumers": strings.Join(behind, ", ")}}
		out = append(out, candidate{p, always})
	}
	return out, nil
}

func (d *Dispatcher) credentialConditions(ctx context.Context, now time.Time, expiry bool) ([]candidate, error) {
	var out []candidate
	after := ""
	for {
		var page []store.Credential
		expires := map[string]*store.Version{}
		err := d.svc.Store.View(ctx, func(tx store.Tx) error {
			var err error
			page, err = tx.ListCredentials(ctx, store.ListOptions{After: after, Limit: 500})
			if err != nil || !expiry {
				return err
			}
			for _, c := range page {
				st, err := tx.GetCredentialState(ctx, c.ID, "current", 0)
				if err != nil {
					return err
				}
				if st.Version != nil && st.Version.ExpiresAt != nil {
					expires[c.ID] = st.Version
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list credentials: %w", err)
		}
		if len(page) == 0 {
			return out, nil
		}
		after = page[len(page)-1].ID
		for _, c := range page {
			if c.DeletedAt != nil {
				continue
			}
			if c.NextDueAt != nil && c.NextDueAt.Before(now) {
				due := c.NextDueAt.UTC()
				p := &Payload{Schema: Schema, ID: fmt.Sprintf("%s:%s:%d", KindOverdue, c.ID, due.Unix()), Kind: KindOverdue, At: now,
					CredentialID: c.ID, Detail: map[string]any{"due_at": due.Format(time.RFC3339)}}
				found := candidate{p, func(s *Subscription) bool { return now.Sub(due) >= time.Duration(s.OverdueFor) }}
				out = append(out, found)
			}
			if v := expires[c.ID]; v != nil {
				exp := v.ExpiresAt.UTC()
				left := exp.Sub(now)
				p := &Payload{Schema: Schema, ID: fmt.Sprintf("%s:%s:v%d", KindCertExpiring, c.ID, v.Version), Kind: KindCertExpiring, At: now,
					CredentialID: c.ID, Version: v.Version,
					Detail: map[string]any{"expires_at": exp.Format(time.RFC3339), "days_left": int(max(0, left.Hours()/24)), "type": c.Type}}
				out = append(out, candidate{p, func(s *Subscription) bool { return left <= time.Duration(s.ExpiryDays)*24*time.Hour }})
			}
		}
	}
}
