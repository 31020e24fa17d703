package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/postgres"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

const defaultStore = "nebula-credential.db"

func (g *globals) storeLocation() string {
	if g.store != "" {
		return g.store
	}
	if s := os.Getenv("NEBULA_CREDENTIAL_STORE"); s != "" {
		return s
	}
	return defaultStore
}

// displayLocation is the store location safe to print: a password in a
// PostgreSQL URL is masked.
func displayLocation(loc string) string {
	if !isPostgres(loc) {
		return loc
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "postgres://(unparseable URL)"
	}
	return u.Redacted()
}

func isPostgres(loc string) bool {
	return strings.HasPrefix(loc, "postgres://") || strings.HasPrefix(loc, "postgresql://")
}

// keyFileLocation: --key-file, else the environment, else beside the store
// (nebula-credential.db → nebula-credential.key).
func (g *globals) keyFileLocation() string {
	if g.keyFile != "" {
		return g.keyFile
	}
	if s := os.Getenv("NEBULA_CREDENTIAL_KEY_FILE"); s != "" {
		return s
	}
	loc := g.storeLocation()
	if isPostgres(loc) {
		return "nebula-credential.key"
	}
	return strings.TrimSuffix(loc, filepath.Ext(loc)) + ".key"
}

func passphrase() secret.Value {
	return secret.New(os.Getenv("NEBULA_CREDENTIAL_PASSPHRASE"))
}

func (g *globals) openStore(ctx context.Context, create bool) (store.Store, error) {
	loc := g.storeLocation()
	if isPostgres(loc) {
		st, err := postgres.Open(ctx, loc)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	if !create && !sqlite.Exists(loc) {
		return nil, fmt.Errorf("%w: store %s does not exist: run `nebula-credential init --store %s` first", store.ErrNotFound, loc, loc)
	}
	st, err := sqlite.Open(ctx, loc)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}

type openOpts struct {
	create    bool
	noRecover bool
	logger    *slog.Logger
	leaseTTL  time.Duration // 0: the engine's default
	// engine sets the scheduler's outage tuning (serve flags); zero values
	// are the engine's defaults. Its LeaseTTL is leaseTTL.
	engine rotation.Config
}

// open opens the manager on the configured store.
func (g *globals) open(ctx context.Context, o openOpts) (*credential.Manager, error) {
	st, err := g.openStore(ctx, o.create)
	if err != nil {
		return nil, err
	}
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	m, err := credential.Open(ctx, credential.Config{
		Store:      st,
		CloseStore: true,
		KeyFile:    g.keyFileLocation(),
		Passphrase: passphrase(),
		Create:     o.create,
		Rotators:   rotators(),
		Logger:     logger,
		NoRecover:  o.noRecover,
		Engine:     engineConfig(o),
	})
	if err != nil {
		st.Close()
		if errors.Is(err, credential.ErrNotInitialised) {
			return nil, fmt.Errorf("%w: store %s is not initialised: run `nebula-credential init`", store.ErrNotFound, displayLocation(g.storeLocation()))
		}
		return nil, err
	}
	g.warnIgnoredPassphrase(ctx, m)
	return m, nil
}

// warnIgnoredPassphrase says so when $NEBULA_CREDENTIAL_PASSPHRASE is set but
// the store uses a key file: the passphrase plays no part.
func (g *globals) warnIgnoredPassphrase(ctx context.Context, m *credential.Manager) {
	if passphrase().IsZero() {
		return
	}
	var mode []byte
	_ = m.Store().View(ctx, func(tx store.Tx) error {
		var err error
		mode, err = tx.GetMeta(ctx, "key_mode")
		return err
	})
	if string(mode) == "key_file" {
		g.warnf("NEBULA_CREDENTIAL_PASSPHRASE is set but store %s uses the key file %s; the passphrase is ignored (unset it)", displayLocation(g.storeLocation()), g.keyFileLocation())
	}
}

// engineConfig is the engine tuning of o.
func engineConfig(o openOpts) rotation.Config {
	return rotation.Config{
		LeaseTTL:          o.leaseTTL,
		TransientBudget:   o.engine.TransientBudget,
		HealInterval:      o.engine.HealInterval,
		Concurrency:       o.engine.Concurrency,
		TargetConcurrency: o.engine.TargetConcurrency,
		ProbeTimeout:      o.engine.ProbeTimeout,
	}
}
