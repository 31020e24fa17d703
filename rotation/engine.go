package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nebula-credential/nebula-credential/audit"
	"github.com/nebula-credential/nebula-credential/internal/vault"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/store"
)

// Errors.
var (
	// ErrRetryScheduled: a step failed with a retryable error and the rotation will
	// be continued by the scheduler at Rotation.DueAt.
	ErrRetryScheduled = errors.New("retry scheduled")
	// ErrGraceEnded: rollback to previous is no longer possible without re-applying.
	ErrGraceEnded = errors.New("grace period has ended")
	// ErrWrongStep: the rotation is not at a step that allows the request.
	ErrWrongStep = errors.New("rotation is not at a step that allows this")
	// ErrBadRequest: the request itself is invalid (a negative grace, an
	// unsupported strategy, a version that cannot be kept).
	ErrBadRequest = errors.New("invalid rotation request")
	// ErrTargetUnreachable: the target did not answer, so nothing could be
	// checked or changed there; trying again later may succeed.
	ErrTargetUnreachable = errors.New("target unreachable")
)

// RotationError is the typed error of a failed rotation.
type RotationError struct {
	ID         string // credential ID
	RotationID int64
	Step       string // the step that failed
	RolledBack bool   // the target was reverted to the previous version
	Err        error  // sanitized
}

func (e *RotationError) Error() string {
	s := fmt.Sprintf("rotation %d of %s failed at %s: %v", e.RotationID, e.ID, e.Step, e.Err)
	switch {
	case e.Step == "stage":
		s += " (nothing was changed on the target)"
	case e.RolledBack:
		s += " (rolled back: the previous version is still current)"
	}
	return s
}

func (e *RotationError) Unwrap() error { return e.Err }

// Config configures an Engine. Zero values mean defaults.
type Config struct {
	Store    store.Store
	Vault    *vault.Vault
	Rotators *rotator.Registry
	Clock    func() time.Time
	Logger   *slog.Logger
	// Owner names this process in leases; default host:pid:random.
	Owner string
	// StoreID identifies the store; with the rotation ID it makes idempotency
	// keys sent to providers unique across stores.
	StoreID string
	// LeaseTTL bounds how long a dead process blocks a rotation (default 2m).
	// A lease held by a dead process on this host is taken over at once.
	LeaseTTL time.Duration
	// StepTimeout bounds each rotator call (default LeaseTTL/2).
	StepTimeout time.Duration
	// Concurrency of the scheduler (default 4).
	Concurrency int
	// TargetConcurrency bounds the scheduler's concurrent steps against one
	// target (host:port or URL host), so a hung target holds at most these
	// slots (default Concurrency/2, at least 1).
	TargetConcurrency int
	// TransientBudget is how long transient failures of one step are retried
	// for a credential whose settings leave backoff.budget unset (default
	// DefaultTransientBudget, 30m; never less than the grace period).
	TransientBudget time.Duration
	// HealInterval is how often the scheduler probes the target of a
	// rotation parked in needs_attention for a transient reason (default 1m).
	HealInterval time.Duration
	// ProbeTimeout bounds the first connection of every step attempt
	// (default 5s; see rotator.WithFirstProbe).
	ProbeTimeout time.Duration
	// TickInterval of the scheduler (default 1s).
	TickInterval time.Duration
	// Rand returns a uniform int64 in [0, n); default math/rand/v2.
	Rand func(n int64) int64
	// AfterStep, if set, is called after each journal write (tests use it to
	// crash between steps).
	AfterStep func(credentialID, step string)
	// GraceWarning is how long before the end of grace the grace-warning event
	// fires (default 1m).
	GraceWarning time.Duration
}

// Engine runs rotations. It is safe for concurrent use.
type Engine struct {
	cfg   Config
	st    store.Store
	vault *vault.Vault
	reg   *rotator.Registry
	clock func() time.Time
	log   *slog.Logger

	mu       sync.Mutex
	subs     map[int]func(Event)
	nextSub  int
	inflight map[string]bool // credential IDs this process is driving
	// targetSem holds the scheduler's slots per target (see targetSlot).
	targetSem map[string]chan struct{}
	// prepSlots bounds the rotator Prepares running at once (startPrepare).
	prepSlots chan struct{}
	closed    chan struct{}
	wg        sync.WaitGroup
	running   bool
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Vault == nil || cfg.Rotators == nil {
		return nil, errors.New("rotation: Store, Vault and Rotators are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s:%d:%x", host, os.Getpid(), rand.Uint32())
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Minute
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = cfg.LeaseTTL / 2
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.TargetConcurrency <= 0 {
		cfg.TargetConcurrency = max(1, cfg.Concurrency/2)
	}
	if cfg.TransientBudget <= 0 {
		cfg.TransientBudget = DefaultTransientBudget
	}
	if cfg.HealInterval <= 0 {
		cfg.HealInterval = time.Minute
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = time.Second
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Int64N
	}
	if cfg.GraceWarning <= 0 {
		cfg.GraceWarning = time.Minute
	}
	return &Engine{
		cfg: cfg, st: cfg.Store, vault: cfg.Vault, reg: cfg.Rotators, clock: cfg.Clock, log: cfg.Logger,
		subs: map[int]func(Event){}, inflight: map[string]bool{}, targetSem: map[string]chan struct{}{}, closed: make(chan struct{}),
		prepSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)),
	}, nil
}

// Close stops the scheduler and waits for in-flight steps to finish.
func (e *Engine) Close() {
	e.mu.Lock()
	select {
	case <-e.closed:
	default:
		close(e.closed)
	}
	e.mu.Unlock()
	e.wg.Wait()
	if e.reg != nil {
		e.reg.Close() // idle admin connections; errors closing them change nothing
	}
}

func (e *Engine) now() time.Time { return e.clock().UTC() }

// RotateOptions tune one rotation.
type RotateOptions struct {
	Grace      *time.Duration // overrides the credential's grace period
	Reason     string
	Actor      string
	NoValidate bool
	// Wait keeps retrying in this process through backoff until the rotation
	// commits or fails, instead of leaving retries to the scheduler. A
	// rotation asked for during a grace period waits for it to end and then
	// runs (without Wait it is refused with an *InGraceError).
	Wait bool
	// OnQueued, with Wait, is called when the rotation was queued durably
	// behind a running grace period (see Engine.Rotate).
	OnQueued func(graceEndsAt time.Time)
	// IfDueAt, if set, plans the rotation only while the credential's next
	// due time is still this one, else fails with ErrNotDue (the scheduler).
	IfDueAt *time.Time
}

// Rotate runs a rotation of credential id up to grace (or, with zero grace, to
// retirement) and returns the journal row. It fails with
// store.ErrRotationInProgress when another rotation is open.
//
// With Wait during a grace period the request is queued durably first: the
// credential's next due time becomes the grace end (audited rotate.queued),
// so the scheduler runs the rotation then even if this process dies or is
// interrupted (a *QueuedError says so). This process waits, retires the
// previous version at the grace end and rotates; if the scheduler started
// the rotation first, it follows that one to grace and returns it.
func (e *Engine) Rotate(ctx context.Context, id string, opts RotateOptions) (*store.Rotation, error) {
	var queued *InGraceError
	if opts.Wait {
		var err error
		if queued, err = e.queueAfterGrace(ctx, id, opts); err != nil {
			return nil, err
		}
		if queued != nil && opts.OnQueued != nil {
			opts.OnQueued(queued.GraceEndsAt)
		}
		if err := e.waitGrace(ctx, id); err != nil {
			if queued != nil && ctx.Err() != nil {
				return nil, &QueuedError{InGraceError: *queued, Err: err}
			}
			return nil, err
		}
	}
	r, pre, err := e.planJob(ctx, id, KindRotate, 0, opts, true)
	if queued != nil && errors.Is(err, store.ErrRotationInProgress) {
		// Another process (the scheduler) ran the queued rotation first.
		return e.followQueued(ctx, id, queued)
	}
	if err != nil {
		return nil, err
	}
	return e.driveJob(ctx, r, pre, opts.Wait)
}

// plan creates the journal row under the store's one-open-rotation rule.
func (e *Engine) plan(ctx context.Context, id, kind string, toVersion int, opts RotateOptions) (*store.Rotation, error) {
	r, _, err := e.planJob(ctx, id, kind, toVersion, opts, false)
	return r, err
}

// planJob is plan that also returns the job the run starts from when the
// pending version was staged in the planning transaction (nil otherwise:
// the run loads it). With prepare, a rotator.Preparer's work on the pending
// secret starts beside the commit, for the job's first apply; plan, which
// drops the job, passes false.
func (e *Engine) planJob(ctx context.Context, id, kind string, toVersion int, opts RotateOptions, prepare bool) (_ *store.Rotation, pre *job, _ error) {
	actor := opts.Actor
	if actor == "" {
		actor, _ = audit.ActorOf(ctx)
	}
	var r *store.Rotation
	err := e.st.Update(ctx, func(tx store.Tx) error {
		pre = nil
		c, err := tx.GetCredential(ctx, id)
		if err != nil {
			return err
		}
		if c.DeletedAt != nil {
			return fmt.Errorf("%w: credential is deleted", store.ErrNotFound)
		}
		if err := checkDue(c, opts.IfDueAt); err != nil {
			return err
		}
		rot, err := e.reg.Lookup(c.Type)
		if err != nil {
			return err
		}
		if open, err := tx.OpenRotation(ctx, id); err == nil {
			return inProgress(open)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		labels, err := tx.Labels(ctx, id)
		if err != nil {
			return err
		}
		cur, ok := labels["current"]
		if !ok {
			return fmt.Errorf("%w: no current version", store.ErrNotFound)
		}
		if kind == KindRestore && toVersion == cur {
			return fmt.Errorf("%w: version %d is already current", ErrWrongStep, cur)
		}
		// The current version, read once: the binding check, the strategy
		// and staging all start from it.
		sv, err := tx.GetVersion(ctx, id, cur)
		if err != nil {
			return err
		}
		var fields map[string]any
		if err := json.Unmarshal(sv.Fields, &fields); err != nil {
			return fmt.Errorf("decode fields of version %d: %w", cur, err)
		}
		self := &currentState{typ: c.Type, version: sv, cred: rotator.Credential{ID: id, Type: c.Type, Version: cur, Fields: fields}}
		if _, err := e.recheckState(ctx, tx, self, ""); err != nil {
			return err // the binding rule (binding.go): refused before staging
		}
		s, err := ParseSettings(c.Settings)
		if err != nil {
			return err
		}
		caps := rot.Capabilities()
		if ch, ok := rotator.Unwrap(rot).(rotator.StrategyChooser); ok {
			caps.Strategies = ch.StrategiesFor(rotator.Credential{ID: id, Type: c.Type, Version: cur, Fields: fields})
		}
		strategy, err := pickStrategy(caps, s.Strategy)
		if err != nil {
			return err
		}
		grace := s.GraceOrDefault()
		if opts.Grace != nil {
			grace = *opts.Grace
		}
		if grace < 0 {
			return fmt.Errorf("%w: grace must not be negative", ErrBadRequest)
		}
		if strategy == rotator.InPlace {
			grace = 0 // see inPlaceNote: the old secret stops working at apply
		} else if grace == 0 {
			e.log.Warn("rotation with zero grace: consumers holding the previous version will fail at once", "credential", id)
		}
		now := e.now()
		r = &store.Rotation{
			CredentialID: id, Kind: kind, Step: StepPlanned, Open: true, Strategy: string(strategy),
			FromVersion: cur, ToVersion: toVersion, Actor: actor, Reason: opts.Reason,
			DueAt: now, StartedAt: now, UpdatedAt: now,
			LeaseOwner: e.cfg.Owner, LeaseUntil: now.Add(e.cfg.LeaseTTL), Fence: 1,
		}
		encodeData(r, data{GraceSeconds: grace.Seconds(), Validate: s.ValidateOrDefault() && !opts.NoValidate, AutoRollback: s.AutoRollbackOrDefault()})
		entries := []audit.Entry{{At: now, Actor: actor, Action: kind + ".planned", CredentialID: id, FromVersion: cur, ToVersion: toVersion, Outcome: "ok"}}
		if kind == KindRotate && !caps.Mints {
			// Staging a secret the rotator generates has no effect outside this
			// process: do it in the planning transaction and save a durable
			// commit. If it fails, the row stays at planned and the stage step
			// runs with its full error handling.
			n, st, err := e.stageInPlan(ctx, tx, rot, id, c.Type, sv, strategy, now, prepare)
			if err != nil {
				return err
			}
			if st != nil {
				pre = &job{typ: c.Type, settings: s, rot: rot, from: st.from, to: st.to, prep: st.prep}
				r.Step, r.ToVersion = StepStaged, n
				entries = append(entries, audit.Entry{At: now, Actor: actor, Action: kind + ".staged", CredentialID: id, FromVersion: cur, ToVersion: n, Outcome: "ok"})
			}
		}
		// The lease runs from now, not from before a slow stage call: the
		// row becomes visible to other schedulers only at commit.
		r.LeaseUntil = e.now().Add(e.cfg.LeaseTTL)
		if err := tx.CreateRotation(ctx, r); err != nil {
			if errors.Is(err, store.ErrRotationInProgress) {
				return fmt.Errorf("%w for %s", store.ErrRotationInProgress, id)
			}
			return err
		}
		return audit.Append(ctx, tx, entries...)
	})
	if err != nil {
		e.refused(ctx, id, kind, actor, err)
		return nil, nil, fmt.Errorf("plan %s of %s: %w", kind, id, err)
	}
	e.emit(Event{Kind: EventStarted, CredentialID: id, Version: r.FromVersion, RotationID: r.ID})
	e.hook(id, StepPlanned)
	if r.Step == StepStaged {
		e.hook(id, StepStaged)
	} else {
		pre = nil
	}
	if pre != nil {
		pre.r = r
		pre.d = decodeData(r)
	}
	return r, pre, nil
}

// stageInPlan generates and stores the pending version inside the planning
// transaction (for rotators that do not mint), from sv, the current version
// as read in that transaction. It reports false if staging fails; the stage
// step then runs again with its full error handling. A store error that may
// have ended the transaction (on PostgreSQL every failed statement aborts
// it) is returned instead: the caller must not go on writing in it.
func (e *Engine) stageInPlan(ctx context.Context, tx store.Tx, rot rotator.Rotator, id, typ string, sv *store.Version, strategy rotator.Strategy, now time.Time, prepare bool) (int, *staged, error) {
	// Not found and conflicts are answers, not failed statements.
	fatal := func(err error) error {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			return nil
		}
		return err
	}
	from, err := e.vault.Open(typ, sv)
	if err != nil {
		return 0, nil, nil
	}
	sctx, cancel := e.stepCtx(ctx)
	resp, err := rot.Stage(sctx, rotator.StageRequest{Current: toRotator(from), Strategy: strategy, Resolver: e.resolver(id)})
	cancel()
	if err != nil || len(resp.Secret) == 0 {
		return 0, nil, nil
	}
	n, err := tx.MaxVersion(ctx, id)
	if err != nil {
		return 0, nil, fatal(err)
	}
	n++
	pending, err := e.vault.Seal(from.Next(n, resp.Fields, resp.Secret, resp.ExpiresAt, now))
	if err != nil {
		return 0, nil, nil
	}
	// What load would read back once this transaction commits: the run
	// that follows starts from it instead of reading and opening both
	// versions again. The pending one is opened from its sealed form, so
	// it is exactly what the store holds.
	to, err := e.vault.Open(typ, pending)
	if err != nil {
		return 0, nil, nil
	}
	if err := tx.InsertVersion(ctx, pending); err != nil {
		return 0, nil, fatal(err)
	}
	if err := tx.SetLabel(ctx, id, "pending", n); err != nil {
		return 0, nil, fatal(err)
	}
	st := &staged{from: toRotator(from), to: toRotator(to)}
	if prepare {
		// The rotator's CPU work on the new secret (PostgreSQL: its SCRAM
		// verifier) runs while this transaction's commit waits for the disk.
		st.prep = e.startPrepare(rot, st.to)
	}
	return n, st, nil
}

// staged is the outcome of stageInPlan: both versions, opened, and the
// rotator's Prepare of the pending one (nil: none).
type staged struct {
	from, to rotator.Credential
	prep     *preparation
}

func inProgress(open *store.Rotation) error {
	switch open.Step {
	case StepGrace, StepCommitted:
		if ig := inGrace(open); ig != nil {
			return ig
		}
		until := ""
		if open.GraceEndsAt != nil {
			until = " until " + open.GraceEndsAt.Format(time.RFC3339)
		}
		return fmt.Errorf("%w: version %d is in its grace period%s; wait for it to end, or roll back with `nebula-credential rollback %s`", store.ErrRotationInProgress, open.FromVersion, until, open.CredentialID)
	case StepNeedsAttention:
		return fmt.Errorf("%w: an earlier rotation needs attention: run `nebula-credential doctor %s`", store.ErrRotationInProgress, open.CredentialID)
	case StepPlanned, StepStaged, StepApplied:
		if open.LastError != "" {
			return fmt.Errorf("%w: rotation %d is waiting to retry step %s (%s); `nebula-credential serve` keeps retrying it, or give up with `nebula-credential rotations retry %s --rollback`", store.ErrRotationInProgress, open.ID, open.Step, open.LastError, open.CredentialID)
		}
		fallthrough
	default:
		return fmt.Errorf("%w: rotation %d is at step %s (see `nebula-credential rotations %s`)", store.ErrRotationInProgress, open.ID, open.Step, open.CredentialID)
	}
}

func pickStrategy(c rotator.Capabilities, want rotator.Strategy) (rotator.Strategy, error) {
	if len(c.Strategies) == 0 {
		return "", errors.New("rotator declares no strategy")
	}
	if want == "" {
		return c.Strategies[0], nil
	}
	for _, s := range c.Strategies {
		if s == want {
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: strategy %q is not supported by this credential type (supported: %v)", ErrBadRequest, want, c.Strategies)
}

func (e *Engine) hook(id, step string) {
	if e.cfg.AfterStep != nil {
		e.cfg.AfterStep(id, step)
	}
}

// claim takes the lease of an open rotation for this process. A lease held by a
// dead process on this host is taken over at once.
func (e *Engine) claim(ctx context.Context, r *store.Rotation) (*store.Rotation, error) {
	now := e.now()
	var out *store.Rotation
	err := e.st.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.GetRotation(ctx, r.ID)
		if err != nil {
			return err
		}
		at := now
		if cur.LeaseOwner != e.cfg.Owner && cur.LeaseUntil.After(now) && ownerDead(cur.LeaseOwner) {
			at = cur.LeaseUntil
		}
		out, err = tx.ClaimRotation(ctx, r.ID, e.cfg.Owner, at, now.Add(e.cfg.LeaseTTL))
		return err
	})
	return out, err
}

// ownerDead reports whether a lease owner is a process on this host that no
// longer exists.
func ownerDead(owner string) bool {
	parts := strings.Split(owner, ":")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	if parts[0] != host {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// drive runs r from its recorded step until it reaches grace, finishes, or a
// retry is scheduled (with wait, retries run here after their backoff).
func (e *Engine) drive(ctx context.Context, r *store.Rotation, wait bool) (*store.Rotation, error) {
	return e.driveJob(ctx, r, nil, wait)
}

// driveJob is drive starting from pre (planJob), if not nil.
func (e *Engine) driveJob(ctx context.Context, r *store.Rotation, pre *job, wait bool) (*store.Rotation, error) {
	if !e.acquire(r.CredentialID) {
		if pre == nil {
			return r, fmt.Errorf("%w: already being driven by this process", store.ErrRotationInProgress)
		}
		// r was just planned, so the store holds no other open rotation of
		// this credential: the driver still holding it is finishing one
		// that already ended (a retire, its events). Wait for it rather than
		// leave r planned and undriven.
		if err := e.acquireWait(ctx, r.CredentialID); err != nil {
			return r, err
		}
	}
	defer e.release(r.CredentialID)
	return e.driveHeldJob(ctx, r, pre, wait)
}

// driveHeld is drive for a caller that holds the credential (acquire).
func (e *Engine) driveHeld(ctx context.Context, r *store.Rotation, wait bool) (*store.Rotation, error) {
	return e.driveHeldJob(ctx, r, nil, wait)
}

func (e *Engine) driveHeldJob(ctx context.Context, r *store.Rotation, pre *job, wait bool) (*store.Rotation, error) {
	for {
		out, err := e.runJob(ctx, r, pre)
		pre = nil // a retry starts from the store
		if !errors.Is(err, ErrRetryScheduled) || !wait {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, err
		case <-time.After(out.DueAt.Sub(e.now())):
		}
		if r, err = e.claim(ctx, out); err != nil {
			return out, err
		}
	}
}
