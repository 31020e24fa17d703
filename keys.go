package credential

import (
	"context"
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/store"
)

// KeyInfo describes a key-encryption key.
type KeyInfo struct {
	ID        string     `json:"id"`
	Active    bool       `json:"active"`
	CreatedAt time.Time  `json:"created_at"`
	RetiredAt *time.Time `json:"retired_at,omitempty"`
	DataKeys  int        `json:"data_keys"`
}

// Keys lists the KEKs and how many data keys each wraps.
func (m *Manager) Keys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := m.st.View(ctx, func(tx store.Tx) error {
		ks, err := tx.ListKEKs(ctx)
		if err != nil {
			return err
		}
		active, err := tx.GetMeta(ctx, metaActiveKEK)
		if err != nil {
			return err
		}
		for _, k := range ks {
			n, err := tx.CountVersionsByKEK(ctx, k.ID)
			if err != nil {
				return err
			}
			out = append(out, KeyInfo{ID: k.ID, Active: k.ID == string(active), CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, DataKeys: n})
		}
		return nil
	})
	return out, err
}

// RotateKeyResult reports a KEK rotation.
type RotateKeyResult struct {
	NewKEK    string   `json:"new_kek"`
	Rewrapped int      `json:"rewrapped"`
	Dropped   []string `json:"dropped"`
}

// RotateKEK adds a new key-encryption key, makes it active and rewraps every
// data key under it, a batch per transaction, while readers keep working.
// Retired KEKs are deleted once no data key needs them. progress, if set, is
// called with (done, total) after each batch. Running it again after an
// interruption finishes the job.
func (m *Manager) RotateKEK(ctx context.Context, progress func(done, total int)) (*RotateKeyResult, error) {
	id, wrapped, err := m.keys.NewKEK()
	if err != nil {
		return nil, err
	}
	now := m.clock().UTC()
	total := 0
	err = m.st.Update(ctx, func(tx store.Tx) error {
		ks, err := tx.ListKEKs(ctx)
		if err != nil {
			return err
		}
		for _, k := range ks {
			if k.RetiredAt == nil {
				k.RetiredAt = &now
				if err := tx.PutKEK(ctx, &k); err != nil {
					return err
				}
			}
			n, err := tx.CountVersionsByKEK(ctx, k.ID)
			if err != nil {
				return err
			}
			total += n
		}
		if err := tx.PutKEK(ctx, &store.KEK{ID: id, Wrapped: wrapped, CreatedAt: now}); err != nil {
			return err
		}
		if err := tx.SetMeta(ctx, metaActiveKEK, []byte(id)); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: "key.rotate", Outcome: "ok", Detail: "new key " + id})
	})
	if err != nil {
		m.keys.Forget(id)
		return nil, fmt.Errorf("key rotate: %w", err)
	}
	if err := m.keys.SetActive(id); err != nil {
		return nil, err
	}
	res := &RotateKeyResult{NewKEK: id}
	res.Rewrapped, err = m.rewrapAll(ctx, total, progress)
	if err == nil {
		var n int
		n, err = m.rewrapSubscriptions(ctx)
		res.Rewrapped += n
	}
	if err != nil {
		return res, fmt.Errorf("key rotate: rewrap (run `nebula-credential key rotate` again to finish): %w", err)
	}
	res.Dropped, err = m.dropUnusedKEKs(ctx)
	return res, err
}

const rewrapBatch = 200

func (m *Manager) rewrapAll(ctx context.Context, total int, progress func(done, total int)) (int, error) {
	var (
		afterID  string
		afterVer int
		done     int
	)
	active := m.keys.Active()
	for {
		var page []store.Version
		if err := m.st.View(ctx, func(tx store.Tx) error {
			var err error
			page, err = tx.ListVersionKeys(ctx, afterID, afterVer, rewrapBatch)
			return err
		}); err != nil {
			return done, err
		}
		if len(page) == 0 {
			return done, nil
		}
		err := m.st.Update(ctx, func(tx store.Tx) error {
			for _, v := range page {
				if v.KEKID == active {
					continue
				}
				c, err := tx.GetCredential(ctx, v.CredentialID)
				if err != nil {
					return err
				}
				// Re-read: the row may have changed since the page was listed.
				cur, err := tx.GetVersion(ctx, v.CredentialID, v.Version)
				if err != nil {
					return err
				}
				kek, wk, err := m.keys.Rewrap(cur.KEKID, cur.DataKey, keyring.AAD(v.CredentialID, v.Version, c.Type))
				if err != nil {
					return fmt.Errorf("%s version %d: %w", v.CredentialID, v.Version, err)
				}
				if err := tx.UpdateVersionKey(ctx, v.CredentialID, v.Version, kek, wk); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		for _, v := range page {
			if v.KEKID != active {
				done++
			}
		}
		last := page[len(page)-1]
		afterID, afterVer = last.CredentialID, last.Version
		if progress != nil {
			progress(done, max(total, done))
		}
	}
}

func (m *Manager) dropUnusedKEKs(ctx context.Context) ([]string, error) {
	var dropped []string
	err := m.st.Update(ctx, func(tx store.Tx) error {
		dropped = dropped[:0]
		ks, err := tx.ListKEKs(ctx)
		if err != nil {
			return err
		}
		for _, k := range ks {
			if k.RetiredAt == nil {
				continue
			}
			n, err := tx.CountVersionsByKEK(ctx, k.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				if err := tx.DeleteKEK(ctx, k.ID); err != nil {
					return err
				}
				dropped = append(dropped, k.ID)
			}
		}
		return nil
	})
	if err == nil {
		for _, id := range dropped {
			m.keys.Forget(id)
		}
	}
	return dropped, err
}
