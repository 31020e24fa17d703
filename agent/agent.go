package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/client"
)

// Options are what a Config cannot say. The zero value is fine.
type Options struct {
	// Logger; default discards. It never receives a secret.
	Logger *slog.Logger
	// Token overrides Config.TokenFile and TokenEnv.
	Token string
	// Stdin, Stdout and Stderr of the exec child and of action commands;
	// default the agent's own.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// ForwardSignals forwards INT, TERM, HUP, QUIT, USR1 and USR2 to the exec child.
	ForwardSignals bool
	// Kind is reported to the server: "agent" (default) or "run".
	Kind string
	// OnSync, if set, is called after every pass that left all files current
	// (tests and benchmarks wait on it).
	OnSync func(SyncInfo)
}

// SyncInfo describes one finished pass.
type SyncInfo struct {
	Versions map[string]int // credential ID → version delivered
	Written  []string       // destinations rewritten
	Actions  int            // actions run
	Err      error          // the first action error
	// EventAt is when the first watch event behind this pass arrived (zero
	// for a pass the event stream did not start); RenderedAt when every
	// credential was fetched and every template rendered; WrittenAt when the
	// last file was renamed into place; DoneAt when the actions finished.
	EventAt, RenderedAt, WrittenAt, DoneAt time.Time
}

// ExitError is returned by Run when the exec child exited on its own.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return "the child exited with status " + strconv.Itoa(e.Code) }

// Agent renders templates from credentials and keeps them current.
type Agent struct {
	cfg     *Config
	opts    Options
	log     *slog.Logger
	clients []*client.Client
	cur     int // index of the server in use

	mu     sync.Mutex // guards health and st for the health endpoint
	health health
	st     state

	deps      []map[string]int // per template: credential ID → version last rendered
	delivered []map[string]int // per template: credential ID → version on disk
	envDeps   map[string]int
	env       []string // the exec child's extra environment
	owed      map[int]bool
	actErr    map[string]string // credential ID → last action error
	child     *child
	children  chan childExit
	healthLn  net.Listener
	eventAt   time.Time      // when the first event behind the next pass arrived
	recheckAt time.Time      // a grace a template listed the previous version of ends
	sigs      chan os.Signal // signals to forward to the child (run, ForwardSignals)
	// stopped is set when INT or TERM arrived while the child was being
	// stopped for a restart: no new child starts, and Run exits with it.
	stopped *ExitError
}

type health struct {
	Status     string    `json:"status"` // "ok", "starting", "unreachable", "degraded"
	Server     string    `json:"server"`
	Error      string    `json:"error,omitempty"`
	LastSync   time.Time `json:"last_sync,omitzero"`
	LastEvent  int64     `json:"last_event"`
	ConsumerID string    `json:"consumer_id"`
}

// state is what survives a restart (the state file). No secret.
type state struct {
	ConsumerID string         `json:"consumer_id"`
	LastSeq    int64          `json:"last_seq"`
	Versions   map[string]int `json:"versions"`
	// Pending lists destinations written whose action has not completed.
	Pending []string `json:"pending_actions,omitempty"`
	// Acted identifies, per destination, the file on disk when its action
	// last completed (or when it was last found current). A destination
	// that is another file after a restart was replaced by a pass whose
	// action never ran: the action is owed. So nothing needs writing to the
	// state file between rendering and writing a destination.
	Acted map[string]fileStamp `json:"acted,omitempty"`
}

// fileStamp tells one file from another: every atomic write makes a new
// inode. Nothing in it derives from the content.
type fileStamp struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
}

func stampOf(path string) (fileStamp, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, false
	}
	return fileStamp{Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}, true
}

// New checks the config and builds the clients. It does not connect yet.
func New(cfg *Config, opts Options) (*Agent, error) {
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, owed: map[int]bool{}, actErr: map[string]string{}, children: make(chan childExit, 4)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.opts.Kind == "" {
		a.opts.Kind = "agent"
	}
	if a.opts.Stdout == nil {
		a.opts.Stdout = os.Stdout
	}
	if a.opts.Stderr == nil {
		a.opts.Stderr = os.Stderr
	}
	if a.opts.Stdin == nil {
		a.opts.Stdin = os.Stdin
	}
	token := opts.Token
	if token == "" {
		var err error
		if token, err = cfg.token(); err != nil {
			return nil, err
		}
	}
	var tlsCfg *tls.Config
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, &ConfigError{File: cfg.path, Field: "ca_file", Msg: "cannot read: " + cause(err).Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{File: cfg.path, Field: "ca_file", Msg: "no PEM certificate in " + cfg.CAFile}
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	backoffMax := time.Duration(cfg.RetryMax)
	if backoffMax == 0 {
		backoffMax = 30 * time.Second
	}
	for i, s := range cfg.Servers {
		c, err := client.New(s, token, &client.Options{TLSConfig: tlsCfg, UserAgent: "nebula-credential-agent", Logger: a.log, WatchBackoffMax: backoffMax, Retries: -1})
		if err != nil {
			return nil, &ConfigError{File: cfg.path, Field: fmt.Sprintf("servers[%d]", i), Msg: err.Error()}
		}
		a.clients = append(a.clients, c)
	}
	a.deps = make([]map[string]int, len(cfg.Templates))
	a.delivered = make([]map[string]int, len(cfg.Templates))
	a.health = health{Status: "starting", Server: a.clients[0].Addr()}
	return a, nil
}

// token reads the token from TokenFile or the environment.
func (c *Config) token() (string, error) {
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", &ConfigError{File: c.path, Field: "token_file", Msg: "cannot read the token: " + cause(err).Error()}
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", &ConfigError{File: c.path, Field: "token_file", Msg: c.TokenFile + " is empty"}
		}
		return t, nil
	}
	name := c.TokenEnv
	if name == "" {
		name = "NEBULA_CREDENTIAL_TOKEN"
	}
	t := strings.TrimSpace(os.Getenv(name))
	if t == "" {
		return "", &ConfigError{File: c.path, Field: "token_file", Msg: "no token: set token_file, or export " + name}
	}
	return t, nil
}

func (a *Agent) statePath() string {
	if a.cfg.StateFile != "" {
		return a.cfg.StateFile
	}
	if a.cfg.path == "" || a.cfg.path == "(command line)" {
		return ""
	}
	base := strings.TrimSuffix(filepath.Base(a.cfg.path), filepath.Ext(a.cfg.path))
	return filepath.Join(filepath.Dir(a.cfg.path), base+".state.json")
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9._:@/-]`)

func (a *Agent) loadState() error {
	if p := a.statePath(); p != "" {
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &a.st); err != nil {
				a.log.Warn("state file unreadable; starting afresh", "file", p, "err", err)
				a.st = state{}
			}
		case errors.Is(err, os.ErrNotExist):
		default:
			return fmt.Errorf("state file: %w", err)
		}
	}
	if a.st.ConsumerID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		crand.Read(b[:])
		a.st.ConsumerID = a.opts.Kind + ":" + unsafeID.ReplaceAllString(host, "_") + ":" + hex.EncodeToString(b[:])
	}
	if a.st.Versions == nil {
		a.st.Versions = map[string]int{}
	}
	for _, d := range a.st.Pending {
		for i, t := range a.cfg.Templates {
			if t.Destination == d {
				a.owed[i] = true
			}
		}
	}
	for i, t := range a.cfg.Templates {
		was, known := a.st.Acted[t.Destination]
		if now, ok := stampOf(t.Destination); known && ok && now != was {
			a.log.Info("the destination changed after its last action; the action is owed", "destination", t.Destination)
			a.owed[i] = true
		}
	}
	if a.st.Acted == nil {
		a.st.Acted = map[string]fileStamp{}
	}
	a.health.ConsumerID = a.st.ConsumerID
	a.health.LastEvent = a.st.LastSeq
	return nil
}

func (a *Agent) saveState() {
	p := a.statePath()
	if p == "" {
		return
	}
	a.st.Pending = a.st.Pending[:0]
	for i := range a.cfg.Templates {
		if a.owed[i] {
			a.st.Pending = append(a.st.Pending, a.cfg.Templates[i].Destination)
		}
	}
	slices.Sort(a.st.Pending)
	b, _ := json.MarshalIndent(a.st, "", "  ")
	// not durable: losing it to a power cut costs a re-render, never a
	// wrong file or a missed action (see Acted)
	if _, err := writeFile(p, append(b, '\n'), 0o600, -1, -1, false); err != nil {
		a.log.Error("cannot save the state file", "file", p, "err", err)
	}
}

// unreachable reports errors that another server or a retry may cure.
func unreachable(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.StatusCode == 429 || ce.StatusCode >= 500
	}
	return !errors.Is(err, credential.ErrInvalid) && !errors.Is(err, credential.ErrNotFound) && !errors.Is(err, credential.ErrPermission)
}

// fetch gets the current version of id from the first server that answers.
func (a *Agent) fetch(ctx context.Context, id string) (*credential.Credential, error) {
	return a.fetchLabel(ctx, id, "")
}

// fetchPrevious gets the previous version of id (during grace).
func (a *Agent) fetchPrevious(ctx context.Context, id string) (*credential.Credential, error) {
	return a.fetchLabel(ctx, id, "previous")
}

func (a *Agent) fetchLabel(ctx context.Context, id, label string) (*credential.Credential, error) {
	var last error
	for i := range a.clients {
		k := (a.cur + i) % len(a.clients)
		c, err := a.clients[k].Get(ctx, id, client.GetOptions{Reveal: true, Label: label})
		if err == nil {
			if k != a.cur {
				a.log.Warn("switched server", "from", a.clients[a.cur].Addr(), "to", a.clients[k].Addr())
				a.cur = k
				a.setHealth(func(h *health) { h.Server = a.clients[k].Addr() })
			}
			return c, nil
		}
		if !unreachable(err) {
			return nil, err
		}
		last = err
	}
	return nil, &unreachableError{err: last}
}

type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return "no server reachable: " + e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

func (a *Agent) setHealth(f func(*health)) {
	a.mu.Lock()
	f(&a.health)
	a.mu.Unlock()
}

// HealthAddr is the address the health endpoint listens on ("" if none);
// valid once Run started it.
func (a *Agent) HealthAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.healthLn == nil {
		return ""
	}
	return a.healthLn.Addr().String()
}

// ConsumerID is the ID this agent reports to the server as.
func (a *Agent) ConsumerID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.ConsumerID
}

func (a *Agent) serveHealth(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.HealthAddr)
	if err != nil {
		return &ConfigError{File: a.cfg.path, Field: "health_addr", Msg: err.Error()}
	}
	a.mu.Lock()
	a.healthLn = ln
	a.mu.Unlock()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		h := a.health
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if h.Status != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})}
	go srv.Serve(ln)
	context.AfterFunc(ctx, func() { srv.Close() })
	a.log.Info("health endpoint listening", "addr", ln.Addr().String())
	return nil
}

// watchIdle: a stream that carried nothing, not even the server's
// keep-alive (every 15 s by default), for this long is dead; the agent moves
// to the next address.
var watchIdle = 45 * time.Second

// watch opens the event stream on the server in use, after the last event.
func (a *Agent) watch(ctx context.Context) (<-chan client.Event, context.CancelFunc, error) {
	wctx, cancel := context.WithCancel(ctx)
	var (
		ch  <-chan client.Event
		err error
	)
	for i := range a.clients {
		k := (a.cur + i) % len(a.clients)
		ch, err = a.clients[k].WatchOnce(wctx, "", a.st.LastSeq, watchIdle)
		if err == nil {
			a.cur = k
			a.setHealth(func(h *health) { h.Server = a.clients[k].Addr() })
			a.log.Info("following the watch stream", "server", a.clients[k].Addr(), "after", a.st.LastSeq)
			return ch, cancel, nil
		}
		a.log.Warn("cannot open the watch stream", "server", a.clients[k].Addr(), "err", err)
		if !unreachable(err) {
			break
		}
	}
	cancel()
	return nil, nil, err
}

// Run serves until ctx is done (nil) or, with an exec child, until the child
// exits on its own (*ExitError). Files are never removed, also not when the
// server is unreachable.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.loadState(); err != nil {
		return err
	}
	if a.cfg.HealthAddr != "" {
		if err := a.serveHealth(ctx); err != nil {
			return err
		}
	}
	var sigs chan os.Signal
	if a.cfg.Exec != nil && a.opts.ForwardSignals {
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		a.sigs = sigs
	}
	defer a.stopChild()

	// The watch stream: one connection at a time; when it breaks the next
	// address is tried at once (each address once, then with backoff),
	// resuming after the last event seen. Every reopening is followed by a
	// full pass, so nothing missed in between stays missed.
	var rewatch <-chan time.Time
	events, stopWatch, err := a.watch(ctx)
	if err != nil {
		if !unreachable(err) {
			return fmt.Errorf("watch: %w", err)
		}
		stopWatch = func() {}
		rewatch = time.After(250 * time.Millisecond)
	}
	defer func() { stopWatch() }()
	watchedOn := a.cur
	watchOpened, watchFails := time.Now(), 0

	full := time.Duration(a.cfg.FullCheck)
	if full == 0 {
		full = 5 * time.Minute
	}
	retryMax := time.Duration(a.cfg.RetryMax)
	if retryMax == 0 {
		retryMax = 30 * time.Second
	}
	fullTick := time.NewTicker(full)
	defer fullTick.Stop()
	heartbeat := time.NewTimer(time.Hour)
	defer heartbeat.Stop()
	retry := time.NewTimer(0) // the first full pass
	defer retry.Stop()
	backoff := 250 * time.Millisecond
	var (
		dirty   = map[string]bool{}
		all     = true
		recheck <-chan time.Time
	)
	watchRetry := func() time.Duration {
		// each address once right away, then jittered exponential backoff
		watchFails++
		if watchFails < len(a.clients) {
			return 0
		}
		b := min(250*time.Millisecond<<min(watchFails-len(a.clients), 10), retryMax)
		return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-sigs:
			if a.child != nil {
				a.child.signal(s.(syscall.Signal))
			} else if s == syscall.SIGINT || s == syscall.SIGTERM {
				return &ExitError{Code: 128 + int(s.(syscall.Signal))}
			}
			continue
		case ex := <-a.children:
			if a.child != nil && ex.c == a.child {
				a.log.Info("the child exited", "status", ex.code)
				a.child = nil
				return &ExitError{Code: ex.code}
			}
			continue
		case ev, ok := <-events:
			if !ok {
				events = nil
				stopWatch()
				if ctx.Err() != nil {
					return nil
				}
				if time.Since(watchOpened) > 30*time.Second {
					watchFails = 0 // it served a while: this is a new outage
				}
				from := a.clients[watchedOn].Addr()
				a.cur = (watchedOn + 1) % len(a.clients)
				d := watchRetry()
				a.log.Warn("the watch stream ended; reconnecting", "server", from, "next", a.clients[a.cur].Addr(), "in", d.Round(time.Millisecond), "after", a.st.LastSeq)
				rewatch = time.After(d)
				continue
			}
			watchFails = 0
			a.onEvent(ev, dirty)
			for drained := false; !drained; {
				select {
				case ev, ok := <-events:
					if !ok {
						drained = true
						break
					}
					a.onEvent(ev, dirty)
				default:
					drained = true
				}
			}
			if len(dirty) == 0 {
				a.saveSeqLater()
				continue
			}
		case <-rewatch:
			rewatch = nil
			ch, stop, err := a.watch(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if !unreachable(err) {
					return fmt.Errorf("watch: %w", err)
				}
				d := watchRetry()
				a.log.Warn("server unreachable; keeping every file as it is", "watch_retry_in", d.Round(time.Millisecond), "err", err)
				a.setHealth(func(h *health) { h.Status, h.Error = "unreachable", "watch: "+err.Error() })
				rewatch = time.After(d)
				continue
			}
			stopWatch, events, watchedOn, watchOpened = stop, ch, a.cur, time.Now()
			all = true
		case <-fullTick.C:
			all = true
		case <-recheck:
			// a grace ended: drop the previous version's lines
			recheck, all = nil, true
		case <-retry.C:
		case <-heartbeat.C:
			a.report(ctx, heartbeat)
			continue
		}
		err := a.sync(ctx, all, dirty)
		if a.stopped != nil {
			return a.stopped
		}
		if err != nil {
			var ue *unreachableError
			if errors.As(err, &ue) {
				d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
				a.log.Warn("server unreachable; keeping every file as it is", "retry_in", d.Round(time.Millisecond), "err", ue.err)
				a.setHealth(func(h *health) { h.Status, h.Error = "unreachable", ue.Error() })
				retry.Reset(d)
				backoff = min(2*backoff, retryMax)
				continue
			}
			if a.cfg.Exec != nil && a.child == nil {
				// the child cannot start without its credentials
				return err
			}
			a.log.Error("render failed; the files keep their content", "err", err)
			a.setHealth(func(h *health) { h.Status, h.Error = "degraded", err.Error() })
		} else {
			a.setHealth(func(h *health) { h.Status, h.Error, h.LastSync = "ok", "", time.Now() })
		}
		backoff = 250 * time.Millisecond
		all, dirty, a.eventAt = false, map[string]bool{}, time.Time{}
		if a.cur != watchedOn {
			// a failover happened: follow the stream on the server that answers
			stopWatch()
			rewatch = time.After(0)
			events = nil
		}
		if !a.recheckAt.IsZero() {
			recheck = time.After(time.Until(a.recheckAt) + 100*time.Millisecond)
			a.recheckAt = time.Time{}
		}
		a.report(ctx, heartbeat)
	}
}

// onEvent marks the credentials an event touches.
func (a *Agent) onEvent(ev client.Event, dirty map[string]bool) {
	if ev.Seq > a.st.LastSeq {
		a.st.LastSeq = ev.Seq
	}
	a.setHealth(func(h *health) { h.LastEvent = ev.Seq })
	if !changesContent(ev) {
		return
	}
	used := false
	for _, d := range a.deps {
		if _, ok := d[ev.CredentialID]; ok {
			used = true
		}
	}
	if _, ok := a.envDeps[ev.CredentialID]; ok {
		used = true
	}
	if used {
		a.log.Info("change", "id", ev.CredentialID, "version", ev.Version, "kind", ev.Kind, "seq", ev.Seq)
		dirty[ev.CredentialID] = true
		if a.eventAt.IsZero() {
			a.eventAt = time.Now()
		}
	}
}

// changesContent reports whether an event can change what a template
// renders: templates see current versions only, so a retirement, a failed or
// started rotation or a grace warning changes nothing and costs no fetch.
// Kinds it does not know count as changes.
func changesContent(ev client.Event) bool {
	switch ev.Kind {
	case "retired", "rotation_failed", "rotation_started", "grace_warning", "needs_attention":
		return false
	}
	return true
}

func (a *Agent) saveSeqLater() { a.saveState() }

// sync renders the templates that use a dirty credential (all of them with
// all), writes those whose content changed, then runs each action once.
func (a *Agent) sync(ctx context.Context, all bool, dirty map[string]bool) error {
	r := newRenderer(ctx, a.fetch)
	r.fetchPrev = a.fetchPrevious
	defer func() {
		if !r.graceEnds.IsZero() && (a.recheckAt.IsZero() || r.graceEnds.Before(a.recheckAt)) {
			a.recheckAt = r.graceEnds
		}
	}()
	type out struct {
		i    int
		data []byte
		used map[string]int
	}
	var (
		outs     []out
		firstErr error
	)
	for i, t := range a.cfg.Templates {
		if !all && !a.owed[i] && !touches(a.deps[i], dirty) && a.deps[i] != nil {
			continue
		}
		r.used = map[string]int{}
		data, err := r.render(t.name, t.text)
		if err != nil {
			var ue *unreachableError
			if errors.As(err, &ue) {
				return ue
			}
			a.log.Error("template failed; its file keeps its content", "template", t.name, "destination", t.Destination, "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", t.Destination, err)
			}
			if a.deps[i] == nil {
				a.deps[i] = r.used
			}
			continue
		}
		if len(data) == 0 {
			err := fmt.Errorf("%s: the template rendered nothing; the file keeps its content", t.Destination)
			a.log.Error("template rendered nothing", "destination", t.Destination)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		outs = append(outs, out{i: i, data: data, used: r.used})
	}
	// the exec child's environment
	var env []string
	envUsed := map[string]int{}
	if len(a.cfg.Env) > 0 && (all || touches(a.envDeps, dirty) || a.envDeps == nil) {
		r.used = envUsed
		for _, e := range a.cfg.Env {
			v, err := r.secretOrField(e.ID, e.Field)
			if err != nil {
				var ue *unreachableError
				if errors.As(err, &ue) {
					return err
				}
				return fmt.Errorf("env %s: %w", e.Name, r.scrub(err))
			}
			env = append(env, e.Name+"="+v)
		}
	} else {
		env = a.env
		envUsed = a.envDeps
	}

	renderedAt := time.Now()
	// pending: everything that changes is known before anything is written
	for _, o := range outs {
		t := a.cfg.Templates[o.i]
		if !same(t.Destination, o.data, os.FileMode(t.Mode), t.uid, t.gid) {
			a.owed[o.i] = true
		}
	}
	envChanged := !slices.Equal(env, a.env)
	var written []string
	for _, o := range outs {
		t := a.cfg.Templates[o.i]
		w, err := WriteFile(t.Destination, o.data, os.FileMode(t.Mode), t.uid, t.gid)
		if err != nil {
			a.log.Error("cannot write", "destination", t.Destination, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			delete(a.owed, o.i)
			continue
		}
		if w {
			written = append(written, t.Destination)
			a.log.Info("wrote", "destination", t.Destination, "versions", fmtVersions(o.used))
		}
		a.deps[o.i] = o.used
		a.delivered[o.i] = o.used
	}
	a.env, a.envDeps = env, envUsed
	writtenAt := time.Now()

	// actions, each once
	n, actErr := a.runActions(ctx, envChanged)
	doneAt := time.Now()
	// a credential counts as delivered at the oldest version any of its
	// destinations holds
	vs := map[string]int{}
	for _, d := range append(slices.Clone(a.delivered), a.envDeps) {
		for id, v := range d {
			if old, ok := vs[id]; !ok || v < old {
				vs[id] = v
			}
		}
	}
	for id, v := range vs {
		a.st.Versions[id] = v
	}
	for i, t := range a.cfg.Templates {
		if a.delivered[i] != nil && !a.owed[i] {
			if fs, ok := stampOf(t.Destination); ok {
				a.st.Acted[t.Destination] = fs
			}
		}
	}
	a.saveState()
	if firstErr == nil {
		a.setHealth(func(h *health) { h.Status, h.Error, h.LastSync = "ok", "", time.Now() })
	}
	if a.opts.OnSync != nil && firstErr == nil {
		vs := map[string]int{}
		for id, v := range a.st.Versions {
			vs[id] = v
		}
		a.opts.OnSync(SyncInfo{Versions: vs, Written: written, Actions: n, Err: actErr, EventAt: a.eventAt, RenderedAt: renderedAt, WrittenAt: writtenAt, DoneAt: doneAt})
	}
	return firstErr
}

func touches(d map[string]int, dirty map[string]bool) bool {
	for id := range dirty {
		if _, ok := d[id]; ok {
			return true
		}
	}
	return false
}

func fmtVersions(m map[string]int) string {
	ks := keys(m)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = k + "=" + strconv.Itoa(m[k])
	}
	return strings.Join(parts, ",")
}

func (r *renderer) secretOrField(id, name string) (string, error) {
	c, err := r.get(id)
	if err != nil {
		return "", err
	}
	if _, ok := c.Secret[name]; ok {
		return r.secret(id, name)
	}
	return r.field(id, name)
}

// report sends the consumer report (registration and heartbeat).
func (a *Agent) report(ctx context.Context, heartbeat *time.Timer) {
	rep := credential.ConsumerReport{ID: a.st.ConsumerID, Name: a.cfg.Name, Kind: a.opts.Kind}
	rep.Host, _ = os.Hostname()
	if rep.Name == "" {
		rep.Name = rep.Host
	}
	for _, id := range keys(a.st.Versions) {
		e := a.actErr[id]
		rep.Credentials = append(rep.Credentials, credential.ConsumerDelivery{ID: id, Version: a.st.Versions[id], ActionOK: e == "", ActionError: e})
	}
	next := 30 * time.Second
	var last error
	for i := range a.clients {
		k := (a.cur + i) % len(a.clients)
		ack, err := a.clients[k].ReportConsumer(ctx, rep)
		if err == nil {
			if ack.HeartbeatSeconds > 0 {
				next = time.Duration(ack.HeartbeatSeconds * float64(time.Second))
			}
			last = nil
			break
		}
		last = err
		if !unreachable(err) {
			break
		}
	}
	if last != nil && ctx.Err() == nil {
		a.log.Warn("consumer report failed", "err", last)
		next = min(next, 5*time.Second)
	}
	heartbeat.Reset(next)
}

// runActions runs the owed actions, each distinct action once, and the exec
// child's on_change when its env or an action-less template changed.
func (a *Agent) runActions(ctx context.Context, envChanged bool) (int, error) {
	type job struct {
		act   *Action
		tmpls []int
	}
	var (
		jobs      []*job
		byKey     = map[string]*job{}
		childKick = envChanged && a.child != nil
	)
	for i := range a.cfg.Templates {
		if !a.owed[i] {
			continue
		}
		act := &a.cfg.Templates[i].Action
		if act.Signal == "" && len(act.Command) == 0 && !act.Restart {
			if a.cfg.Exec != nil {
				childKick = true
			}
			delete(a.owed, i)
			continue
		}
		k := act.key()
		if j, ok := byKey[k]; ok {
			j.tmpls = append(j.tmpls, i)
			continue
		}
		j := &job{act: act, tmpls: []int{i}}
		byKey[k] = j
		jobs = append(jobs, j)
	}
	var first error
	n := 0
	for _, j := range jobs {
		ids := map[string]int{}
		var dests []string
		for _, i := range j.tmpls {
			for id, v := range a.deps[i] {
				ids[id] = v
			}
			dests = append(dests, a.cfg.Templates[i].Destination)
		}
		err := a.do(ctx, j.act, ids, dests)
		n++
		msg := ""
		if err != nil {
			msg = err.Error()
			a.log.Error("action failed", "action", j.act.describe(), "destinations", strings.Join(dests, ","), "err", err)
			if first == nil {
				first = err
			}
		} else {
			a.log.Info("action done", "action", j.act.describe(), "destinations", strings.Join(dests, ","))
		}
		for id := range ids {
			a.actErr[id] = msg
		}
		for _, i := range j.tmpls {
			delete(a.owed, i)
		}
	}
	if a.cfg.Exec != nil && a.child == nil && ctx.Err() == nil && a.stopped == nil {
		if err := a.startChild(); err != nil {
			return n, err
		}
	} else if childKick && a.cfg.Exec.OnChange != "none" {
		n++
		var err error
		if a.cfg.Exec.OnChange == "signal" {
			err = a.child.signal(a.cfg.Exec.sig)
		} else {
			err = a.restartChild()
		}
		msg := ""
		if err != nil {
			msg = err.Error()
			if first == nil {
				first = err
			}
		}
		for id := range a.envDeps {
			a.actErr[id] = msg
		}
	}
	return n, first
}

func (act *Action) key() string {
	b, _ := json.Marshal([]any{act.Signal, act.PID, act.PIDFile, act.Command, act.Restart})
	return string(b)
}

func (act *Action) describe() string {
	switch {
	case act.Signal != "" && act.PIDFile != "":
		return "signal " + act.Signal + " to the process in " + act.PIDFile
	case act.Signal != "" && act.PID != 0:
		return "signal " + act.Signal + " to pid " + strconv.Itoa(act.PID)
	case act.Signal != "":
		return "signal " + act.Signal + " to the child"
	case act.Restart:
		return "restart the child"
	default:
		return "command " + filepath.Base(act.Command[0])
	}
}

// do runs one action.
func (a *Agent) do(ctx context.Context, act *Action, ids map[string]int, dests []string) error {
	switch {
	case act.Signal != "" && act.PIDFile != "":
		b, err := os.ReadFile(act.PIDFile)
		if err != nil {
			return fmt.Errorf("pid file: %w", cause(err))
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return fmt.Errorf("pid file %s holds no process ID", act.PIDFile)
		}
		return signalPID(pid, act.sig)
	case act.Signal != "" && act.PID != 0:
		return signalPID(act.PID, act.sig)
	case act.Signal != "":
		if a.child == nil {
			return errors.New("no child to signal")
		}
		return a.child.signal(act.sig)
	case act.Restart:
		if a.child == nil {
			return nil // it starts with the current files
		}
		return a.restartChild()
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(act.Timeout))
	defer cancel()
	cmd := exec.CommandContext(cctx, act.Command[0], act.Command[1:]...)
	cmd.Env = append(os.Environ(), actionEnv(ids, dests)...)
	cmd.Stdout, cmd.Stderr = a.opts.Stderr, a.opts.Stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case cctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("command %s timed out after %s", filepath.Base(act.Command[0]), time.Duration(act.Timeout))
	case errors.As(err, &ee):
		return fmt.Errorf("command %s exited with status %d", filepath.Base(act.Command[0]), ee.ExitCode())
	default:
		return fmt.Errorf("command %s: %w", filepath.Base(act.Command[0]), cause(err))
	}
}

// actionEnv: the IDs and versions delivered, never a secret.
func actionEnv(ids map[string]int, dests []string) []string {
	ks := keys(ids)
	env := []string{
		"NEBULA_CREDENTIAL_IDS=" + strings.Join(ks, ","),
		"NEBULA_CREDENTIAL_VERSIONS=" + fmtVersions(ids),
		"NEBULA_CREDENTIAL_DESTINATIONS=" + strings.Join(dests, ","),
	}
	if len(ks) > 0 {
		env = append(env, "NEBULA_CREDENTIAL_ID="+ks[0], "NEBULA_CREDENTIAL_VERSION="+strconv.Itoa(ids[ks[0]]))
	}
	return env
}

func signalPID(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}
