package main

import (
	"fmt"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/client"
)

func init() {
	extraCommands = append(extraCommands, cmdAdmin)
}

func cmdAdmin(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "admin",
		Short: "Manage bindings of credentials to admin credentials",
		Long: `A credential that names an admin credential (admin_credential,
auth_credential, acme.account_credential) is bound to it: its rotations use
the admin. Binding needs the use grant on the admin, and the admin's scope
(its own host and port, the accounts it manages) must cover the credential.
See docs/admin-credentials.md.`,
		Example: `  nebula-credential admin approve app/db/orders
  nebula-credential doctor app/db/orders   # names bindings that need approval`,
	}
	c.AddCommand(cmdAdminApprove(g))
	return c
}

func cmdAdminApprove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "approve ID",
		Short: "Approve the binding of a credential to the admin credentials it names",
		Long: `Record that the binding of credential ID, as it is now, to the admin credentials
it names is approved by you. Rotations of a credential whose binding was never
approved (made before bindings were checked, restored from a backup, or whose
binder's token lost the use grant or was revoked) are refused, and doctor names
this command.

The admin's current scope must cover the credential (the same host and port,
its accounts in the admin's manages list, not the admin's own account unless
manage_self, not an account another credential manages unless manage_shared).
Against a server the token needs write on ID and use on each admin; on a local
store the operator holds every grant.

Exit codes: 0 approved, 3 no such credential, 4 refused (the message says why).`,
		Example: `  nebula-credential admin approve app/db/orders
  nebula-credential admin approve app/db/orders --json
  NEBULA_CREDENTIAL_ADDR=https://creds:8443 nebula-credential admin approve app/db/orders`,
		Args: exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
			id := args[0]
			if err := credential.ValidateID(id); err != nil {
				return usageError{err}
			}
			var (
				out []client.Binding
				err error
			)
			switch b := m.(type) {
			case remote:
				out, err = b.c.Approve(cmd.Context(), id)
			case local:
				var recs []credential.BindingRecord
				recs, err = b.m.ApproveBindings(cmd.Context(), id)
				for _, r := range recs {
					out = append(out, client.Binding{Field: r.Field, Admin: r.Admin, By: r.By, At: r.At})
				}
			default:
				return fmt.Errorf("admin approve: unsupported backend %T", m)
			}
			if err != nil {
				return err
			}
			if out == nil {
				out = []client.Binding{}
			}
			if g.json {
				return g.printJSON(map[string]any{"id": id, "bindings": out})
			}
			if len(out) == 0 {
				g.printf("%s names no admin credential: nothing to approve\n", id)
				return nil
			}
			for _, b := range out {
				g.printf("approved: %s -> %s (%s), by %s at %s\n", id, b.Admin, b.Field, b.By, b.At.Format("2006-01-02T15:04:05Z07:00"))
			}
			return nil
		}),
	}
}
