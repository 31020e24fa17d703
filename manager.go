package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/vault"
	"github.com/nebula-credential/nebula-credential/keyring"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

// Meta keys in the store.
const (
	metaKeyMode   = "key_mode" // "key_file" or "passphrase"
	metaRootID    = "root_id"
	metaArgon2    = "argon2"
	metaActiveKEK = "active_kek"
	metaStoreID   = "store_id"
)

// Config configures Open. The zero value of every optional field means its default.
type Config struct {
	// Store holds the data (store/sqlite or store/postgres). Required. The
	// Manager does not close it unless CloseStore is set.
	Store      store.Store
	CloseStore bool
	// KeyFile is the root key file (32 random bytes, mode 0600). Ignored when
	// Passphrase is set.
	KeyFile string
	// Passphrase selects passphrase mode: the root key is derived with Argon2id.
	Passphrase secret.Value
	// Create initialises an empty store (and creates KeyFile if it does not
	// exist). Without it, opening an uninitialised store fails.
	Create bool
	// Argon2 overrides the Argon2id parameters used when creating a passphrase store.
	Argon2 *keyring.Argon2Params
	// Rotators by credential type; nil means only the built-in generic rotator.
	Rotators *rotator.Registry
	// Clock returns the time; default time.Now.
	Clock func() time.Time
	// Logger; default discards.
	Logger *slog.Logger
	// NoRecover skips resuming unfinished rotations on open.
	NoRecover bool
	// Engine tweaks the rotation engine (lease TTL, test hooks).
	Engine rotation.Config
}

// Manager is the credential store API. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	st     store.Store
	keys   *keyring.Keyring
	vault  *vault.Vault
	engine *rotation.Engine
	clock  func() time.Time
	log    *slog.Logger

	reloadMu sync.Mutex
	unfollow func()
}

// ErrNotInitialised: the store has no keys yet.
var ErrNotInitialised = errors.New("store is not initialised: run `nebula-credential init` first")

// Open opens (or with Config.Create, initialises) a credential store.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("credential: Config.Store is required")
	}
	m := &Manager{cfg: cfg, st: cfg.Store, clock: cfg.Clock, log: cfg.Logger}
	if m.clock == nil {
		m.clock = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	root, err := m.openRoot(ctx)
	if err != nil {
		return nil, err
	}
	m.keys = keyring.New(root)
	if err := m.loadKEKs(ctx); err != nil {
		return nil, err
	}
	m.vault = &vault.Vault{Keys: m.keys, Reload: func() error { return m.loadKEKs(context.Background()) }}
	reg := cfg.Rotators
	if reg == nil {
		reg = rotator.NewRegistry()
	}
	if _, err := reg.Lookup(string(Generic)); err != nil {
		reg.Register(string(Generic), rotation.GenericRotator{})
	}
	storeID, err := m.storeID(ctx)
	if err != nil {
		return nil, err
	}
	ecfg := cfg.Engine
	ecfg.Store, ecfg.Vault, ecfg.Rotators, ecfg.StoreID = m.st, m.vault, reg, storeID
	if ecfg.Clock == nil {
		ecfg.Clock = m.clock
	}
	if ecfg.Logger == nil {
		ecfg.Logger = m.log
	}
	m.engine, err = rotation.New(ecfg)
	if err != nil {
		return nil, err
	}
	m.unfollow = m.followStore()
	if !cfg.NoRecover {
		if err := m.engine.Recover(ctx); err != nil {
			m.log.Warn("recovering unfinished rotations", "err", err)
		}
	}
	return m, nil
}

// Close releases the manager (and the store if Config.CloseStore).
func (m *Manager) Close() error {
	m.engine.Close()
	m.unfollow()
	if m.cfg.CloseStore {
		return m.st.Close()
	}
	return nil
}

// Engine returns the rotation engine (scheduler, events, doctor).
func (m *Manager) Engine() *rotation.Engine { return m.engine }

// Store returns the underlying store.
func (m *Manager) Store() store.Store { return m.st }

func (m *Manager) openRoot(ctx context.Context) (*keyring.Root, error) {
	var mode, rootID, argon []byte
	err := m.st.View(ctx, func(tx store.Tx) error {
		var err error
		if mode, err = tx.GetMeta(ctx, metaKeyMode); err != nil {
			return err
		}
		if rootID, err = tx.GetMeta(ctx, metaRootID); err != nil {
			return err
		}
		if string(mode) == "passphrase" {
			argon, err = tx.GetMeta(ctx, metaArgon2)
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		if !m.cfg.Create {
			return nil, ErrNotInitialised
		}
		return m.initialise(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("read key settings: %w", err)
	}
	var root *keyring.Root
	switch string(mode) {
	case "passphrase":
		if m.cfg.Passphrase.IsZero() {
			return nil, fmt.Errorf("%w: this store uses a passphrase: set NEBULA_CREDENTIAL_PASSPHRASE", ErrWrongKey)
		}
		var p keyring.Argon2Params
		if err := json.Unmarshal(argon, &p); err != nil {
			return nil, fmt.Errorf("read argon2 parameters: %w", err)
		}
		root, err = keyring.FromPassphrase([]byte(m.cfg.Passphrase.Reveal()), p)
	default:
		if m.cfg.KeyFile == "" {
			return nil, fmt.Errorf("%w: this store uses a key file: pass --key-file or set NEBULA_CREDENTIAL_KEY_FILE", ErrWrongKey)
		}
		root, err = keyring.ReadKeyFile(m.cfg.KeyFile)
	}
	if err != nil {
		return nil, err
	}
	if root.ID() != string(rootID) {
		what := "key file " + m.cfg.KeyFile
		if string(mode) == "passphrase" {
			what = "passphrase"
		}
		return nil, fmt.Errorf("%w (the %s has key id %s, the store expects %s)", ErrWrongKey, what, root.ID(), rootID)
	}
	return root, nil
}

// initialise sets up an empty store: root key, first KEK.
func (m *Manager) initialise(ctx context.Context) (*keyring.Root, error) {
	var (
		root  *keyring.Root
		mode  = "key_file"
		argon []byte
		err   error
	)
	if !m.cfg.Passphrase.IsZero() {
		mode = "passphrase"
		p := keyring.NewArgon2Params()
		if m.cfg.Argon2 != nil {
			p = *m.cfg.Argon2
		}
		argon, _ = json.Marshal(p)
		root, err = keyring.FromPassphrase([]byte(m.cfg.Passphrase.Reveal()), p)
	} else {
		if m.cfg.KeyFile == "" {
			return nil, errors.New("credential: Config.KeyFile or Config.Passphrase is required")
		}
		if _, statErr := os.Stat(m.cfg.KeyFile); errors.Is(statErr, os.ErrNotExist) {
			if err := keyring.CreateKeyFile(m.cfg.KeyFile); err != nil {
				return nil, err
			}
		}
		root, err = keyring.ReadKeyFile(m.cfg.KeyFile)
	}
	if err != nil {
		return nil, err
	}
	kr := keyring.New(root)
	id, wrapped, err := kr.NewKEK()
	if err != nil {
		return nil, err
	}
	now := m.clock().UTC()
	err = m.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.GetMeta(ctx, metaKeyMode); err == nil {
			return fmt.Errorf("%w: store was initialised concurrently", ErrConflict)
		}
		if err := tx.SetMeta(ctx, metaKeyMode, []byte(mode)); err != nil {
			return err
		}
		if err := tx.SetMeta(ctx, metaRootID, []byte(root.ID())); err != nil {
			return err
		}
		if argon != nil {
			if err := tx.SetMeta(ctx, metaArgon2, argon); err != nil {
				return err
			}
		}
		if err := tx.PutKEK(ctx, &store.KEK{ID: id, Wrapped: wrapped, CreatedAt: now}); err != nil {
			return err
		}
		return tx.SetMeta(ctx, metaActiveKEK, []byte(id))
	})
	if err != nil {
		return nil, fmt.Errorf("initialise store: %w", err)
	}
	return root, nil
}

// storeID returns the store's random identifier, creating it on first use.
func (m *Manager) storeID(ctx context.Context) (string, error) {
	var id []byte
	err := m.st.View(ctx, func(tx store.Tx) error {
		var err error
		id, err = tx.GetMeta(ctx, metaStoreID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		err = m.st.Update(ctx, func(tx store.Tx) error {
			if id, err = tx.GetMeta(ctx, metaStoreID); err == nil {
				return nil
			}
			id = []byte(secret.Token(12).Reveal())
			return tx.SetMeta(ctx, metaStoreID, id)
		})
	}
	if err != nil {
		return "", fmt.Errorf("store id: %w", err)
	}
	return string(id), nil
}

// loadKEKs loads every stored KEK and the active one.
func (m *Manager) loadKEKs(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	var keks []store.KEK
	var active []byte
	err := m.st.View(ctx, func(tx store.Tx) error {
		var err error
		if keks, err = tx.ListKEKs(ctx); err != nil {
			return err
		}
		active, err = tx.GetMeta(ctx, metaActiveKEK)
		return err
	})
	if err != nil {
		return fmt.Errorf("load keys: %w", err)
	}
	for _, k := range keks {
		if err := m.keys.Load(k.ID, k.Wrapped); err != nil {
			return fmt.Errorf("load key %s: %w", k.ID, err)
		}
	}
	return m.keys.SetActive(string(active))
}

// errVersionRace: a concurrent writer took the version number; Put retries.
var errVersionRace = errors.New("version number taken concurrently")

// PutRequest is a new version of a credential.
type PutRequest struct {
	Type      Type
	Fields    map[string]any
	Secret    secret.Map
	ExpiresAt *time.Time
	// Settings replaces the rotation settings when non-nil.
	Settings *Settings
	Actor    string
	Reason   string
}

// Put stores a new version of credential id and makes it current. The
// credential is created if it does not exist (or was soft-deleted).
// It fails with ErrRotationInProgress while a rotation is open.
func (m *Manager) Put(ctx context.Context, id string, req PutRequest) (*Credential, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := ValidateType(req.Type); err != nil {
		return nil, err
	}
	if err := ValidateValues(req.Type, req.Fields, req.Secret); err != nil {
		return nil, err
	}
	if req.Settings != nil {
		if err := req.Settings.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if err := m.engine.CheckSettings(string(req.Type), req.Fields, *req.Settings); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	var out *Credential
	for range 5 { // retry a version number taken concurrently
		err := m.st.Update(ctx, func(tx store.Tx) error {
			var err error
			out, err = m.put(ctx, tx, id, req)
			return err
		})
		if errors.Is(err, errVersionRace) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("put %s: %w", id, err)
		}
		m.engine.Notify(rotation.Event{Kind: rotation.EventCurrentChanged, CredentialID: id, Version: out.Version})
		return out, nil
	}
	return nil, fmt.Errorf("put %s: %w: too many concurrent writers", id, ErrConflict)
}

func (m *Manager) put(ctx context.Context, tx store.Tx, id string, req PutRequest) (*Credential, error) {
	now := m.clock().UTC().Truncate(time.Microsecond) // what the store keeps
	// One statement reads the row and what a new version needs of it.
	c, w, err := tx.GetCredentialWrite(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c = &store.Credential{ID: id, Type: string(req.Type), CreatedAt: now, Settings: []byte("{}")}
		// A purged credential's numbers are not reused, and labels of a
		// credential without a row are kept as before.
		if w.MaxVersion, err = tx.MaxVersion(ctx, id); err != nil {
			return nil, err
		}
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return nil, err
		}
		w.Current = labels[LabelCurrent]
	case err != nil:
		return nil, err
	case c.Type != string(req.Type) && c.DeletedAt == nil:
		return nil, fmt.Errorf("%w: credential is of type %s, not %s", ErrConflict, c.Type, req.Type)
	default:
		if c.DeletedAt != nil {
			c.Type = string(req.Type)
		}
		if w.Rotating {
			open, err := tx.OpenRotation(ctx, id)
			if err == nil {
				return nil, rotation.InProgress(open)
			}
			return nil, err
		}
	}
	var warnings []rotation.Finding
	if req.Settings != nil {
		b, err := json.Marshal(req.Settings)
		if err != nil {
			return nil, err
		}
		c.Settings = b
		// The same rules as policy set: refused settings write nothing.
		if warnings, err = m.engine.CheckPolicyTx(ctx, tx, c, *req.Settings); err != nil {
			return nil, err
		}
	}
	// A credential naming an admin credential is bound to it: the writer
	// needs use on the admin and the admin's scope must cover it.
	if err := m.engine.Bind(ctx, tx, id, string(req.Type), req.Fields); err != nil {
		return nil, err
	}
	settings, err := rotation.ParseSettings(c.Settings)
	if err != nil {
		return nil, err
	}
	n := w.MaxVersion + 1
	sv, err := m.vault.Seal(vault.Version{CredentialID: id, Type: string(req.Type), Number: n, Fields: req.Fields, Secret: req.Secret, CreatedAt: now, ExpiresAt: req.ExpiresAt})
	if err != nil {
		return nil, err
	}
	c.DeletedAt = nil
	c.UpdatedAt = now
	c.NextDueAt = settings.NextDue(rotation.DueInput{ID: id, LastRotatedAt: now, CreatedAt: now, ExpiresAt: req.ExpiresAt, Now: now})
	if err := tx.PutCredential(ctx, c); err != nil {
		return nil, err
	}
	if err := tx.InsertVersion(ctx, sv); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errVersionRace
		}
		return nil, err
	}
	prev := w.Current
	if err := tx.SetLabel(ctx, id, LabelCurrent, n); err != nil {
		return nil, err
	}
	if err := tx.SetLabel(ctx, id, LabelPrevious, prev); err != nil {
		return nil, err
	}
	if err := tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: "put", Actor: req.Actor, Reason: req.Reason, FromVersion: prev, ToVersion: n, Outcome: "ok"}); err != nil {
		return nil, err
	}
	if err := rotation.AppendEvent(ctx, tx, now, rotation.EventCurrentChanged, id, n, nil); err != nil {
		return nil, err
	}
	if keep := settings.RetentionOrDefault(); n > keep { // fewer versions than that cannot exceed it
		if err := rotation.Prune(ctx, tx, id, keep); err != nil {
			return nil, err
		}
	}
	if err := audit.Append(ctx, tx, audit.Entry{At: now, Actor: req.Actor, Action: "put", CredentialID: id, FromVersion: prev, ToVersion: n, Outcome: "ok"}); err != nil {
		return nil, err
	}
	lab := []string{LabelCurrent}
	return &Credential{ID: id, Type: req.Type, Version: n, Labels: lab, State: StateActive, Fields: req.Fields, Secret: req.Secret, CreatedAt: now, ExpiresAt: req.ExpiresAt, NextDueAt: c.NextDueAt, Warnings: warnings}, nil
}

// GetOptions selects a version: by number, by label, or current by default.
type GetOptions struct {
	Version int
	Label   string
}

// Get returns one decrypted version of a credential (current by default).
func (m *Manager) Get(ctx context.Context, id string, opts GetOptions) (*Credential, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if opts.Version != 0 && opts.Label != "" {
		return nil, fmt.Errorf("%w: give a version or a label, not both", ErrInvalid)
	}
	label := opts.Label
	if label == "" && opts.Version == 0 {
		label = LabelCurrent
	}
	if label != "" && label != LabelCurrent && label != LabelPrevious && label != LabelPending {
		return nil, fmt.Errorf("%w: unknown label %q (want current, previous or pending)", ErrInvalid, label)
	}
	var cs *store.CredentialState
	read := func(tx store.Tx) error {
		var err error
		cs, err = tx.GetCredentialState(ctx, id, label, opts.Version)
		return err
	}
	var err error
	if v, ok := m.st.(oneStatementViewer); ok {
		// GetCredentialState is one statement: no BEGIN/ROLLBACK around it.
		err = v.ViewOne(ctx, read)
	} else {
		err = m.st.View(ctx, read)
	}
	switch {
	case err != nil:
	case cs.DeletedAt != nil:
		err = fmt.Errorf("%w (deleted at %s: `put` restores it, `purge` removes it)", store.ErrNotFound, cs.DeletedAt.Format(time.RFC3339))
	case cs.Version == nil && opts.Version != 0:
		err = fmt.Errorf("%w: version %d does not exist (see `nebula-credential history %s`)", store.ErrNotFound, opts.Version, id)
	case cs.Version == nil:
		err = fmt.Errorf("%w: no version is labelled %s", store.ErrNotFound, label)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	v, err := m.vault.Open(cs.Type, cs.Version)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	labels := cs.Labels
	if labels == nil {
		labels = []string{}
	}
	out := &Credential{
		ID: id, Type: Type(cs.Type), Version: v.Number, Labels: labels,
		Fields: v.Fields, Secret: v.Secret, CreatedAt: v.CreatedAt, ExpiresAt: v.ExpiresAt,
		NextDueAt: rotation.NextShown(cs.NextDueAt, cs.Open, m.clock().UTC()),
	}
	out.State, out.GraceEndsAt = m.state(cs.DeletedAt, cs.Open, v.ExpiresAt)
	return out, nil
}

// oneStatementViewer is a store that runs a read of one statement without
// an explicit transaction around it (sqlite.Store.ViewOne).
type oneStatementViewer interface {
	ViewOne(ctx context.Context, fn func(store.Tx) error) error
}

func labelsOf(labels map[string]int, n int) []string {
	out := []string{}
	for l, v := range labels {
		if v == n {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func (m *Manager) state(deletedAt *time.Time, rot *store.Rotation, expires *time.Time) (State, *time.Time) {
	if deletedAt != nil {
		return StateDeleted, nil
	}
	if rot != nil {
		return State(rotation.StateOf(rot)), rot.GraceEndsAt
	}
	if expires != nil && !expires.After(m.clock()) {
		return StateExpired, nil
	}
	return StateActive, nil
}

// ListOptions selects credentials.
type ListOptions struct {
	Prefix         string
	Type           Type
	After          string // cursor: the last ID of the previous page
	Limit          int    // default 100, at most 1000
	IncludeDeleted bool
}

// List returns credential summaries ordered by ID and the cursor of the next
// page ("" when this is the last).
func (m *Manager) List(ctx context.Context, opts ListOptions) ([]Summary, string, error) {
	if opts.Type != "" {
		if err := ValidateType(opts.Type); err != nil {
			return nil, "", err
		}
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var out []Summary
	err := m.st.View(ctx, func(tx store.Tx) error {
		cs, err := tx.ListCredentials(ctx, store.ListOptions{Prefix: opts.Prefix, Type: string(opts.Type), After: opts.After, Limit: limit + 1, IncludeDeleted: opts.IncludeDeleted})
		if err != nil {
			return err
		}
		for _, c := range cs {
			// The current version's row comes along; its number is what is shown.
			state, err := tx.GetCredentialState(ctx, c.ID, LabelCurrent, 0)
			if err != nil {
				return err
			}
			current := 0
			if state.Version != nil {
				current = state.Version.Version
			}
			st, _ := m.state(c.DeletedAt, state.Open, nil)
			out = append(out, Summary{ID: c.ID, Type: Type(c.Type), Current: current, State: st, UpdatedAt: c.UpdatedAt, NextDueAt: rotation.NextShown(c.NextDueAt, state.Open, m.clock().UTC())})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].ID
	}
	return out, next, nil
}

// Versions lists the stored versions of a credential, newest first.
func (m *Manager) Versions(ctx context.Context, id string) ([]VersionInfo, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	var out []VersionInfo
	err := m.st.View(ctx, func(tx store.Tx) error {
		if _, err := tx.GetCredential(ctx, id); err != nil {
			return err
		}
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		vs, err := tx.ListVersions(ctx, id)
		if err != nil {
			return err
		}
		for _, v := range slices.Backward(vs) {
			out = append(out, VersionInfo{Version: v.Version, Labels: labelsOf(labels, v.Version), CreatedAt: v.CreatedAt, ExpiresAt: v.ExpiresAt})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", id, err)
	}
	return out, nil
}

// History returns the events of a credential, newest first.
func (m *Manager) History(ctx context.Context, id string, limit int) ([]HistoryEntry, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	var out []HistoryEntry
	err := m.st.View(ctx, func(tx store.Tx) error {
		if _, err := tx.GetCredential(ctx, id); err != nil {
			return err
		}
		hs, err := tx.ListHistory(ctx, id, limit)
		for _, h := range hs {
			out = append(out, HistoryEntry{At: h.At, Action: h.Action, Actor: h.Actor, Reason: h.Reason, FromVersion: h.FromVersion, ToVersion: h.ToVersion, RotationID: h.RotationID, Outcome: h.Outcome, Detail: h.Detail, DurationMS: h.DurationMS})
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", id, err)
	}
	return out, nil
}

// Delete soft-deletes a credential: it is no longer served or rotated; Put
// restores it and Purge removes it. Deleting a deleted credential is a no-op.
func (m *Manager) Delete(ctx context.Context, id, actor string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	err := m.st.Update(ctx, func(tx store.Tx) error {
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		if c.DeletedAt != nil {
			return nil
		}
		if open, err := tx.OpenRotation(ctx, id); err == nil {
			return rotation.InProgress(open)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		now := m.clock().UTC()
		c.DeletedAt, c.NextDueAt, c.UpdatedAt = &now, nil, now
		if err := tx.PutCredential(ctx, c); err != nil {
			return err
		}
		if err := tx.AppendHistory(ctx, &store.HistoryEntry{CredentialID: id, At: now, Action: "delete", Actor: actor, Outcome: "ok"}); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: now, Actor: actor, Action: "delete", CredentialID: id, Outcome: "ok"})
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// Purge removes a credential and all its versions for good.
func (m *Manager) Purge(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	err := m.st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.GetCredential(ctx, id); err != nil {
			return err
		}
		if r, err := tx.OpenRotation(ctx, id); err == nil && r.Step != rotation.StepNeedsAttention {
			return fmt.Errorf("%w: wait for it to finish first", ErrRotationInProgress)
		}
		if err := tx.PurgeCredential(ctx, id); err != nil {
			return err
		}
		return audit.Append(ctx, tx, audit.Entry{At: m.clock().UTC(), Action: "purge", CredentialID: id, Outcome: "ok"})
	})
	if err != nil {
		return fmt.Errorf("purge %s: %w", id, err)
	}
	return nil
}

// SetSettings replaces a credential's rotation settings and reschedules it.
func (m *Manager) SetSettings(ctx context.Context, id string, s Settings) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c, err := m.Get(ctx, id, GetOptions{})
	if err != nil {
		return err
	}
	if err := m.engine.CheckSettings(string(c.Type), c.Fields, s); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return m.engine.SetSettings(ctx, id, s)
}

// PolicyFindings returns what is wrong with credential id's stored rotation
// settings (rotation.CheckPolicy): policy set prints the warnings, doctor
// reports them all. Never nil.
func (m *Manager) PolicyFindings(ctx context.Context, id string) ([]rotation.Finding, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	fs, err := m.engine.PolicyFindings(ctx, id)
	if fs == nil {
		fs = []rotation.Finding{}
	}
	return fs, err
}

// GetSettings returns a credential's rotation settings.
func (m *Manager) GetSettings(ctx context.Context, id string) (Settings, error) {
	if err := ValidateID(id); err != nil {
		return Settings{}, err
	}
	return m.engine.Settings(ctx, id)
}
