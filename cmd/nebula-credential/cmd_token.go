package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/server"
)

func init() {
	extraCommands = append(extraCommands, cmdToken)
}

func cmdToken(g *globals) *cobra.Command {
	t := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens",
		Long: `API tokens authenticate requests to 'nebula-credential serve'. Each holds grants:
a permission (read, write, rotate, rollback, delete, admin, use) on a credential path
prefix. Prefixes are segment-aware (prod/db covers prod/db and prod/db/x, not
prod/dbx); * covers everything; admin implies every permission on its prefix,
and admin:* is needed for tokens, backup, restore and keys. Any grant shows a
credential's metadata; read is needed for its secret values. use:ID lets a
token bind credentials to the admin credential ID (admin_credential and the
like) without seeing it; see docs/admin-credentials.md.

Like every command they talk to the server when --addr or
$NEBULA_CREDENTIAL_ADDR is set (the token in $NEBULA_CREDENTIAL_TOKEN needs
admin:*); otherwise they open the store directly, which is how the first
tokens are made. A token value is shown once; the store keeps only its
SHA-256 hash.`,
	}
	var (
		name   string
		grants []string
		ttl    string
	)
	create := &cobra.Command{
		Use:   "create --name NAME --grant PERM:PREFIX... [--ttl 30d]",
		Short: "Create a token and print its value (shown once)",
		Example: `  nebula-credential token create --name ci --grant read:prod/ --grant rotate:prod/db --ttl 30d
  nebula-credential token create --name admin --grant admin:*`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usagef("--name is required")
			}
			if len(grants) == 0 {
				return usagef("give at least one --grant PERM:PREFIX (e.g. read:prod/ or admin:*)")
			}
			req := server.TokenRequest{Name: name}
			for _, s := range grants {
				gr, err := acl.ParseGrant(s)
				if err != nil {
					return usageError{err}
				}
				req.Grants = append(req.Grants, gr)
			}
			if ttl != "" {
				d, err := rotation.ParseDuration(ttl)
				if err != nil || d <= 0 {
					return usagef("--ttl: want a positive duration like 30d or 12h")
				}
				req.TTL = d
			}
			tok, val, err := g.tokens().create(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				out := tokenOut(tok)
				out["token"] = val.Reveal()
				return g.printJSON(out)
			}
			fmt.Fprintf(g.stderr, "created token %s (%s); the value below is shown once:\n", tok.ID, strings.Join(tok.GrantStrings(), " "))
			fmt.Fprintln(g.stdout, val.Reveal())
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "what the token is for (required)")
	create.Flags().StringArrayVar(&grants, "grant", nil, "PERM:PREFIX, repeatable (perm: read, write, rotate, rollback, delete, admin, use)")
	create.Flags().StringVar(&ttl, "ttl", "", "expire after this long (e.g. 30d); default never")

	list := &cobra.Command{
		Use:     "list",
		Short:   "List tokens (never their values)",
		Example: "  nebula-credential token list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			toks, err := g.tokens().list(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				out := make([]map[string]any, 0, len(toks))
				for i := range toks {
					out = append(out, tokenOut(&toks[i]))
				}
				return g.printJSON(out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tGRANTS\tCREATED\tEXPIRES")
			for _, t := range toks {
				exp := "never"
				if t.ExpiresAt != nil {
					exp = t.ExpiresAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, strings.Join(t.GrantStrings(), " "), t.CreatedAt.Format(time.RFC3339), exp)
			}
			return tw.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token",
		Long: `Delete a token. Through a server (--addr or $NEBULA_CREDENTIAL_ADDR) it takes
effect at once. Revoked directly in the store, a running server that looked
the token up in the last few seconds may accept it for up to 2 more seconds
(its token cache).`,
		Example: `  nebula-credential token revoke tok_3fa2b1c9d0e1
  NEBULA_CREDENTIAL_ADDR=https://creds.internal:8270 NEBULA_CREDENTIAL_TOKEN=$(cat admin.token) nebula-credential token revoke tok_3fa2b1c9d0e1`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.tokens().revoke(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"id": args[0], "revoked": true})
			}
			g.printf("revoked %s\n", args[0])
			return nil
		},
	}
	t.AddCommand(create, list, revoke)
	return t
}

func tokenOut(t *server.Token) map[string]any {
	out := map[string]any{"id": t.ID, "name": t.Name, "grants": t.GrantStrings(), "created_at": t.CreatedAt}
	if t.ExpiresAt != nil {
		out["expires_at"] = t.ExpiresAt
	}
	return out
}
