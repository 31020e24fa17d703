package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/jsonerr"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func cmdInit(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the store and its key file",
		Long: `Create the store (SQLite file, or tables in PostgreSQL) and the root key file
(32 random bytes, mode 0600). An existing key file is used as it is, so a backup
can be restored into a new store elsewhere. With $NEBULA_CREDENTIAL_PASSPHRASE set,
the root key is derived from the passphrase (Argon2id) and no key file is written.`,
		Example: `  nebula-credential init
  nebula-credential init --store /var/lib/nebula/creds.db
  NEBULA_CREDENTIAL_PASSPHRASE=... nebula-credential init --store creds.db
  nebula-credential init --store postgres://nebula@db/nebula --key-file /etc/nebula/root.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.localOnly("init"); err != nil {
				return err
			}
			loc := g.storeLocation()
			if !isPostgres(loc) && sqlite.Exists(loc) {
				return usagef("store %s already exists", loc)
			}
			m, err := g.open(cmd.Context(), openOpts{create: true})
			if err != nil {
				return err
			}
			defer m.Close()
			loc = displayLocation(loc)
			mode, key := "key file", g.keyFileLocation()
			if !passphrase().IsZero() {
				mode, key = "passphrase", ""
			}
			if g.json {
				return g.printJSON(map[string]string{"store": loc, "key_mode": strings.ReplaceAll(mode, " ", "_"), "key_file": key})
			}
			g.printf("initialised store %s (%s %s)\n", loc, mode, key)
			if key != "" {
				g.printf("keep %s safe: without it nothing in the store can be decrypted\n", key)
			}
			return nil
		},
	}
}

// putInput is what `put` reads from stdin.
type putInput struct {
	Fields    map[string]any       `json:"fields"`
	Secret    map[string]string    `json:"secret"`
	ExpiresAt *time.Time           `json:"expires_at,omitempty"`
	Settings  *credential.Settings `json:"settings,omitempty"`
}

// MaxInput bounds what put reads from stdin.
const maxInput = 1 << 20

// parsePutInput decodes and checks the JSON object `put` reads. It never puts a
// value from the input into an error message.
func parsePutInput(r io.Reader) (*putInput, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(raw) > maxInput {
		return nil, usagef("stdin: input larger than %d bytes", maxInput)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, usagef(`stdin is empty: pipe a JSON object like {"fields": {...}, "secret": {...}}`)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in putInput
	if err := dec.Decode(&in); err != nil {
		msg := describeJSONError(err, raw)
		if strings.HasPrefix(msg, "unknown field") {
			msg += ` (allowed: "fields", "secret", "expires_at", "settings")`
		}
		return nil, usagef("stdin: %s", msg)
	}
	if dec.More() {
		return nil, usagef("stdin: expected one JSON object, found more data after it")
	}
	return &in, nil
}

// describeJSONError explains a decoding error of a command's JSON input
// without quoting it.
func describeJSONError(err error, raw []byte) string {
	return jsonerr.Describe(err, raw, `input must be a JSON object like {"fields": {...}, "secret": {...}}, not a JSON %s`)
}

func cmdPut(g *globals) *cobra.Command {
	var (
		typ    string
		reason string
	)
	c := &cobra.Command{
		Use:   "put ID --type TYPE < values.json",
		Short: "Store a new version of a credential (values from stdin)",
		Long: `Store a new version of a credential and make it current. The values come from
stdin as one JSON object, never from arguments:

  {"fields": {...non-secret...}, "secret": {...secret...},
   "expires_at": "2027-01-01T00:00:00Z", "settings": {...rotation settings...}}

Types: postgres, mysql, redis, api_key, oauth2, certificate, generic.`,
		Example: `  echo '{"fields":{"host":"127.0.0.1","username":"app"},"secret":{"password":"s3cret"}}' \
    | nebula-credential put prod/db/orders --type postgres
  nebula-credential put prod/signing-key --type generic < key.json`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := credential.ValidateID(id); err != nil {
				return err
			}
			if typ == "" {
				return usagef("--type is required (postgres, mysql, redis, api_key, oauth2, certificate, generic)")
			}
			if err := credential.ValidateType(credential.Type(typ)); err != nil {
				return err
			}
			if isTerminal(g.stdin) {
				fmt.Fprintln(g.stderr, `reading the credential as one JSON object from stdin, e.g. {"fields": {...}, "secret": {...}}; end with Ctrl-D (see: nebula-credential template `+typ+`)`)
			}
			in, err := parsePutInput(g.stdin)
			if err != nil {
				return err
			}
			sec := secret.FromStrings(in.Secret)
			if err := credential.ValidateValues(credential.Type(typ), in.Fields, sec); err != nil {
				return err
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			actor, _ := audit.ActorOf(cmd.Context())
			c, err := m.Put(cmd.Context(), id, credential.PutRequest{Type: credential.Type(typ), Fields: in.Fields, Secret: sec, ExpiresAt: in.ExpiresAt, Settings: in.Settings, Actor: actor, Reason: reason})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(c.Wire(false)) // warnings in "warnings"
			}
			printFindings(g, c.Warnings)
			g.printf("stored %s version %d (current)\n", c.ID, c.Version)
			return nil
		},
	}
	c.Flags().StringVar(&typ, "type", "", "credential type (required)")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in history)")
	return c
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("expected %s, got %d argument(s)", names, len(args))
		}
		return nil
	}
}

func cmdGet(g *globals) *cobra.Command {
	var (
		version int
		label   string
		reveal  bool
		field   string
	)
	c := &cobra.Command{
		Use:   "get ID",
		Short: "Show a credential (secrets redacted unless --reveal)",
		Example: `  nebula-credential get prod/db/orders
  nebula-credential get prod/db/orders --json --reveal
  nebula-credential get prod/db/orders --label previous
  PGPASSWORD=$(nebula-credential get prod/db/orders --field password --reveal) psql ...`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 0 {
				return usagef("--version must be positive")
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			c, err := m.Get(cmd.Context(), args[0], credential.GetOptions{Version: version, Label: label}, reveal)
			if err != nil {
				return err
			}
			if field != "" {
				if v, ok := c.Secret[field]; ok {
					if !reveal {
						return usagef("%q is a secret field: add --reveal to print it", field)
					}
					fmt.Fprintln(g.stdout, v.Reveal())
					return nil
				}
				v, ok := c.Fields[field]
				if !ok {
					return fmt.Errorf("%w: %s has no field %q", credential.ErrNotFound, c.ID, field)
				}
				if s, isStr := v.(string); isStr {
					fmt.Fprintln(g.stdout, s)
					return nil
				}
				b, _ := json.Marshal(v)
				fmt.Fprintln(g.stdout, string(b))
				return nil
			}
			if g.json {
				return g.printJSON(c.Wire(reveal))
			}
			printCredential(g, c, reveal)
			return nil
		},
	}
	c.Flags().IntVar(&version, "version", 0, "version number")
	c.Flags().StringVar(&label, "label", "", "label: current, previous or pending")
	c.Flags().BoolVar(&reveal, "reveal", false, "print secret values")
	c.Flags().StringVar(&field, "field", "", "print one field's raw value alone")
	return c
}

func printCredential(g *globals, c *credential.Credential, reveal bool) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", c.ID)
	fmt.Fprintf(tw, "type:\t%s\n", c.Type)
	fmt.Fprintf(tw, "version:\t%d (%s)\n", c.Version, strings.Join(c.Labels, ", "))
	fmt.Fprintf(tw, "state:\t%s\n", c.State)
	fmt.Fprintf(tw, "created_at:\t%s\n", c.CreatedAt.Format(time.RFC3339))
	if c.ExpiresAt != nil {
		fmt.Fprintf(tw, "expires_at:\t%s\n", c.ExpiresAt.Format(time.RFC3339))
	}
	if c.GraceEndsAt != nil {
		fmt.Fprintf(tw, "grace_ends_at:\t%s\n", c.GraceEndsAt.Format(time.RFC3339))
	}
	if c.NextDueAt != nil {
		fmt.Fprintf(tw, "next_rotation:\t%s\n", c.NextDueAt.Format(time.RFC3339))
	}
	tw.Flush()
	g.printf("fields:\n")
	for _, k := range sortedKeys(c.Fields) {
		v := c.Fields[k]
		if s, ok := v.(string); ok {
			g.printf("  %s: %s\n", k, s)
		} else {
			b, _ := json.Marshal(v)
			g.printf("  %s: %s\n", k, b)
		}
	}
	g.printf("secret:\n")
	for _, k := range sortedKeys(c.Secret) {
		if reveal {
			g.printf("  %s: %s\n", k, c.Secret[k].Reveal())
		} else {
			g.printf("  %s: %s\n", k, c.Secret[k])
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func cmdList(g *globals) *cobra.Command {
	var (
		prefix, typ, after string
		limit              int
		deleted            bool
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List credentials",
		Example: `  nebula-credential list
  nebula-credential list --prefix prod/ --type postgres --json
  nebula-credential list --limit 100 --after prod/db/orders   # next page
  nebula-credential list --limit 50000 --json                 # everything, paged internally`,
		Args: cobra.NoArgs,
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, _ []string, m backend) error {
			if limit < 1 {
				return usagef("--limit must be at least 1")
			}
			// The store and the server return at most 1000 per call: page
			// through until --limit credentials are listed.
			var (
				items []credential.Summary
				next  = after
			)
			for {
				page, nx, err := m.List(cmd.Context(), credential.ListOptions{Prefix: prefix, Type: credential.Type(typ), After: next, Limit: min(limit-len(items), 1000), IncludeDeleted: deleted})
				if err != nil {
					return err
				}
				items = append(items, page...)
				next = nx
				if next == "" || len(items) >= limit || len(page) == 0 {
					break
				}
			}
			if g.json {
				if items == nil {
					items = []credential.Summary{}
				}
				return g.printJSON(map[string]any{"credentials": items, "next": next})
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tVERSION\tSTATE\tNEXT ROTATION")
			for _, s := range items {
				nd := "-"
				if s.NextDueAt != nil {
					nd = s.NextDueAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", s.ID, s.Type, s.Current, s.State, nd)
			}
			tw.Flush()
			if next != "" {
				fmt.Fprintf(g.stderr, "more: --after %s\n", next)
			}
			return nil
		}),
	}
	c.Flags().StringVar(&prefix, "prefix", "", "only IDs starting with this prefix")
	c.Flags().StringVar(&typ, "type", "", "only this type")
	c.Flags().StringVar(&after, "after", "", "page cursor: the last ID of the previous page")
	c.Flags().IntVar(&limit, "limit", 100, "how many credentials to list (fetched in pages of up to 1000)")
	c.Flags().BoolVar(&deleted, "deleted", false, "include soft-deleted credentials")
	return c
}

func cmdHistory(g *globals) *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:     "history ID",
		Short:   "Show a credential's versions and the events of its life",
		Example: "  nebula-credential history prod/db/orders\n  nebula-credential history prod/db/orders --json",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			vs, hs, err := m.History(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"id": args[0], "versions": vs, "events": hs})
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tLABELS\tCREATED")
			for _, v := range vs {
				fmt.Fprintf(tw, "%d\t%s\t%s\n", v.Version, strings.Join(v.Labels, ","), v.CreatedAt.Format(time.RFC3339))
			}
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "AT\tACTION\tVERSIONS\tOUTCOME\tACTOR\tREASON\tDETAIL")
			for _, h := range hs {
				fmt.Fprintf(tw, "%s\t%s\t%d→%d\t%s\t%s\t%s\t%s\n", h.At.Format(time.RFC3339), h.Action, h.FromVersion, h.ToVersion, h.Outcome, h.Actor, h.Reason, h.Detail)
			}
			return tw.Flush()
		}),
	}
	c.Flags().IntVar(&limit, "limit", 100, "how many events")
	return c
}

func cmdDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID",
		Short:   "Soft-delete a credential (no longer served or rotated; put restores it)",
		Example: "  nebula-credential delete prod/db/old",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			if err := m.Delete(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"id": args[0], "deleted": true})
			}
			g.printf("deleted %s (purge removes it for good)\n", args[0])
			return nil
		}),
	}
}

func cmdPurge(g *globals) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:     "purge ID --yes",
		Short:   "Remove a credential and all its versions for good",
		Example: "  nebula-credential purge prod/db/old --yes",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usagef("purge destroys every version of %s: add --yes to confirm", args[0])
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			if err := m.Purge(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"id": args[0], "purged": true})
			}
			g.printf("purged %s\n", args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "confirm")
	return c
}
