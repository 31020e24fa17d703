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
	extraCommands = append(extraCommands, cmdStatus)
}

func cmdStatus(g *globals) *cobra.Command {
	var (
		deadAfter time.Duration
		requireN  int
	)
	c := &cobra.Command{
		Use:   "status",
		Short: "List the server instances sharing the store and who holds each open rotation",
		Long: `List the 'serve' instances that share this store, as of their heartbeats
(every 10s; an instance silent for 30s is dead), and the open rotations and
retire jobs with the instance holding each one's lease.

A rotation whose lease is not held waits for whichever scheduler reaches it
at its due time; one held by a dead instance moves to another once the
lease runs out (--lease-ttl of serve, 30s by default).

Against a server (NEBULA_CREDENTIAL_ADDR) only the rotations of credentials
the token's grants cover are listed. --require N exits with status 1 unless
at least N instances are alive: use it in a deployment check.`,
		Example: `  nebula-credential status
  nebula-credential status --json
  NEBULA_CREDENTIAL_ADDR=https://a:8270,https://b:8270 nebula-credential status
  nebula-credential status --require 3 || echo "fewer than 3 instances are alive"`,
		Args: cobra.NoArgs,
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
			if requireN < 0 {
				return usagef("--require must not be negative")
			}
			var (
				st  *credential.ClusterStatus
				err error
			)
			switch b := m.(type) {
			case remote:
				st, err = b.c.Status(cmd.Context())
			case local:
				st, err = server.ClusterStatus(cmd.Context(), b.m.Store(), time.Now(), deadAfter, nil)
			default:
				return fmt.Errorf("status: unsupported backend %T", m)
			}
			if err != nil {
				return err
			}
			alive := 0
			for _, in := range st.Instances {
				if in.Alive {
					alive++
				}
			}
			if g.json {
				if err := g.printJSON(st); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "INSTANCE\tADDRESS\tVERSION\tSTARTED\tLAST HEARTBEAT\tSTATUS")
				for _, in := range st.Instances {
					status := "alive"
					if !in.Alive {
						status = "dead"
					}
					if in.ID == st.Self {
						status += " (answered)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, dash(in.Address), in.Version,
						in.StartedAt.Format(time.RFC3339), in.LastHeartbeat.Format(time.RFC3339), status)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%d of %d instances alive (dead after %s without a heartbeat)\n\n", alive, len(st.Instances), time.Duration(st.DeadAfter))
				tw = tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CREDENTIAL\tROTATION\tKIND\tSTEP\tLEASE HOLDER\tLEASE\tDUE")
				for _, l := range st.Leases {
					lease := "free"
					switch {
					case l.Held && l.OwnerAlive:
						lease = "held until " + l.LeaseUntil.Format(time.RFC3339)
					case l.Held:
						lease = "held by a dead instance until " + l.LeaseUntil.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", l.CredentialID, l.RotationID, l.Kind, l.Step,
						dash(l.Owner), lease, l.DueAt.Format(time.RFC3339))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(st.Leases) == 0 {
					fmt.Fprintln(g.stdout, "no open rotations")
				}
			}
			if alive < requireN {
				if !g.json {
					fmt.Fprintf(g.stderr, "only %d instances are alive, --require %d: start more `nebula-credential serve` processes on this store, or check their logs\n", alive, requireN)
				}
				return exitError{1}
			}
			return nil
		}),
	}
	c.Flags().DurationVar(&deadAfter, "dead-after", 30*time.Second, "on a local store: an instance without a heartbeat this long is shown as dead (a server applies its own)")
	c.Flags().IntVar(&requireN, "require", 0, "exit with status 1 unless at least this many instances are alive")
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
