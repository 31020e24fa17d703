package credential

import (
	"context"
	"errors"

	"github.com/nebula-credential/nebula-credential/keyring"
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
