package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
)

// reportRotation prints the outcome of rotate/rollback; err is the engine's.
func (g *globals) reportRotation(r *rotation.Info, err error) error {
	if r == nil {
		return err
	}
	if g.json {
		return g.printJSONResult(r, err)
	}
	if err != nil {
		if errors.Is(err, rotation.ErrRetryScheduled) {
			g.printf("%s: rotation %d waiting to retry (%s); `nebula-credential serve` keeps retrying it while the target is away. Retry now: `nebula-credential rotations retry %s`; give up (reverts what reached the target): `nebula-credential rotations retry %s --rollback`\n", r.ID, r.RotationID, r.LastError, r.ID, r.ID)
			return exitError{exitFailed}
		}
		if h := rotationHint(err); h != "" {
			return fmt.Errorf("%w; %s", err, h)
		}
		return err
	}
	switch r.Step {
	case rotation.StepGrace:
		g.printf("%s: version %d is current; version %d stays valid until %s (grace)\n", r.ID, r.ToVersion, r.FromVersion, r.GraceEndsAt.Format(time.RFC3339))
	case rotation.StepRetired:
		if r.Strategy == string(rotator.InPlace) && r.Kind == rotation.KindRotate {
			g.printf("%s: version %d is current; version %d stopped working when version %d was applied (in_place: no grace period; going back means `rollback %s --to-version %d`)\n", r.ID, r.ToVersion, r.FromVersion, r.ToVersion, r.ID, r.FromVersion)
			return nil
		}
		g.printf("%s: version %d is current; version %d retired\n", r.ID, r.ToVersion, r.FromVersion)
	case rotation.StepRolledBack:
		g.printf("%s: rolled back: version %d is current again\n", r.ID, r.FromVersion)
	default:
		g.printf("%s: rotation %d at step %s\n", r.ID, r.RotationID, r.Step)
	}
	return nil
}

func cmdRotate(g *globals) *cobra.Command {
	var (
		grace      string
		reason     string
		noValidate bool
		wait       bool
		all        bool
		prefix     string
		typ        string
		workers    int
		now        bool
	)
	c := &cobra.Command{
		Use:   "rotate ID | rotate --all [--prefix P] [--type T]",
		Short: "Rotate a credential now (journaled, verified, with a grace period)",
		Long: `Rotate a credential through the journaled protocol: the new secret is stored
encrypted before the target changes, applied, verified with a real login, and
committed; the previous version stays valid for the grace period (default 5m),
after which the scheduler ('serve') retires it. A failed apply or verify rolls
back automatically. --grace 0 retires the old version at once (with a warning).

Asked for while the previous rotation is in its grace period, rotate is refused
and says when the grace ends; with --wait it waits for the grace to end (retiring
the previous version then) and rotates.

--now is the emergency rotation for a leaked secret: it ends any running grace
period at once (retiring the previous version on the target), rotates with zero
grace so that the leaked version stops working as soon as the new one is
verified, reports what was revoked, and is audited as rotate.emergency. See
docs/rotation.md#emergency-rotation.`,
		Example: `  nebula-credential rotate prod/db/orders
  nebula-credential rotate prod/db/orders --grace 30m --reason "leaked in CI log"
  nebula-credential rotate prod/signing-key --grace 0 --wait --json
  nebula-credential rotate --all --prefix prod/db/ --reason "quarterly" --concurrency 8
  nebula-credential rotate prod/db/orders --now --reason "password pasted in a ticket"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if all {
				if len(args) != 0 {
					return usagef("give an ID or --all, not both")
				}
				return nil
			}
			if prefix != "" || typ != "" {
				return usagef("--prefix and --type select credentials for --all")
			}
			return exactArgs(1, "ID (or --all)")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := rotation.RotateOptions{Reason: reason, NoValidate: noValidate, Wait: wait}
			if grace != "" {
				d, err := rotation.ParseDuration(grace)
				if err != nil || d < 0 {
					return usagef("--grace: invalid duration %q (want e.g. 5m, 1h, 0)", grace)
				}
				opts.Grace = &d
				if d == 0 {
					g.warnf("grace 0: consumers still holding the previous version will fail as soon as it is retired")
				}
			}
			if noValidate {
				g.warnf("--no-validate: the new secret is committed without a test login")
			}
			opts.Actor, _ = audit.ActorOf(cmd.Context())
			if !all {
				opts.OnQueued = func(end time.Time) {
					fmt.Fprintf(g.stderr, "%s: queued behind the grace period ending at %s; waiting. If this stops, the scheduler (`nebula-credential serve`) still runs the rotation then\n", args[0], end.Format(time.RFC3339))
				}
			}
			if now {
				if all || grace != "" {
					return usagef("--now rotates one credential with zero grace: drop --all and --grace")
				}
				return rotateNow(cmd, g, args[0], rotation.EmergencyOptions{Reason: reason, NoValidate: noValidate, Wait: wait})
			}
			if all {
				return rotateAll(cmd, g, prefix, typ, workers, opts)
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.Rotate(cmd.Context(), args[0], opts)
			return g.reportRotation(r, err)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "rotate every credential (under --prefix, of --type)")
	c.Flags().StringVar(&prefix, "prefix", "", "with --all: only IDs under this prefix")
	c.Flags().StringVar(&typ, "type", "", "with --all: only this type")
	c.Flags().IntVar(&workers, "concurrency", 4, "with --all: rotations at once")
	c.Flags().StringVar(&grace, "grace", "", "grace period for the previous version (default: the credential's, 5m)")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in history and audit)")
	c.Flags().BoolVar(&noValidate, "no-validate", false, "skip the verification login (not recommended)")
	c.Flags().BoolVar(&wait, "wait", false, "keep retrying here through backoff instead of leaving retries to the scheduler; during a grace period, wait for it to end, then rotate")
	c.Flags().BoolVar(&now, "now", false, "emergency: end any grace at once and rotate with zero grace (a leaked secret)")
	return c
}

func cmdRollback(g *globals) *cobra.Command {
	var (
		to     int
		reason string
		wait   bool
	)
	c := &cobra.Command{
		Use:   "rollback ID [--to-version K]",
		Short: "Move current back to the previous version (or re-apply any retained version)",
		Long: `During grace, rollback verifies the previous version, makes it current again
and retires the newer one. After grace, --to-version K re-applies version K on
the target, verifies it and commits it (a journaled restore).`,
		Example: `  nebula-credential rollback prod/db/orders
  nebula-credential rollback prod/db/orders --to-version 7`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to < 0 {
				return usagef("--to-version must be positive")
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			actor, _ := audit.ActorOf(cmd.Context())
			r, err := m.Rollback(cmd.Context(), args[0], rotation.RollbackOptions{ToVersion: to, Actor: actor, Reason: reason, Wait: wait})
			if err == nil && r != nil && r.Kind == rotation.KindRotate && r.Step == rotation.StepRolledBack && !g.json {
				g.printf("%s: version %d is current again; version %d retired\n", r.ID, r.FromVersion, r.ToVersion)
				return nil
			}
			return g.reportRotation(r, err)
		},
	}
	c.Flags().IntVar(&to, "to-version", 0, "re-apply this stored version (after grace)")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in history and audit)")
	c.Flags().BoolVar(&wait, "wait", false, "keep retrying here through backoff")
	return c
}

func cmdPolicy(g *globals) *cobra.Command {
	p := &cobra.Command{Use: "policy", Short: "Show or set a credential's rotation policies and settings"}
	var (
		periodic, jitter, cronExpr, window, grace, minRemaining, strategy string
		maxStaleness                                                      string
		retryBudget                                                       string
		beforeExpiry, manual, fromStdin, clear                            bool
		fraction                                                          float64
		retention                                                         int
		validate, autoRollback                                            string
	)
	set := &cobra.Command{
		Use:   "set ID",
		Short: "Set rotation policies and settings",
		Long: `Set when and how a credential rotates. Policy flags replace the existing
policies; several may be combined and the earliest due wins. Other flags change
only what they name. --stdin reads the whole settings object as JSON instead.`,
		Example: `  nebula-credential policy set prod/db/orders --periodic 30d --jitter 2d
  nebula-credential policy set prod/api/token --before-expiry --fraction 0.8 --min-remaining 1h
  nebula-credential policy set prod/db/orders --cron "0 3 * * 1" --window 2h --grace 15m
  nebula-credential policy set prod/db/orders --manual
  nebula-credential policy set prod/db/orders --retry-budget 2h   # ride out a long maintenance window
  echo '{"policies":[{"kind":"periodic","interval":"90d"}]}' | nebula-credential policy set prod/db/orders --stdin`,
		Args: exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			pol, err := m.Policy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			s := pol.Settings
			if fromStdin {
				b, err := io.ReadAll(io.LimitReader(g.stdin, maxInput))
				if err != nil {
					return err
				}
				s = credential.Settings{}
				dec := json.NewDecoder(bytesReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&s); err != nil {
					return usagef("stdin: %s", describeJSONError(err, b))
				}
			}
			dur := func(name, v string) (rotation.Duration, error) {
				d, err := rotation.ParseDuration(v)
				if err != nil {
					return 0, usagef("--%s: %v", name, err)
				}
				return rotation.Duration(d), nil
			}
			var pols []rotation.Policy
			if periodic != "" {
				iv, err := dur("periodic", periodic)
				if err != nil {
					return err
				}
				pol := rotation.Policy{Kind: rotation.Periodic, Interval: iv}
				if jitter != "" {
					if pol.Jitter, err = dur("jitter", jitter); err != nil {
						return err
					}
				}
				pols = append(pols, pol)
			}
			if beforeExpiry {
				pol := rotation.Policy{Kind: rotation.BeforeExpiry, Fraction: fraction}
				if minRemaining != "" {
					if pol.MinRemaining, err = dur("min-remaining", minRemaining); err != nil {
						return err
					}
				}
				pols = append(pols, pol)
			}
			if cronExpr != "" {
				pol := rotation.Policy{Kind: rotation.Scheduled, Cron: cronExpr}
				if window != "" {
					if pol.Window, err = dur("window", window); err != nil {
						return err
					}
				}
				pols = append(pols, pol)
			}
			if manual {
				pols = append(pols, rotation.Policy{Kind: rotation.Manual})
			}
			if len(pols) > 0 || clear {
				s.Policies = pols
			}
			if grace != "" {
				d, err := dur("grace", grace)
				if err != nil {
					return err
				}
				if d == 0 {
					g.warnf("grace 0: consumers still holding the previous version will fail as soon as it is retired")
				}
				cur := s.GraceOrDefault()
				if time.Duration(d) < cur {
					g.warnf("shortening the default grace from %s to %s applies to future rotations only", cur, time.Duration(d))
				}
				s.Grace = &d
			}
			if retryBudget != "" {
				d, err := dur("retry-budget", retryBudget)
				if err != nil {
					return err
				}
				if d <= 0 {
					return usagef("--retry-budget must be positive, e.g. 30m")
				}
				s.Backoff.Budget = d
			}
			if strategy != "" {
				s.Strategy = rotator.Strategy(strategy)
			}
			if maxStaleness != "" {
				if s.ConsumerMaxStaleness, err = dur("consumer-max-staleness", maxStaleness); err != nil {
					return err
				}
			}
			if retention != 0 {
				s.Retention = retention
			}
			boolFlag := func(name, v string, dst **bool) error {
				if v == "" {
					return nil
				}
				b := v == "true"
				if v != "true" && v != "false" {
					return usagef("--%s must be true or false", name)
				}
				*dst = &b
				return nil
			}
			if err := boolFlag("validate", validate, &s.Verify); err != nil {
				return err
			}
			if err := boolFlag("auto-rollback", autoRollback, &s.AutoRollback); err != nil {
				return err
			}
			pol, err = m.SetPolicy(cmd.Context(), args[0], s)
			if err != nil {
				return err
			}
			if !g.json { // --json carries them in "warnings"
				printFindings(g, pol.Warnings)
			}
			return showPolicy(g, pol)
		}),
	}
	set.Flags().StringVar(&periodic, "periodic", "", "rotate every interval (e.g. 30d)")
	set.Flags().StringVar(&jitter, "jitter", "", "with --periodic: rotate up to this much earlier, never later")
	set.Flags().BoolVar(&beforeExpiry, "before-expiry", false, "rotate when a fraction of the secret's lifetime has passed")
	set.Flags().Float64Var(&fraction, "fraction", 0, "with --before-expiry: fraction of the lifetime (default 0.8)")
	set.Flags().StringVar(&minRemaining, "min-remaining", "", "with --before-expiry: rotate at the latest this long before expiry")
	set.Flags().StringVar(&cronExpr, "cron", "", "rotate on a cron schedule (UTC), e.g. \"0 3 * * 1\"")
	set.Flags().StringVar(&window, "window", "", "with --cron: how long after each firing a rotation may start")
	set.Flags().BoolVar(&manual, "manual", false, "rotate only when asked")
	set.Flags().BoolVar(&clear, "clear", false, "remove all policies")
	set.Flags().StringVar(&grace, "grace", "", "grace period for future rotations")
	set.Flags().StringVar(&retryBudget, "retry-budget", "", "how long a step whose target does not answer is retried (default: serve --retry-budget, 30m; never less than the grace)")
	set.Flags().StringVar(&maxStaleness, "consumer-max-staleness", "", "the longest a consumer serves a cached version (a cache TTL); a shorter grace warns")
	set.Flags().StringVar(&strategy, "strategy", "", "dual, alternating or in_place (default: the rotator's best)")
	set.Flags().IntVar(&retention, "retention", 0, "versions to keep (default 10)")
	set.Flags().StringVar(&validate, "validate", "", "verify before commit: true or false")
	set.Flags().StringVar(&autoRollback, "auto-rollback", "", "roll back automatically on failure: true or false")
	set.Flags().BoolVar(&fromStdin, "stdin", false, "read the settings as JSON from stdin")
	show := &cobra.Command{
		Use:     "show ID",
		Short:   "Show rotation policies, settings and the next due time",
		Example: "  nebula-credential policy show prod/db/orders --json",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			pol, err := m.Policy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !g.json {
				printFindings(g, pol.Warnings)
			}
			return showPolicy(g, pol)
		}),
	}
	p.AddCommand(set, show)
	return p
}

func showPolicy(g *globals, p *client.Policy) error {
	if g.json {
		return g.printJSON(p)
	}
	id, s := p.ID, p.Settings
	g.printf("id:            %s\n", id)
	if len(s.Policies) == 0 {
		g.printf("policies:      none (manual)\n")
	}
	for _, p := range s.Policies {
		b, _ := json.Marshal(p)
		g.printf("policy:        %s\n", b)
	}
	next := "never (manual)"
	if p.NextRotationAt != nil {
		next = p.NextRotationAt.Format(time.RFC3339)
	}
	g.printf("next rotation: %s\n", next)
	strategy := string(s.Strategy)
	if strategy == "" {
		strategy = "(rotator's best)"
	}
	g.printf("strategy:      %s\ngrace:         %s\nvalidate:      %v\nauto_rollback: %v\nretention:     %d\n",
		strategy, s.GraceOrDefault(), s.ValidateOrDefault(), s.AutoRollbackOrDefault(), s.RetentionOrDefault())
	g.printf("warnings:      %d\n", len(p.Warnings))
	return nil
}

// printFindings writes policy warnings to stderr, each with its fix command.
func printFindings(g *globals, fs []rotation.Finding) {
	for _, f := range fs {
		g.warnf("%s", f.Title)
		if f.Detail != "" {
			fmt.Fprintf(g.stderr, "  %s\n", f.Detail)
		}
		if f.Fix != "" {
			fmt.Fprintf(g.stderr, "  fix: %s\n", f.Fix)
		}
	}
}

func cmdRotations(g *globals) *cobra.Command {
	var (
		open  bool
		limit int
	)
	c := &cobra.Command{
		Use:   "rotations [ID]",
		Short: "List open and recent rotations with their step",
		Example: `  nebula-credential rotations
  nebula-credential rotations prod/db/orders --json
  nebula-credential rotations --open`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			rs, err := m.Rotations(cmd.Context(), id, open, limit)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(nonNil(rs))
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROTATION\tID\tKIND\tSTEP\tVERSIONS\tSTARTED\tERROR")
			for _, r := range rs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d→%d\t%s\t%s\n", r.RotationID, r.ID, r.Kind, r.Step, r.FromVersion, r.ToVersion, r.StartedAt.Format(time.RFC3339), r.LastError)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&open, "open", false, "only open rotations")
	c.Flags().IntVar(&limit, "limit", 50, "how many")

	var (
		keep  int
		force bool
	)
	resolve := &cobra.Command{
		Use:   "resolve ID --keep VERSION",
		Short: "Close a rotation that needs attention, keeping one version as current",
		Long: `After repairing a rotation by hand (see 'doctor'), close it: the kept version is
verified against the target (unless --force) and made current.`,
		Example: "  nebula-credential rotations resolve prod/db/orders --keep 4",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			r, err := m.Resolve(cmd.Context(), args[0], keep, force)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(r)
			}
			cur := keep
			if cur == 0 {
				cur = r.FromVersion
			}
			if r.Step == rotation.StepRetired {
				g.printf("%s: rotation %d finished: version %d retired, version %d is current\n", args[0], r.RotationID, r.FromVersion, r.ToVersion)
				return nil
			}
			g.printf("%s: rotation %d resolved; version %d is current\n", args[0], r.RotationID, cur)
			if n := r.StaysValid; n > 0 {
				g.warnf("version %d was never retired: it still logs in on the target until you revoke it by hand", n)
			}
			return nil
		}),
	}
	resolve.Flags().IntVar(&keep, "keep", 0, "version to keep as current (default: the version before the rotation)")
	resolve.Flags().BoolVar(&force, "force", false, "skip verifying the kept version")
	var rollback bool
	retry := &cobra.Command{
		Use:     "retry ID",
		Short:   "Run a stalled or failed rotation again from its failed step",
		Example: "  nebula-credential rotations retry prod/db/orders\n  nebula-credential rotations retry prod/db/orders --rollback",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
			r, err := m.Retry(cmd.Context(), args[0], rollback)
			if rollback && r != nil && r.Step == rotation.StepRolledBack && !r.Open {
				err = nil // rolled back, as asked
			}
			return g.reportRotation(r, err)
		}),
	}
	retry.Flags().BoolVar(&rollback, "rollback", false, "revert to the previous version instead of retrying")
	c.AddCommand(resolve, retry)
	return c
}

func cmdGrace(g *globals) *cobra.Command {
	gr := &cobra.Command{Use: "grace", Short: "Manage grace periods"}
	ext := &cobra.Command{
		Use:     "extend ID DURATION",
		Short:   "Extend the current grace period (it can never be shortened)",
		Example: `  nebula-credential grace extend prod/db/orders 30m`,
		Args:    exactArgs(2, "ID and DURATION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := rotation.ParseDuration(args[1])
			if err != nil {
				return usageError{err}
			}
			if d <= 0 {
				return usagef("grace can only be extended by a positive duration; it is never shortened")
			}
			m, err := g.backend(cmd.Context(), openOpts{})
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.ExtendGrace(cmd.Context(), args[0], d)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(r)
			}
			g.printf("%s: grace extended; version %d stays valid until %s\n", args[0], r.FromVersion, r.GraceEndsAt.Format(time.RFC3339))
			return nil
		},
	}
	gr.AddCommand(ext, cmdGraceEnd(g))
	return gr
}

func cmdDoctor(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor ID",
		Short: "Diagnose a credential and its last rotation; exit 0 only when healthy",
		Long: `Walk the quick-diagnosis tree of a failed rotation: did the new credential fail,
was the old one revoked early, has grace expired, did the rollback fail. Tests
current, previous and pending against the target and prints the finding and the
command that fixes it. Exit code 0 only when healthy, 1 otherwise.`,
		Example: "  nebula-credential doctor prod/db/orders\n  nebula-credential doctor prod/db/orders --json",
		Args:    exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
			rep, err := m.Doctor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				if err := g.printJSON(rep); err != nil {
					return err
				}
			} else {
				printReport(g, rep)
			}
			if !rep.Healthy {
				return exitError{exitFailed}
			}
			return nil
		}),
	}
}

func printReport(g *globals, rep *rotation.Report) {
	g.printf("%s: %s\n", rep.CredentialID, map[bool]string{true: "healthy", false: "UNHEALTHY"}[rep.Healthy])
	g.printf("state: %s\n", rep.State)
	if r := rep.Rotation; r != nil {
		g.printf("last rotation: %d (%s) at step %s, versions %d→%d\n", r.ID, r.Kind, r.Step, r.FromVersion, r.ToVersion)
	}
	for _, c := range rep.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		g.printf("  [%s] version %d (%s): %s\n", mark, c.Version, c.Label, c.Detail)
	}
	for _, f := range rep.Findings {
		g.printf("%s: %s\n", f.Severity, f.Title)
		if f.Detail != "" {
			g.printf("  %s\n", f.Detail)
		}
		if f.Fix != "" {
			g.printf("  fix: %s\n", f.Fix)
		}
	}
}
