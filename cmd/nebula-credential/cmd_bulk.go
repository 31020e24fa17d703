package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotation"
)

// eachCredential calls fn for every credential matching prefix and type, on up
// to workers goroutines, driving a progress bar. Results come back in ID order.
func eachCredential[R any](ctx context.Context, g *globals, m backend, desc, prefix, typ string, workers int, fn func(ctx context.Context, id string) R) ([]R, error) {
	var ids []string
	for after := ""; ; {
		page, next, err := m.List(ctx, credential.ListOptions{Prefix: prefix, Type: credential.Type(typ), After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, s := range page {
			ids = append(ids, s.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	out := make([]R, len(ids))
	bar, done := g.progress(desc)
	defer done()
	var (
		mu       sync.Mutex
		finished int
		wg       sync.WaitGroup
		sem      = make(chan struct{}, max(1, workers))
	)
	for i, id := range ids {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = fn(ctx, id)
			mu.Lock()
			finished++
			bar(finished, len(ids))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, ctx.Err()
}

type bulkResult struct {
	ID          string `json:"id"`
	Outcome     string `json:"outcome"` // rotated, skipped, failed
	FromVersion int    `json:"from_version,omitempty"`
	ToVersion   int    `json:"to_version,omitempty"`
	Step        string `json:"step,omitempty"`
	Error       string `json:"error,omitempty"`
}

// rotateAll rotates every credential under a prefix.
func rotateAll(cmd *cobra.Command, g *globals, prefix, typ string, workers int, opts rotation.RotateOptions) error {
	m, err := g.backend(cmd.Context(), openOpts{})
	if err != nil {
		return err
	}
	defer m.Close()
	res, err := eachCredential(cmd.Context(), g, m, "rotate", prefix, typ, workers, func(ctx context.Context, id string) bulkResult {
		r, err := m.Rotate(ctx, id, opts)
		out := bulkResult{ID: id, Outcome: "rotated"}
		if r != nil {
			out.FromVersion, out.ToVersion, out.Step = r.FromVersion, r.ToVersion, r.Step
		}
		switch {
		case errors.Is(err, credential.ErrRotationInProgress):
			out.Outcome, out.Error = "skipped", err.Error()
		case err != nil:
			out.Outcome, out.Error = "failed", err.Error()
		}
		return out
	})
	if err != nil {
		return err
	}
	counts := map[string]int{}
	for _, r := range res {
		counts[r.Outcome]++
	}
	if g.json {
		if err := g.printJSON(map[string]any{"results": res, "rotated": counts["rotated"], "skipped": counts["skipped"], "failed": counts["failed"]}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOUTCOME\tVERSIONS\tDETAIL")
		for _, r := range res {
			fmt.Fprintf(tw, "%s\t%s\t%d→%d\t%s\n", r.ID, r.Outcome, r.FromVersion, r.ToVersion, r.Error)
		}
		tw.Flush()
		g.printf("%d rotated, %d skipped (rotation in progress), %d failed\n", counts["rotated"], counts["skipped"], counts["failed"])
	}
	if counts["failed"] > 0 {
		return exitError{exitFailed}
	}
	return nil
}

func cmdReconcile(g *globals) *cobra.Command {
	var (
		prefix, typ string
		workers     int
	)
	c := &cobra.Command{
		Use:   "reconcile",
		Short: "Test every credential against its target and report drift",
		Long: `Run the doctor's checks on every credential (or those under --prefix): does the
target accept the current version, is a rotation stuck or failed. Use it after a
restore, or regularly. Exit code 0 only when every credential is healthy.`,
		Example: `  nebula-credential reconcile
  nebula-credential reconcile --prefix prod/db/ --json`,
		Args: cobra.NoArgs,
		RunE: g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, _ []string, m backend) error {
			reps, err := eachCredential(cmd.Context(), g, m, "reconcile", prefix, typ, workers, func(ctx context.Context, id string) *rotation.Report {
				rep, err := m.Doctor(ctx, id)
				if err != nil {
					return &rotation.Report{CredentialID: id, Findings: []rotation.Finding{{Severity: "error", Title: err.Error()}}}
				}
				return rep
			})
			if err != nil {
				return err
			}
			unhealthy := 0
			for _, r := range reps {
				if !r.Healthy {
					unhealthy++
				}
			}
			if g.json {
				if err := g.printJSON(map[string]any{"reports": reps, "checked": len(reps), "unhealthy": unhealthy}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tHEALTHY\tSTATE\tFINDING\tFIX")
				for _, r := range reps {
					title, fix := "", ""
					for _, f := range r.Findings {
						if f.Severity != "ok" {
							title, fix = f.Title, f.Fix
							break
						}
					}
					fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", r.CredentialID, r.Healthy, r.State, title, fix)
				}
				tw.Flush()
				g.printf("%d checked, %d unhealthy\n", len(reps), unhealthy)
			}
			if unhealthy > 0 {
				return exitError{exitFailed}
			}
			return nil
		}),
	}
	c.Flags().StringVar(&prefix, "prefix", "", "only IDs under this prefix")
	c.Flags().StringVar(&typ, "type", "", "only this type")
	c.Flags().IntVar(&workers, "concurrency", 4, "credentials checked at once")
	return c
}
