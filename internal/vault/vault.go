// Package vault converts between decrypted credential versions and the sealed
// rows a store.Store holds. The root package and the rotation engine share it.
package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Version is one decrypted credential version.
type Version struct {
	CredentialID string
	Type         string
	Number       int
	Fields       map[string]any
	Secret       secret.Map
	CreatedAt    time.Time
	ExpiresAt    *time.Time
}

// Vault seals and opens versions with a keyring.
type Vault struct {
	Keys *keyring.Keyring
	// Reload is called once when a version names a KEK the keyring does not hold
	// (another process ran `key rotate`); it should load the store's KEKs.
	Reload func() error
}

// Seal encrypts v into a store row.
func (vt *Vault) Seal(v Version) (*store.Version, error) {
	fields := v.Fields
	if fields == nil {
		fields = map[string]any{}
	}
	fb, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode fields: %w", err)
	}
	sb, err := json.Marshal(v.Secret.Reveal())
	if err != nil {
		return nil, fmt.Errorf("encode secret: %w", err)
	}
	kek, wk, ct, err := vt.Keys.Seal(sb, keyring.AAD(v.CredentialID, v.Number, v.Type))
	clear(sb)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &store.Version{
		CredentialID: v.CredentialID,
		Version:      v.Number,
		Fields:       fb,
		KEKID:        kek,
		DataKey:      wk,
		Ciphertext:   ct,
		CreatedAt:    v.CreatedAt,
		ExpiresAt:    v.ExpiresAt,
	}, nil
}

// Open decrypts a store row of a credential of type typ.
func (vt *Vault) Open(typ string, sv *store.Version) (Version, error) {
	aad := keyring.AAD(sv.CredentialID, sv.Version, typ)
	pt, err := vt.Keys.Open(sv.KEKID, sv.DataKey, sv.Ciphertext, aad)
	if errors.Is(err, keyring.ErrUnknownKEK) && vt.Reload != nil {
		if rerr := vt.Reload(); rerr != nil {
			return Version{}, rerr
		}
		pt, err = vt.Keys.Open(sv.KEKID, sv.DataKey, sv.Ciphertext, aad)
	}
	if err != nil {
		return Version{}, fmt.Errorf("open %s version %d: %w", sv.CredentialID, sv.Version, err)
	}
	sec, err := unmarshalSecret(pt)
	clear(pt)
	if err != nil {
		return Version{}, fmt.Errorf("open %s version %d: decode secret: %w", sv.CredentialID, sv.Version, keyring.ErrCorrupt)
	}
	v := Version{
		CredentialID: sv.CredentialID,
		Type:         typ,
		Number:       sv.Version,
		Secret:       sec,
		CreatedAt:    sv.CreatedAt,
		ExpiresAt:    sv.ExpiresAt,
	}
	if v.Fields, err = unmarshalFields(sv.Fields); err != nil {
		return Version{}, fmt.Errorf("open %s version %d: decode fields: %w", sv.CredentialID, sv.Version, err)
	}
	if v.Fields == nil {
		v.Fields = map[string]any{}
	}
	return v, nil
}

// Next returns a copy of v as version n with fields merged over v's fields and
// the given secret.
func (v Version) Next(n int, fields map[string]any, sec secret.Map, expires *time.Time, now time.Time) Version {
	f := maps.Clone(v.Fields)
	if f == nil {
		f = map[string]any{}
	}
	maps.Copy(f, fields)
	return Version{CredentialID: v.CredentialID, Type: v.Type, Number: n, Fields: f, Secret: sec, CreatedAt: now, ExpiresAt: expires}
}
