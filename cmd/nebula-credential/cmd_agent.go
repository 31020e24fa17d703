package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nebula-credential/nebula-credential/agent"
)

func init() {
	extraCommands = append(extraCommands, cmdAgent, cmdRun)
}

// agentLogger logs to stderr, as JSON with --json.
func (g *globals) agentLogger() *slog.Logger {
	if g.json {
		return slog.New(slog.NewJSONHandler(g.stderr, nil))
	}
	return slog.New(slog.NewTextHandler(g.stderr, nil))
}

// runAgent runs a until it ends; a child's exit status becomes ours.
func (g *globals) runAgent(ctx context.Context, cfg *agent.Config, kind string) error {
	opts := agent.Options{Logger: g.agentLogger(), Kind: kind, Stdin: g.stdin, Stdout: g.stdout, Stderr: g.stderr}
	if cfg.Exec != nil {
		// signals go to the child; we end when it does
		opts.ForwardSignals = true
		ctx = context.WithoutCancel(ctx)
	}
	a, err := agent.New(cfg, opts)
	if err != nil {
		return err
	}
	err = a.Run(ctx)
	var ee *agent.ExitError
	if errors.As(err, &ee) {
		return exitError{code: ee.Code}
	}
	return err
}

func cmdAgent(g *globals) *cobra.Command {
	var (
		config string
		check  bool
	)
	c := &cobra.Command{
		Use:   "agent --config FILE",
		Short: "Render credentials into files and keep them current (reload on change)",
		Long: `Run the agent: it renders Go templates from credentials into files, keeps them
current by following the server's change stream, and runs an action when a
file changes (a signal to a process, a command, or a restart of the child it
supervises). It reports to the server which version it delivered, so
'nebula-credential consumers' shows it and the server can end grace early.

Files are written atomically (temp file, fsync, rename), only when their
content changes, with mode 0600 unless the config says otherwise. When the
server is unreachable every file is kept as it is and the agent retries.

The config is YAML; docs/agent.md is the reference. --check reads and checks
the config (and the templates' syntax) without connecting, and exits with 2
and the file, line and field of the first error.

The token comes from token_file in the config or $NEBULA_CREDENTIAL_TOKEN.`,
		Example: `  nebula-credential agent --config /etc/nebula-credential/agent.yaml --check
  nebula-credential agent --config /etc/nebula-credential/agent.yaml
  nebula-credential consumers prod/db/orders   # the agent shows up here`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return usagef("--config is required: the agent's YAML config (see docs/agent.md)")
			}
			cfg, err := agent.LoadConfig(config)
			if err != nil {
				return err
			}
			if check {
				if g.json {
					return g.printJSON(map[string]any{"ok": true, "templates": len(cfg.Templates)})
				}
				fmt.Fprintf(g.stdout, "%s: ok (%d templates)\n", config, len(cfg.Templates))
				return nil
			}
			return g.runAgent(cmd.Context(), cfg, "agent")
		},
	}
	c.Flags().StringVar(&config, "config", "", "the agent's YAML config file")
	c.Flags().BoolVar(&check, "check", false, "check the config and exit")
	return c
}

func cmdRun(g *globals) *cobra.Command {
	var (
		envs, templates  []string
		onChange, sig    string
		killTimeout      time.Duration
		caFile, tokenEnv string
	)
	c := &cobra.Command{
		Use:   "run [--env NAME=ID:FIELD]... [--template SRC:DST]... -- CMD [ARGS...]",
		Short: "Run a program with credentials in its environment or files; restart it on rotation",
		Long: `Run CMD with credentials: --env NAME=ID:FIELD sets the environment variable
NAME to field FIELD (a secret field or a plain one) of credential ID;
--template SRC:DST renders the Go template file SRC (see docs/agent.md for the
helpers) to DST before CMD starts.

run forwards INT, TERM, HUP, QUIT, USR1 and USR2 to CMD and exits with its
status (128+N if a signal N ended it). When a credential CMD uses changes,
--on-change restart (default) stops CMD with --signal (default TERM), kills it
after --kill-timeout, and starts it again with the new values; --on-change
signal sends --signal (default HUP) instead; none does nothing.

The server is --addr or $NEBULA_CREDENTIAL_ADDR (several, comma-separated, are
tried in order), the token $NEBULA_CREDENTIAL_TOKEN.`,
		Example: `  nebula-credential run --env PGPASSWORD=prod/db/orders:password -- psql -h db -U app -c 'select 1'
  nebula-credential run --template app.env.tmpl:/run/app/app.env -- java -jar app.jar
  nebula-credential run --on-change signal --signal HUP --template nginx.tmpl:/etc/nginx/tls.pem -- nginx -g 'daemon off;'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return usagef("put the program after --: nebula-credential run [flags] -- CMD [ARGS...]")
			}
			addr := g.serverAddr()
			if addr == "" {
				return usagef("run needs a server: set --addr or NEBULA_CREDENTIAL_ADDR")
			}
			cfg := &agent.Config{CAFile: caFile, TokenEnv: tokenEnv, Exec: &agent.Exec{Command: args, OnChange: onChange, Signal: sig, KillTimeout: agent.Duration(killTimeout)}}
			for _, s := range strings.Split(addr, ",") {
				cfg.Servers = append(cfg.Servers, strings.TrimSpace(s))
			}
			for _, e := range envs {
				name, ref, ok := strings.Cut(e, "=")
				id, field, ok2 := strings.Cut(ref, ":")
				if !ok || !ok2 || name == "" || id == "" || field == "" {
					return usagef("--env %q: want NAME=ID:FIELD, e.g. PGPASSWORD=prod/db/orders:password", e)
				}
				cfg.Env = append(cfg.Env, agent.EnvVar{Name: name, ID: id, Field: field})
			}
			for _, t := range templates {
				src, dst, ok := strings.Cut(t, ":")
				if !ok || src == "" || dst == "" {
					return usagef("--template %q: want SRC:DST, e.g. app.env.tmpl:/run/app/app.env", t)
				}
				cfg.Templates = append(cfg.Templates, agent.Template{Source: src, Destination: dst})
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return g.runAgent(cmd.Context(), cfg, "run")
		},
	}
	c.Flags().StringArrayVar(&envs, "env", nil, "NAME=ID:FIELD: set NAME to field FIELD of credential ID (repeatable)")
	c.Flags().StringArrayVar(&templates, "template", nil, "SRC:DST: render template file SRC to DST (repeatable)")
	c.Flags().StringVar(&onChange, "on-change", "restart", "restart, signal or none: what a change does to the program")
	c.Flags().StringVar(&sig, "signal", "", "signal sent on change (default TERM with restart, HUP with signal)")
	c.Flags().DurationVar(&killTimeout, "kill-timeout", 10*time.Second, "how long a stopping program may take before SIGKILL")
	c.Flags().StringVar(&caFile, "ca-file", "", "PEM CA certificates for an https:// server")
	c.Flags().StringVar(&tokenEnv, "token-env", "", "environment variable holding the token (default NEBULA_CREDENTIAL_TOKEN)")
	return c
}
