package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/rotator"
)

func (l local) EndGrace(ctx context.Context, id, reason string) (*rotation.Info, error) {
	r, err := l.m.EndGrace(ctx, id, rotation.EndGraceOptions{Reason: reason})
	return rotation.InfoOf(r), err
}

func (l local) RotateNow(ctx context.Context, id string, opts rotation.EmergencyOptions) (*rotation.EmergencyInfo, error) {
	res, err := l.m.RotateNow(ctx, id, opts)
	return res.Info(), err
}

func (r remote) EndGrace(ctx context.Context, id, reason string) (*rotation.Info, error) {
	return r.c.EndGrace(ctx, id, reason)
}

func (r remote) RotateNow(ctx context.Context, id string, opts rotation.EmergencyOptions) (*rotation.EmergencyInfo, error) {
	return r.c.RotateNow(ctx, id, opts)
}

// rotateNow runs `rotate --now` and reports what was revoked.
func rotateNow(cmd *cobra.Command, g *globals, id string, opts rotation.EmergencyOptions) error {
	m, err := g.backend(cmd.Context(), openOpts{})
	if err != nil {
		return err
	}
	defer m.Close()
	res, err := m.RotateNow(cmd.Context(), id, opts)
	if g.json && res != nil {
		return g.printJSONResult(res, err)
	}
	if res != nil {
		for _, r := range res.Revoked {
			g.printf("%s: version %d revoked: %s\n", id, r.Version, r.Effect)
		}
	}
	if err != nil {
		if res != nil && len(res.Revoked) > 0 {
			g.warnf("the emergency rotation stopped after revoking the versions above")
		}
		if h := rotationHint(err); h != "" {
			return errorWithHint(err, h)
		}
		return err
	}
	r := res.Rotation
	g.printf("%s: version %d is current (emergency rotation %d, zero grace)\n", id, r.ToVersion, r.RotationID)
	if r.Step != rotation.StepRetired {
		g.warnf("version %d is not retired yet (step %s): run `nebula-credential doctor %s`", r.FromVersion, r.Step, id)
	}
	return nil
}

func errorWithHint(err error, hint string) error {
	return hintError{err, hint}
}

type hintError struct {
	err  error
	hint string
}

func (h hintError) Error() string { return h.err.Error() + "; " + h.hint }
func (h hintError) Unwrap() error { return h.err }

func cmdGraceEnd(g *globals) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "end ID",
		Short: "End the running grace period now, retiring the previous version on the target",
		Long: `End the running grace period at once: the previous version is retired on the
target now (the spare user is locked for alternating, the old secondary secret
is discarded for dual), exactly as at the end of grace, and the rotation closes.
Consumers still holding the previous version fail from now on. Needs the rotate
grant; audited as grace.end. To also replace the current version (a leaked
secret), use 'rotate ID --now'.`,
		Example: `  nebula-credential grace end prod/db/orders
  nebula-credential grace end prod/db/orders --reason "all consumers moved" --json`,
		Args: exactArgs(1, "ID"),
		RunE: g.withBackend(openOpts{}, func(cmd *cobra.Command, args []string, m backend) error {
			r, err := m.EndGrace(cmd.Context(), args[0], strings.TrimSpace(reason))
			if err != nil && r == nil {
				return err
			}
			if err == nil && !g.json && r.Step == rotation.StepRetired {
				g.printf("%s: grace ended; version %d retired: %s\n", args[0], r.FromVersion, rotation.StrategyEffect(rotator.Strategy(r.Strategy)))
				return nil
			}
			return g.reportRotation(r, err)
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return c
}
