package credential

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/vault"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/store"
)

// backupMagic is the first line of every backup file.
const backupMagic = "nebula-credential backup v1\n"

// ErrBadBackup: the backup file is truncated, altered or not a backup.
var ErrBadBackup = errors.New("backup file is corrupt, truncated or altered")

// backupHeader is the plaintext second line; it is authenticated as AAD.
type backupHeader struct {
	CreatedAt   time.Time             `json:"created_at"`
	KeyMode     string                `json:"key_mode"`
	RootID      string                `json:"root_id"`
	Argon2      *keyring.Argon2Params `json:"argon2,omitempty"`
	Salt        []byte                `json:"salt"`
	Credentials int                   `json:"credentials"`
}

type backupBody struct {
	KEKs        []store.KEK         `json:"keks"`
	Credentials []backupCredential  `json:"credentials"`
	Audit       []store.AuditRecord `json:"audit"`
}

type backupCredential struct {
	Credential store.Credential     `json:"credential"`
	Versions   []store.Version      `json:"versions"`
	Labels     map[string]int       `json:"labels"`
	History    []store.HistoryEntry `json:"history"`
	Rotations  []store.Rotation     `json:"rotations"`
}

// BackupInfo summarises a backup or restore.
type BackupInfo struct {
	Credentials int       `json:"credentials"`
	Versions    int       `json:"versions"`
	CreatedAt   time.Time `json:"created_at"`
	// Skipped are the credentials Restore left alone (RestoreOptions.SkipBusy):
	// each has an open rotation.
	Skipped []string `json:"skipped,omitempty"`
}

// Backup writes one encrypted, integrity-protected file with every credential,
// version, label, history and journal row, and the audit chain. Values stay
// sealed by their data keys; the whole body is sealed again with a key derived
// from the root key, so the file restores with the same key file or passphrase.
func (m *Manager) Backup(ctx context.Context, w io.Writer, progress func(done, total int)) (*BackupInfo, error) {
	var (
		body  backupBody
		hdr   = backupHeader{CreatedAt: m.clock().UTC(), RootID: m.keys.Root().ID(), Salt: make([]byte, 32)}
		info  BackupInfo
		argon []byte
	)
	rand.Read(hdr.Salt)
	err := m.st.View(ctx, func(tx store.Tx) error {
		mode, err := tx.GetMeta(ctx, metaKeyMode)
		if err != nil {
			return err
		}
		hdr.KeyMode = string(mode)
		if hdr.KeyMode == "passphrase" {
			if argon, err = tx.GetMeta(ctx, metaArgon2); err != nil {
				return err
			}
			hdr.Argon2 = &keyring.Argon2Params{}
			if err := json.Unmarshal(argon, hdr.Argon2); err != nil {
				return err
			}
		}
		if body.KEKs, err = tx.ListKEKs(ctx); err != nil {
			return err
		}
		cs, err := tx.ListCredentials(ctx, store.ListOptions{IncludeDeleted: true})
		if err != nil {
			return err
		}
		for i, c := range cs {
			bc := backupCredential{Credential: c}
			if bc.Versions, err = tx.ListVersions(ctx, c.ID); err != nil {
				return err
			}
			if bc.Labels, err = tx.Labels(ctx, c.ID); err != nil {
				return err
			}
			if bc.History, err = tx.ListHistory(ctx, c.ID, 1<<30); err != nil {
				return err
			}
			if bc.Rotations, err = tx.ListRotations(ctx, store.RotationFilter{CredentialID: c.ID, Limit: 1 << 30}); err != nil {
				return err
			}
			info.Versions += len(bc.Versions)
			body.Credentials = append(body.Credentials, bc)
			if progress != nil {
				progress(i+1, len(cs))
			}
		}
		for after := int64(0); ; {
			page, err := tx.ListAudit(ctx, after, 10000)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			body.Audit = append(body.Audit, page...)
			after = page[len(page)-1].Seq
		}
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	hdr.Credentials = len(body.Credentials)
	info.Credentials, info.CreatedAt = hdr.Credentials, hdr.CreatedAt
	hb, _ := json.Marshal(hdr)
	aad := append([]byte(backupMagic), append(hb, '\n')...)
	pt, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	a, err := backupAEAD(m.keys.Root(), hdr.Salt)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, a.NonceSize())
	rand.Read(nonce)
	bw := bufio.NewWriter(w)
	bw.Write(aad)
	bw.Write(nonce)
	bw.Write(a.Seal(nil, nonce, pt, aad))
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("backup: write: %w", err)
	}
	return &info, nil
}

func backupAEAD(root *keyring.Root, salt []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(root.Derive("backup v1", salt))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// RestoreOptions select what to restore.
type RestoreOptions struct {
	// Only restores one credential's versions ("" restores everything).
	Only string
	// Progress, if set, is called while credentials are checked and written.
	Progress func(done, total int)
	// SkipBusy restores every credential without an open rotation and leaves
	// those with one (in grace, or needing attention) as they are, listing them
	// in BackupInfo.Skipped. Without it such a credential refuses the restore.
	SkipBusy bool
}

// MaxBackupSize bounds a backup file read into memory.
const MaxBackupSize = 1 << 30

// Restore reads a backup and writes its credentials into this store. The whole
// file is decrypted and every version's seal checked before anything is
// written; then every credential is replaced in one transaction, so a failure
// (or a killed process) leaves the store exactly as it was.
func (m *Manager) Restore(ctx context.Context, r io.Reader, opts RestoreOptions) (*BackupInfo, error) {
	if opts.Only != "" {
		if err := ValidateID(opts.Only); err != nil {
			return nil, err
		}
	}
	hdr, body, err := m.readBackup(r)
	if err != nil {
		return nil, err
	}
	// Check every credential in the file (or the one asked for) decrypts.
	src := keyring.New(hdr.root)
	for _, k := range body.KEKs {
		if err := src.Load(k.ID, k.Wrapped); err != nil {
			return nil, fmt.Errorf("restore: %w: key %s does not open", ErrBadBackup, k.ID)
		}
	}
	srcVault := &vault.Vault{Keys: src}
	var todo []backupCredential
	info := &BackupInfo{CreatedAt: hdr.CreatedAt}
	for _, bc := range body.Credentials {
		if opts.Only != "" && bc.Credential.ID != opts.Only {
			continue
		}
		if err := ValidateID(bc.Credential.ID); err != nil {
			return nil, fmt.Errorf("restore: %w: %v", ErrBadBackup, err)
		}
		for i := range bc.Versions {
			if _, err := srcVault.Open(bc.Credential.Type, &bc.Versions[i]); err != nil {
				return nil, fmt.Errorf("restore: %w: %v", ErrBadBackup, err)
			}
		}
		todo = append(todo, bc)
		info.Versions += len(bc.Versions)
	}
	if opts.Only != "" && len(todo) == 0 {
		return nil, fmt.Errorf("restore: %w: the backup has no credential %s", ErrNotFound, opts.Only)
	}
	info.Credentials = len(todo)
	needed := map[string]bool{}
	for _, bc := range todo {
		for _, v := range bc.Versions {
			needed[v.KEKID] = true
		}
	}
	now := m.clock().UTC()
	err = m.st.Update(ctx, func(tx store.Tx) error {
		existing, err := tx.ListKEKs(ctx)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, k := range existing {
			have[k.ID] = true
		}
		for _, k := range body.KEKs {
			if !needed[k.ID] || have[k.ID] {
				continue
			}
			w, err := src.Export(k.ID, m.keys.Root())
			if err != nil {
				return err
			}
			retired := now
			if err := tx.PutKEK(ctx, &store.KEK{ID: k.ID, Wrapped: w, CreatedAt: k.CreatedAt, RetiredAt: &retired}); err != nil {
				return err
			}
		}
		// Credentials with an open rotation cannot be replaced: name them all
		// and the way forward, or skip them when asked to.
		var busy []string
		ready := todo[:0:0]
		for _, bc := range todo {
			id := bc.Credential.ID
			open, err := tx.OpenRotation(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				ready = append(ready, bc)
				continue
			}
			if err != nil {
				return err
			}
			busy = append(busy, busyReason(id, open))
			info.Skipped = append(info.Skipped, id)
		}
		if len(busy) > 0 && !opts.SkipBusy {
			info.Skipped = nil
			shown := busy
			if len(shown) > 10 {
				shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(busy)-10))
			}
			return fmt.Errorf("%w: %d credential(s) have an open rotation and cannot be replaced: %s; "+
				"restore the others now with --skip-busy (then restore these with --only ID once their rotation ends)",
				ErrRotationInProgress, len(busy), strings.Join(shown, "; "))
		}
		todo = ready
		info.Credentials = len(todo)
		info.Versions = 0
		for _, bc := range todo {
			info.Versions += len(bc.Versions)
		}
		for i, bc := range todo {
			id := bc.Credential.ID
			if err := tx.PurgeCredential(ctx, id); err != nil {
				return err
			}
			c := bc.Credential
			c.UpdatedAt = now
			if err := tx.PutCredential(ctx, &c); err != nil {
				return err
			}
			for j := range bc.Versions {
				if err := tx.InsertVersion(ctx, &bc.Versions[j]); err != nil {
					return err
				}
			}
			for l, n := range bc.Labels {
				if l == LabelPending {
					continue // its rotation is not restored
				}
				if err := tx.SetLabel(ctx, id, l, n); err != nil {
					return err
				}
			}
			for j := range bc.History {
				h := bc.History[j]
				h.ID = 0
				if err := tx.AppendHistory(ctx, &h); err != nil {
					return err
				}
			}
			if err := tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: "restore", Actor: actorOf(ctx), ToVersion: bc.Labels[LabelCurrent], Outcome: "ok", Detail: "from backup of " + hdr.CreatedAt.Format(time.RFC3339)}); err != nil {
				return err
			}
			if opts.Progress != nil {
				opts.Progress(i+1, len(todo))
			}
		}
		// Bindings are checked once every restored credential is in place
		// (an admin may come after the credentials that name it).
		for _, bc := range todo {
			if err := m.rebind(ctx, tx, bc.Credential.ID); err != nil {
				return err
			}
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Action: "restore", CredentialID: opts.Only, Outcome: "ok", Detail: fmt.Sprintf("%d credentials, %d versions from backup of %s", info.Credentials, info.Versions, hdr.CreatedAt.Format(time.RFC3339))})
	})
	if err != nil {
		return nil, fmt.Errorf("restore: nothing was written: %w", err)
	}
	if err := m.loadKEKs(ctx); err != nil {
		return nil, err
	}
	return info, nil
}

// busyReason names a credential whose open rotation blocks a restore and
// what ends that rotation.
func busyReason(id string, open *store.Rotation) string {
	if open.Step == "grace" && open.GraceEndsAt != nil {
		return fmt.Sprintf("%s is in grace until %s (wait for it, with `nebula-credential serve` running, or run `nebula-credential rollback %s`)",
			id, open.GraceEndsAt.UTC().Format(time.RFC3339), id)
	}
	return fmt.Sprintf("%s has rotation %d at step %s (run `nebula-credential doctor %s` for the way out)", id, open.ID, open.Step, id)
}

func actorOf(ctx context.Context) string {
	a, _ := audit.ActorOf(ctx)
	return a
}

type parsedHeader struct {
	backupHeader
	root *keyring.Root
}

// readBackup reads, authenticates and decodes a backup file.
func (m *Manager) readBackup(r io.Reader) (*parsedHeader, *backupBody, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxBackupSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("restore: read: %w", err)
	}
	if len(raw) > MaxBackupSize {
		return nil, nil, fmt.Errorf("restore: backup larger than %d bytes", MaxBackupSize)
	}
	if !bytes.HasPrefix(raw, []byte(backupMagic)) {
		return nil, nil, fmt.Errorf("restore: %w: not a nebula-credential backup (bad first line)", ErrBadBackup)
	}
	rest := raw[len(backupMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return nil, nil, fmt.Errorf("restore: %w: header is truncated", ErrBadBackup)
	}
	aad := raw[:len(backupMagic)+nl+1]
	var hdr parsedHeader
	if err := json.Unmarshal(rest[:nl], &hdr.backupHeader); err != nil {
		return nil, nil, fmt.Errorf("restore: %w: header: %v", ErrBadBackup, err)
	}
	switch {
	case hdr.KeyMode == "passphrase" && hdr.Argon2 != nil:
		if m.cfg.Passphrase.IsZero() {
			return nil, nil, fmt.Errorf("restore: %w: the backup was made with a passphrase: set NEBULA_CREDENTIAL_PASSPHRASE", ErrWrongKey)
		}
		hdr.root, err = keyring.FromPassphrase([]byte(m.cfg.Passphrase.Reveal()), *hdr.Argon2)
		if err != nil {
			return nil, nil, fmt.Errorf("restore: %w", err)
		}
	default:
		hdr.root = m.keys.Root()
	}
	if hdr.root.ID() != hdr.RootID {
		return nil, nil, fmt.Errorf("restore: %w: the backup was made with key id %s, this key is %s (use the backup's key file or passphrase)", ErrWrongKey, hdr.RootID, hdr.root.ID())
	}
	a, err := backupAEAD(hdr.root, hdr.Salt)
	if err != nil {
		return nil, nil, err
	}
	ct := rest[nl+1:]
	if len(ct) < a.NonceSize()+a.Overhead() {
		return nil, nil, fmt.Errorf("restore: %w: body is truncated", ErrBadBackup)
	}
	pt, err := a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], aad)
	if err != nil {
		return nil, nil, fmt.Errorf("restore: %w: authentication failed (truncated or edited file)", ErrBadBackup)
	}
	var body backupBody
	if err := json.Unmarshal(pt, &body); err != nil {
		return nil, nil, fmt.Errorf("restore: %w: body: %v", ErrBadBackup, err)
	}
	return &hdr, &body, nil
}
