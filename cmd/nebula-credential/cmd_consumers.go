package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/server"
)

func init() {
	extraCommands = append(extraCommands, cmdConsumers)
}

func cmdConsumers(g *globals) *cobra.Command {
	var (
		timeout time.Duration
		behind  bool
	)
	c := &cobra.Command{
		Use:   "consumers [ID]",
		Short: "List who consumes credentials and which version each confirmed",
		Long: `List the consumers of a credential (or of all): the agents ('nebula-credential
agent' and 'run') and pools that reported the version they delivered, whether
the action after delivery (reload, restart, command) succeeded, and when they
last reported. A consumer that has not reported for the server's consumer
timeout is shown as gone; it no longer holds back an early end of grace.

Use it before retiring an old version by hand, or to find the applications a
rotation has not reached: --behind lists only live consumers that are not on
the current version or whose action failed, and exits with status 1 if there
is any.`,
		Example: `  nebula-credential consumers
  nebula-credential consumers prod/db/orders --json
  nebula-credential consumers --behind || echo "some consumers are not on the current version"`,
		Args: cobra.MaximumNArgs(1),
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
				if err := credential.ValidateID(id); err != nil {
					return usageError{err}
				}
			}
			var (
				cs  []credential.ConsumerInfo
				err error
			)
			switch b := m.(type) {
			case remote:
				cs, err = b.c.Consumers(cmd.Context(), id)
			case local:
				cs, err = server.ListConsumers(cmd.Context(), b.m.Store(), id, time.Now(), timeout, nil)
			default:
				return fmt.Errorf("consumers: unsupported backend %T", m)
			}
			if err != nil {
				return err
			}
			if behind {
				kept := cs[:0]
				for _, c := range cs {
					if c.Live && (!c.UpToDate || !c.ActionOK) {
						kept = append(kept, c)
					}
				}
				cs = kept
			}
			if g.json {
				if cs == nil {
					cs = []credential.ConsumerInfo{}
				}
				if err := g.printJSON(cs); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CREDENTIAL\tCONSUMER\tNAME\tHOST\tKIND\tVERSION\tCURRENT\tACTION\tSTATUS\tLAST SEEN")
				for _, c := range cs {
					action := "ok"
					if !c.ActionOK {
						action = "failed: " + c.ActionError
					}
					status := "live"
					if !c.Live {
						status = "gone"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", c.CredentialID, c.ConsumerID, c.Name, c.Host, c.Kind, c.Version, c.CurrentVersion, action, status, c.LastSeen.Format(time.RFC3339))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if behind && len(cs) > 0 {
				return exitError{1}
			}
			return nil
		}),
	}
	c.Flags().DurationVar(&timeout, "consumer-timeout", 90*time.Second, "on a local store: a consumer silent this long is shown as gone (a server applies its own)")
	c.Flags().BoolVar(&behind, "behind", false, "only live consumers not on the current version or whose action failed; exit 1 if any")
	return c
}
