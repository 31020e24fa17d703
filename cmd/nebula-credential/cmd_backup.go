package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
)

func cmdBackup(g *globals) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write an encrypted, integrity-protected backup of the whole store",
		Long: `Write one file holding every credential, version, label, history and journal
row and the audit chain. Values stay sealed; the file is sealed again with a key
derived from the root key, so it restores with the same key file or passphrase.
The file is written to a temporary name and renamed into place when complete.`,
		Example: "  nebula-credential backup --out /backups/creds-$(date +%F).ncb",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out FILE is required")
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			tmp, err := os.CreateTemp(filepath.Dir(out), ".backup-*")
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			defer os.Remove(tmp.Name())
			if err := tmp.Chmod(0o600); err != nil {
				return err
			}
			bar, done := g.progress("backup")
			info, err := m.Backup(cmd.Context(), tmp, bar)
			done()
			if err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if err := tmp.Close(); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if g.json {
				return g.printJSON(map[string]any{"file": out, "credentials": info.Credentials, "versions": info.Versions})
			}
			g.printf("wrote %s: %d credentials, %d versions\n", out, info.Credentials, info.Versions)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "backup file to write")
	return c
}

func cmdRestore(g *globals) *cobra.Command {
	var (
		only     string
		skipBusy bool
	)
	c := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore credentials from a backup (all, or one with --only)",
		Long: `Restore a backup written by 'backup'. The whole file is decrypted and checked
before anything is written; a truncated or altered file is refused and the store
is left exactly as it was. Each restored credential replaces the one in the store.

A credential with an open rotation (in grace, or needing attention) cannot be
replaced: restore names each one and what ends its rotation, and writes nothing.
--skip-busy restores all the others and lists the ones it left; restore those
later with --only ID.`,
		Example: `  nebula-credential restore /backups/creds.ncb
  nebula-credential restore /backups/creds.ncb --only prod/db/orders
  nebula-credential restore /backups/creds.ncb --skip-busy   # leave credentials in grace as they are
  nebula-credential init --store new.db --key-file old.key && nebula-credential restore creds.ncb --store new.db --key-file old.key`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			defer f.Close()
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			bar, done := g.progress("restore")
			info, err := m.Restore(cmd.Context(), f, credential.RestoreOptions{Only: only, SkipBusy: skipBusy, Progress: bar})
			done()
			if err != nil {
				return err
			}
			if g.json {
				skipped := info.Skipped
				if skipped == nil {
					skipped = []string{}
				}
				return g.printJSON(map[string]any{"credentials": info.Credentials, "versions": info.Versions, "backup_created_at": info.CreatedAt, "skipped": skipped})
			}
			g.printf("restored %d credentials, %d versions (backup of %s)\n", info.Credentials, info.Versions, info.CreatedAt.Format(time.RFC3339))
			for _, id := range info.Skipped {
				g.printf("skipped %s: it has an open rotation; once it ends run: nebula-credential restore %s --only %s\n", id, args[0], id)
			}
			return nil
		},
	}
	c.Flags().StringVar(&only, "only", "", "restore only this credential ID")
	c.Flags().BoolVar(&skipBusy, "skip-busy", false, "restore the credentials without an open rotation and list the others")
	return c
}

func cmdKey(g *globals) *cobra.Command {
	key := &cobra.Command{
		Use:   "key",
		Short: "Manage key-encryption keys",
	}
	rot := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new key-encryption key and rewrap every data key under it",
		Long: `Add a new key-encryption key, make it active, and rewrap every version's data
key under it, a batch per transaction: readers keep working throughout. Retired
keys are dropped once no data key needs them. If interrupted, run it again.`,
		Example: "  nebula-credential key rotate",
		Args:    cobra.NoArgs,
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, _ []string, m backend) error {
			bar, done := g.progress("rewrap")
			res, err := m.RotateKEK(cmd.Context(), bar)
			done()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			g.printf("new key %s; rewrapped %d data keys; dropped %d retired keys\n", res.NewKEK, res.Rewrapped, len(res.Dropped))
			return nil
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List key-encryption keys",
		Example: "  nebula-credential key list --json",
		Args:    cobra.NoArgs,
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, _ []string, m backend) error {
			ks, err := m.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ks)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tACTIVE\tDATA KEYS\tCREATED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%v\t%d\t%s\n", k.ID, k.Active, k.DataKeys, k.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		}),
	}
	key.AddCommand(rot, list)
	return key
}
