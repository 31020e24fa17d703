package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/acl"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/server"
	"github.com/nebula-credential/nebula-credential/store"
	"github.com/nebula-credential/nebula-credential/store/sqlite"
)

func init() {
	extraCommands = append(extraCommands, cmdServe)
}

// adminTokenFile is written beside the store on first run.
const adminTokenFile = "admin.token"

func cmdServe(g *globals) *cobra.Command {
	var (
		addr, addrFile, tlsCert, tlsKey, logLevel string
		shutdown                                  time.Duration
		rateLimit                                 float64
		publicMetrics                             bool
		leaseTTL, heartbeat                       time.Duration
		engine                                    rotation.Config
		consumers                                 server.ConsumerConfig
		notifyCfg                                 notify.DispatcherConfig
	)
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API and the rotation scheduler",
		Long: `Serve the HTTP API (JSON under /v1/, see /v1/openapi.json) and run the rotation
scheduler: due rotations start, retries continue, grace periods end.

On first run, when the store does not exist, serve initialises it as 'init'
would, creates an admin token (admin on everything), prints it once on stderr
and writes it to admin.token beside the store (mode 0600). Later tokens come
from 'nebula-credential token create' or POST /v1/tokens.

Logs are JSON on stderr; they never contain secret values or tokens. On
SIGTERM or SIGINT, serve stops accepting connections, lets in-flight requests
finish (--shutdown-timeout), then stops the scheduler; a rotation cut short is
resumed from its journal on the next start.

Endpoints besides /v1/: /healthz (process up), /readyz (store reachable and
scheduler running), /metrics (Prometheus; needs a token unless
--public-metrics).

Consumers (agents, pools) report the version they delivered (see
'nebula-credential consumers'). With --early-retire, a grace period ends as
soon as every live consumer of the credential confirmed the new version, but
not before --early-retire-min after the commit; the grace length stays the
upper bound, and a consumer silent for --consumer-timeout stops counting.

Several serve processes may share one postgres:// store (see docs/ha.md):
all answer the API and all run the scheduler; each due rotation and retire
job is taken by exactly one of them. A rotation step holds a lease of
--lease-ttl, renewed at every step; when its server dies, another takes the
work over once the lease runs out. Each instance records a heartbeat every
--heartbeat-interval; 'nebula-credential status' lists the instances (alive
or dead: silent for 3 intervals) and who holds each open rotation's lease.

Outages (see docs/rotation.md, "Outages: budgets and healing"): a step whose
target does not answer is retried with backoff for --retry-budget (a
credential's backoff.budget setting overrides it; never less than its grace);
a rotation parked because its target was away is probed every
--heal-interval and finished once the target answers. The scheduler runs
--concurrency steps at once, at most --target-concurrency of them against one
target (host:port), so a hung target cannot starve the others; the first
connection of each step attempt waits at most --probe-timeout.`,
		Example: `  nebula-credential serve
  nebula-credential serve --early-retire --early-retire-min 1m --consumer-timeout 90s
  nebula-credential serve --store /var/lib/nebula/creds.db --addr 0.0.0.0:8270 --tls-cert cert.pem --tls-key key.pem
  nebula-credential serve --addr 127.0.0.1:0 --addr-file addr.txt &   # pick a free port
  nebula-credential serve check --addr-file addr.txt --wait 10s
  nebula-credential serve --addr 127.0.0.1:0 --addr-file addr.txt & nebula-credential serve check --addr-file addr.txt --pid $! --wait 30s
  nebula-credential serve --store postgres://nebula@db/creds --key-file /etc/nebula/root.key --lease-ttl 30s
  nebula-credential serve --retry-budget 1h --heal-interval 30s   # ride out hour-long maintenance windows
  nebula-credential serve --concurrency 16 --target-concurrency 4 --probe-timeout 3s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (tlsCert == "") != (tlsKey == "") {
				return usagef("give both --tls-cert and --tls-key, or neither")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level must be debug, info, warn or error")
			}
			if consumers.EarlyRetireMin == 0 {
				consumers.EarlyRetireMin = -1 // an explicit 0, not the default
			}
			if rateLimit < 0 {
				return usagef("--rate-limit must not be negative")
			}
			if leaseTTL < 2*time.Second {
				return usagef("--lease-ttl must be at least 2s (each rotator call may take half of it)")
			}
			if err := checkEngineFlags(engine, leaseTTL); err != nil {
				return err
			}
			if heartbeat < time.Second {
				return usagef("--heartbeat-interval must be at least 1s")
			}
			logger := slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			return serve(cmd.Context(), g, logger, serveOptions{
				addr: addr, addrFile: addrFile, tlsCert: tlsCert, tlsKey: tlsKey,
				shutdown: shutdown, rateLimit: rateLimit, publicMetrics: publicMetrics,
				consumers: consumers, notify: notifyCfg, leaseTTL: leaseTTL, heartbeat: heartbeat, engine: engine,
			})
		},
	}
	c.Flags().StringVar(&addr, "addr", server.DefaultAddr, "address to listen on (port 0 picks a free one)")
	c.Flags().StringVar(&addrFile, "addr-file", "", "write the listening address to this file once ready")
	c.Flags().StringVar(&tlsCert, "tls-cert", "", "TLS certificate (PEM) to serve HTTPS")
	c.Flags().StringVar(&tlsKey, "tls-key", "", "TLS private key (PEM)")
	c.Flags().DurationVar(&shutdown, "shutdown-timeout", 30*time.Second, "how long in-flight requests may finish on shutdown")
	c.Flags().Float64Var(&rateLimit, "rate-limit", server.DefaultRateLimit, "requests per second per token, burst twice that (0: unlimited)")
	c.Flags().BoolVar(&publicMetrics, "public-metrics", false, "serve /metrics without a token")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	c.Flags().BoolVar(&consumers.EarlyRetire, "early-retire", false, "end grace once every live consumer confirmed the new version")
	c.Flags().DurationVar(&consumers.EarlyRetireMin, "early-retire-min", 30*time.Second, "with --early-retire, the shortest grace after a commit")
	c.Flags().DurationVar(&consumers.Timeout, "consumer-timeout", 90*time.Second, "a consumer silent this long no longer counts as live")
	c.Flags().DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "how long a rotation step's lease lasts: a dead server's work moves to another after this")
	c.Flags().DurationVar(&heartbeat, "heartbeat-interval", 10*time.Second, "how often this instance records that it is alive ('status' shows it dead after 3 intervals)")
	c.Flags().DurationVar(&engine.TransientBudget, "retry-budget", rotation.DefaultTransientBudget, "how long a step whose target does not answer is retried before reverting or parking (per credential: backoff.budget)")
	c.Flags().DurationVar(&engine.HealInterval, "heal-interval", time.Minute, "how often the target of a rotation parked because it was away is probed")
	c.Flags().IntVar(&engine.Concurrency, "concurrency", 4, "rotation steps the scheduler runs at once")
	c.Flags().IntVar(&engine.TargetConcurrency, "target-concurrency", 0, "at most this many of them against one target (0: half of --concurrency, at least 1)")
	c.Flags().DurationVar(&engine.ProbeTimeout, "probe-timeout", 5*time.Second, "how long the first connection of each step attempt may take")
	notifyFlags(c, &notifyCfg)
	c.AddCommand(cmdServeCheck(g))
	return c
}

type serveOptions struct {
	addr, addrFile, tlsCert, tlsKey string
	shutdown                        time.Duration
	rateLimit                       float64
	publicMetrics                   bool
	consumers                       server.ConsumerConfig
	notify                          notify.DispatcherConfig
	leaseTTL, heartbeat             time.Duration
	engine                          rotation.Config
}

func serve(ctx context.Context, g *globals, logger *slog.Logger, o serveOptions) error {
	loc := g.storeLocation()
	m, err := g.open(ctx, openOpts{logger: logger, leaseTTL: o.leaseTTL, engine: o.engine})
	firstRun := false
	if errors.Is(err, store.ErrNotFound) && (isPostgres(loc) || !sqlite.Exists(loc)) {
		firstRun = true
		m, err = g.open(ctx, openOpts{create: true, logger: logger, leaseTTL: o.leaseTTL, engine: o.engine})
	}
	if err != nil {
		return err
	}
	defer m.Close()
	if firstRun {
		if err := bootstrapAdmin(ctx, g, m, logger); err != nil {
			return err
		}
	} else if toks, err := server.ListTokens(ctx, m.Store()); err == nil && len(toks) == 0 {
		logger.Warn("the store has no API tokens: create one with `nebula-credential token create --name admin --grant admin:*`")
	}

	limit := rate.Limit(o.rateLimit)
	if o.rateLimit == 0 {
		limit = rate.Inf
	}
	disp, err := newDispatcher(m, logger, o.notify)
	if err != nil {
		return err
	}
	// A token revoked through another instance sharing the store must be
	// refused by this one on the very next request: with a shared store,
	// look every token up (one indexed read) instead of caching it.
	var tokenCache time.Duration
	if isPostgres(g.storeLocation()) {
		tokenCache = -1
	}
	srv, err := server.New(server.Config{Manager: m, Logger: logger, RateLimit: limit, PublicMetrics: o.publicMetrics, Consumers: o.consumers, Notify: disp, TokenCacheTTL: tokenCache,
		Instance: server.InstanceConfig{Version: buildVersion(), HeartbeatInterval: o.heartbeat}})
	if err != nil {
		return err
	}
	defer srv.Close()

	// The scheduler outlives the HTTP server: it stops after the last
	// request finished.
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSched()
	schedDone := make(chan error, 1)
	go func() { schedDone <- m.Engine().Run(schedCtx) }()
	notifyDone := runDispatcher(schedCtx, m, disp)

	var addrLock *os.File
	defer func() {
		if addrLock != nil {
			addrLock.Close()
		}
	}()
	err = server.ListenAndServe(ctx, srv, server.ServeConfig{
		Addr: o.addr, TLSCert: o.tlsCert, TLSKey: o.tlsKey, ShutdownTimeout: o.shutdown, Logger: logger,
		OnListen: func(a net.Addr) {
			scheme := "http"
			if o.tlsCert != "" {
				scheme = "https"
			}
			logger.Info("listening", "addr", a.String(), "url", scheme+"://"+a.String(), "store", loc, "instance", m.Engine().Owner())
			srv.SetAddress(scheme + "://" + a.String())
			if o.addrFile != "" {
				f, werr := writeAddrFile(o.addrFile, []byte(scheme+"://"+a.String()+"\n"))
				if werr != nil {
					logger.Error("writing --addr-file", "err", werr)
				} else {
					addrLock = f // held until serve returns: `serve check` sees the owner
				}
			}
		},
	})
	if ctx.Err() != nil {
		logger.Info("shutting down: HTTP server drained, stopping the scheduler")
	}
	stopSched()
	<-notifyDone
	if serr := <-schedDone; serr != nil {
		logger.Error("scheduler", "err", serr)
	}
	if err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// bootstrapAdmin creates the first admin token, prints it once and writes it
// beside the store.
func bootstrapAdmin(ctx context.Context, g *globals, m *credential.Manager, logger *slog.Logger) error {
	tok, val, err := server.CreateToken(ctx, m.Store(), server.TokenRequest{Name: "admin", Grants: []acl.Grant{{Permission: acl.Admin}}})
	if err != nil {
		return err
	}
	path := adminTokenPath(g)
	werr := writeFileAtomic(path, []byte(val.Reveal()+"\n"), 0o600)
	logger.Info("first run: initialised the store and created an admin token", "store", g.storeLocation(), "key_file", g.keyFileLocation(), "token_id", tok.ID, "token_file", path)
	// The one place the token is shown; deliberately not through the logger.
	fmt.Fprintf(g.stderr, "admin token (shown once; also written to %s): %s\n", path, val.Reveal())
	if werr != nil {
		logger.Error("could not write the admin token file: copy the token above now", "err", werr)
	}
	return nil
}

func adminTokenPath(g *globals) string {
	loc := g.storeLocation()
	if isPostgres(loc) {
		return filepath.Join(filepath.Dir(g.keyFileLocation()), adminTokenFile)
	}
	return filepath.Join(filepath.Dir(loc), adminTokenFile)
}

// writeFileAtomic writes data to path with mode perm through a temporary
// file in the same directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// writeAddrFile writes the address file atomically with a shared lock on it
// that lasts while the returned file stays open (taken before the rename, so
// the file is never visible unlocked while serve runs).
func writeAddrFile(path string, data []byte) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := lockShared(f); err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func cmdServeCheck(g *globals) *cobra.Command {
	var (
		addr, addrFile, caCert string
		wait                   time.Duration
		pid                    int
	)
	c := &cobra.Command{
		Use:   "check [--addr ADDR | --addr-file FILE] [--wait 10s]",
		Short: "Check that a server is ready (store reachable, scheduler running)",
		Long: `Probe /readyz of a running server; exit 0 when it is ready, 1 when not. With
--wait, keep probing until it is ready or the time is up (for scripts and
container health checks).

With --addr-file, the address comes only from that file (written by
'serve --addr-file' once the server listens): while the file does not exist,
nothing is probed, and check fails when --wait runs out. A running serve holds
a lock on the file: a file no process holds (left by a server that has exited)
is not probed either, and once the server that wrote it is seen to exit, check
fails at once instead of waiting out --wait. With --pid, check also fails at
once when that process (the serve being waited for) has exited.`,
		Example: `  nebula-credential serve check
  nebula-credential serve check --addr https://creds.internal:8270 --ca-cert ca.pem
  nebula-credential serve check --addr-file addr.txt --wait 10s
  nebula-credential serve --addr 127.0.0.1:0 --addr-file addr.txt & nebula-credential serve check --addr-file addr.txt --pid $! --wait 30s
  nebula-credential serve --store postgres://nebula@db/creds --key-file /etc/nebula/root.key --lease-ttl 30s
  nebula-credential serve --retry-budget 1h --heal-interval 30s   # ride out hour-long maintenance windows
  nebula-credential serve --concurrency 16 --target-concurrency 4 --probe-timeout 3s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			deadline := time.Now().Add(wait)
			var opts client.Options
			opts.Retries = -1
			if caCert != "" {
				pem, err := os.ReadFile(caCert)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return usagef("--ca-cert %s holds no PEM certificate", caCert)
				}
				opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			if addrFile != "" && cmd.Flags().Changed("addr") {
				return usagef("give --addr or --addr-file, not both")
			}
			var last error
			sawOwner := false
			for {
				if pid > 0 && processGone(pid) {
					return fmt.Errorf("server not ready: process %d (the serve being waited for) has exited: see its output for why", pid)
				}
				target := addr
				if addrFile != "" {
					// Only the file names the server: while it does not
					// exist, nothing is probed (another server may answer
					// on the default address).
					target = ""
					b, err := os.ReadFile(addrFile)
					switch {
					case errors.Is(err, os.ErrNotExist) && sawOwner:
						return fmt.Errorf("server not ready: the serve that wrote %s has exited (the file is gone): see its output for why", addrFile)
					case errors.Is(err, os.ErrNotExist):
						last = fmt.Errorf("address file %s does not exist (yet): start `nebula-credential serve --addr-file %s`, and give check a --wait (e.g. --wait 30s) while it starts", addrFile, addrFile)
					case err != nil:
						last = err
					case strings.TrimSpace(string(b)) == "":
						last = fmt.Errorf("address file %s is empty", addrFile)
					default:
						target = strings.TrimSpace(string(b))
						switch held, known := addrFileHeld(addrFile); {
						case !known || held:
							sawOwner = sawOwner || held
						case sawOwner:
							return fmt.Errorf("server not ready: the serve that wrote %s (%s) has exited: see its output for why", addrFile, target)
						default:
							// Left by a server that is gone: another
							// server may answer on that address now.
							last = fmt.Errorf("address file %s (%s) was left by a server that is no longer running: start `nebula-credential serve --addr-file %s`, and give check a --wait while it starts", addrFile, target, addrFile)
							target = ""
						}
					}
				}
				if target != "" {
					c, err := client.New(target, "", &opts)
					if err != nil {
						return usageError{err}
					}
					pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					last = c.Ready(pctx)
					cancel()
					if last == nil {
						if g.json {
							return g.printJSON(map[string]any{"addr": target, "ready": true})
						}
						g.printf("%s: ready\n", target)
						return nil
					}
				}
				if time.Now().After(deadline) {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
			return fmt.Errorf("server not ready: %w", last)
		},
	}
	c.Flags().StringVar(&addr, "addr", server.DefaultAddr, "server address (host:port or URL)")
	c.Flags().StringVar(&addrFile, "addr-file", "", "read the address from this file (written by serve --addr-file); nothing is probed until it exists")
	c.Flags().StringVar(&caCert, "ca-cert", "", "CA certificate (PEM) to trust for https")
	c.Flags().DurationVar(&wait, "wait", 0, "keep probing this long")
	c.Flags().IntVar(&pid, "pid", 0, "the process ID of the serve being waited for: fail at once when it has exited")
	return c
}

// checkEngineFlags refuses outage tuning that cannot work, naming the flag.
func checkEngineFlags(c rotation.Config, leaseTTL time.Duration) error {
	switch {
	case c.TransientBudget <= 0:
		return usagef("--retry-budget must be positive, e.g. 30m")
	case c.HealInterval <= 0:
		return usagef("--heal-interval must be positive, e.g. 1m")
	case c.Concurrency < 1:
		return usagef("--concurrency must be at least 1")
	case c.TargetConcurrency < 0 || c.TargetConcurrency > c.Concurrency:
		return usagef("--target-concurrency must be between 1 and --concurrency (%d), or 0 for half of it", c.Concurrency)
	case c.ProbeTimeout <= 0:
		return usagef("--probe-timeout must be positive, e.g. 5s")
	case c.ProbeTimeout > leaseTTL/2:
		return usagef("--probe-timeout (%s) must not exceed half of --lease-ttl (%s), which bounds each rotator call", c.ProbeTimeout, leaseTTL/2)
	}
	return nil
}
