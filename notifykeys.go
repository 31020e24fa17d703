package credential

import (
	"context"
	"errors"
	"fmt"

	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/store"
)

// SubscriptionKeys seals and opens the secret part of a webhook subscription
// (its URL and signing secret) with the store's keyring, as package notify
// needs. It satisfies notify.Keys.
type SubscriptionKeys struct{ m *Manager }

// SubscriptionKeys returns the sealer of webhook subscription secrets.
func (m *Manager) SubscriptionKeys() SubscriptionKeys { return SubscriptionKeys{m} }

// Seal encrypts plaintext under a fresh data key wrapped by the active KEK.
func (k SubscriptionKeys) Seal(plaintext, aad []byte) (string, []byte, []byte, error) {
	return k.m.keys.Seal(plaintext, aad)
}

// Open decrypts what Seal produced. A KEK created by another process since
// this one loaded its keys is loaded on demand.
func (k SubscriptionKeys) Open(kekID string, wrappedKey, ciphertext, aad []byte) ([]byte, error) {
	p, err := k.m.keys.Open(kekID, wrappedKey, ciphertext, aad)
	if errors.Is(err, keyring.ErrUnknownKEK) {
		if lerr := k.m.loadKEKs(context.Background()); lerr != nil {
			return nil, lerr
		}
		p, err = k.m.keys.Open(kekID, wrappedKey, ciphertext, aad)
	}
	return p, err
}

// rewrapSubscriptions re-wraps the data key of every webhook subscription
// not under the active KEK (key rotate), so that the retired KEK can go.
func (m *Manager) rewrapSubscriptions(ctx context.Context) (int, error) {
	active := m.keys.Active()
	n := 0
	err := m.st.Update(ctx, func(tx store.Tx) error {
		n = 0
		subs, err := tx.ListSubscriptions(ctx)
		if err != nil {
			return err
		}
		for i := range subs {
			s := &subs[i]
			if s.KEKID == active {
				continue
			}
			kek, wk, err := m.keys.Rewrap(s.KEKID, s.DataKey, notify.SealAAD(s.ID))
			if err != nil {
				return fmt.Errorf("subscription %s: %w", s.ID, err)
			}
			s.KEKID, s.DataKey = kek, wk
			if err := tx.PutSubscription(ctx, s); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
