// Package bluegreen moves traffic from a database handle on the old
// credential (blue) to one on the new credential (green) in steps, and moves
// it all back when green fails.
//
// A Switch routes each acquisition to blue or green: the share of green goes
// through Steps (default 10, 25, 50, 75, 100 %), each held for a monitoring
// Window (default 30 s). Green's error rate in the window (failed / all green
// queries) is watched: above Threshold (default 5 %) everything is routed back
// to blue at once and OnRollback is called (RollbackManager wires it to
// Manager.Rollback, which restores the previous version while the rotation's
// grace period lasts). When the last step's window passes, OnPromote is called.
//
//	sw, _ := bluegreen.New(bluegreen.Config{Blue: oldDB, Green: newDB,
//		OnRollback: bluegreen.RollbackManager(m, "prod/db/orders")})
//	go sw.Run(ctx)
//	err := sw.Do(ctx, func(db *sql.DB) error { _, err := db.ExecContext(ctx, q); return err })
//
// The whole ramp (steps × window, 2.5 minutes by default) must fit in the
// credential's grace period (5 minutes by default), or a rollback can no
// longer move current back.
package bluegreen

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
)

// Defaults.
var DefaultSteps = []int{10, 25, 50, 75, 100}

const (
	DefaultWindow     = 30 * time.Second
	DefaultThreshold  = 0.05
	DefaultMinQueries = 20
)

// ErrRolledBack is returned by Run when green failed and traffic went back to blue.
var ErrRolledBack = errors.New("bluegreen: green failed: traffic is back on blue")

// Side is where an acquisition was routed.
type Side int

// The sides.
const (
	Blue  Side = iota // the old credential
	Green             // the new credential
)

func (s Side) String() string {
	if s == Green {
		return "green"
	}
	return "blue"
}

// Phase is where the switch stands.
type Phase string

// The phases.
const (
	Waiting    Phase = "waiting"     // Run not started: everything on blue
	Shifting   Phase = "shifting"    // moving traffic to green step by step
	Promoted   Phase = "promoted"    // everything on green
	RolledBack Phase = "rolled_back" // everything back on blue
)

// Config configures New. The zero value of every optional field means its default.
type Config struct {
	// Blue (old credential) and Green (new credential). Required.
	Blue, Green *sql.DB
	// Steps are the shares of green in percent, increasing, ending at 100.
	// Default 10, 25, 50, 75, 100.
	Steps []int
	// Window is how long each step is watched. Default 30 s.
	Window time.Duration
	// Threshold is the highest tolerated error rate of green in a window
	// (0.05 = 5 %, the default). Use a tiny positive value for "no errors".
	Threshold float64
	// MinQueries is how many green queries a window needs before its error
	// rate counts; a window with fewer is extended. Default 20.
	MinQueries int
	// IsFailure tells which errors count against green. Default: any error
	// but sql.ErrNoRows and context.Canceled.
	IsFailure func(error) bool
	// OnRollback is called once, from Run, when green fails (nil: nothing).
	OnRollback func(ctx context.Context, r Report) error
	// OnPromote is called once, from Run, when the last step passed.
	OnPromote func(ctx context.Context, r Report) error
	// Logger; default discards.
	Logger *slog.Logger
}

// Validate reports a Config that cannot be used.
func (c Config) Validate() error {
	if c.Blue == nil || c.Green == nil {
		return errors.New("bluegreen: Config.Blue and Config.Green are required")
	}
	prev := 0
	for i, p := range c.Steps {
		if p <= prev || p > 100 {
			return fmt.Errorf("bluegreen: Steps must increase within 1..100 (step %d is %d)", i, p)
		}
		prev = p
	}
	if len(c.Steps) > 0 && prev != 100 {
		return errors.New("bluegreen: the last step must be 100")
	}
	if c.Window < 0 || c.Threshold < 0 || c.Threshold >= 1 || c.MinQueries < 0 {
		return errors.New("bluegreen: Window, Threshold (below 1) and MinQueries must not be negative")
	}
	return nil
}

// Counts are queries and failures.
type Counts struct {
	Queries int64
	Errors  int64
}

// Rate is Errors / Queries (0 without queries).
func (c Counts) Rate() float64 {
	if c.Queries == 0 {
		return 0
	}
	return float64(c.Errors) / float64(c.Queries)
}

// Report says why the switch rolled back or promoted.
type Report struct {
	Phase   Phase
	Step    int // index into Steps
	Percent int // green's share when it was decided
	Window  Counts
	Reason  string
}

// Stats is a snapshot of a Switch.
type Stats struct {
	Phase         Phase
	Step          int
	Percent       int
	Blue, Green   Counts // since New
	Window        Counts // green in the current window
	WindowStarted time.Time
	// CallbackErr is the error of OnRollback or OnPromote, if any.
	CallbackErr error
}

// Switch routes acquisitions between blue and green. It is safe for
// concurrent use.
type Switch struct {
	cfg   Config
	steps []int

	percent atomic.Int32 // green's current share
	n       atomic.Uint64

	mu        sync.Mutex
	phase     Phase
	step      int
	blue      Counts
	green     Counts
	window    Counts
	winStart  time.Time
	report    Report
	cbErr     error
	trip      chan struct{} // closed when green fails
	tripped   bool
	done      chan struct{}
	startOnce sync.Once
}

// New returns a Switch with everything on blue; Run starts the ramp.
func New(cfg Config) (*Switch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Steps == nil {
		cfg.Steps = DefaultSteps
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.MinQueries == 0 {
		cfg.MinQueries = DefaultMinQueries
	}
	if cfg.IsFailure == nil {
		cfg.IsFailure = DefaultIsFailure
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Switch{cfg: cfg, steps: append([]int(nil), cfg.Steps...), phase: Waiting,
		trip: make(chan struct{}), done: make(chan struct{})}, nil
}

// DefaultIsFailure counts every error but sql.ErrNoRows and context.Canceled.
func DefaultIsFailure(err error) bool {
	return err != nil && !errors.Is(err, sql.ErrNoRows) && !errors.Is(err, context.Canceled)
}

// Pick routes one acquisition: green gets exactly its share of every hundred
// picks. Call done with the outcome of the work done on db.
func (s *Switch) Pick() (db *sql.DB, side Side, done func(err error)) {
	p := uint64(s.percent.Load())
	n := s.n.Add(1)
	if p > 0 && (n*p)/100 != ((n-1)*p)/100 {
		return s.cfg.Green, Green, func(err error) { s.record(Green, err) }
	}
	return s.cfg.Blue, Blue, func(err error) { s.record(Blue, err) }
}

// Do runs fn on the side Pick chooses and records its outcome.
func (s *Switch) Do(ctx context.Context, fn func(db *sql.DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db, _, done := s.Pick()
	err := fn(db)
	done(err)
	return err
}

// Conn takes a connection from the side Pick chooses. Call done with the
// outcome, then close the connection.
func (s *Switch) Conn(ctx context.Context) (c *sql.Conn, side Side, done func(err error), err error) {
	db, side, done := s.Pick()
	c, err = db.Conn(ctx)
	if err != nil {
		done(err)
		return nil, side, nil, err
	}
	return c, side, done, nil
}

func (s *Switch) record(side Side, err error) {
	failed := s.cfg.IsFailure(err)
	if err != nil && !failed && errors.Is(err, context.Canceled) {
		return // the caller gave up: not a query
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.blue
	if side == Green {
		c = &s.green
	}
	c.Queries++
	if failed {
		c.Errors++
	}
	if side != Green || s.phase != Shifting {
		return
	}
	s.window.Queries++
	if failed {
		s.window.Errors++
	}
	if s.window.Queries >= int64(s.cfg.MinQueries) && s.window.Rate() > s.cfg.Threshold {
		s.tripLocked(fmt.Sprintf("green error rate %.1f%% (%d of %d queries) above %.1f%% at %d%%",
			100*s.window.Rate(), s.window.Errors, s.window.Queries, 100*s.cfg.Threshold, s.steps[s.step]))
	}
}

// tripLocked routes everything to blue and wakes Run.
func (s *Switch) tripLocked(reason string) {
	if s.tripped {
		return
	}
	s.tripped = true
	s.percent.Store(0)
	s.report = Report{Phase: RolledBack, Step: s.step, Percent: s.steps[s.step], Window: s.window, Reason: reason}
	s.phase = RolledBack
	close(s.trip)
}

// Run drives the ramp: it returns nil once green is promoted, ErrRolledBack
// after a rollback (OnRollback has run; its error is in Stats), or ctx's error.
// Run may be called once.
func (s *Switch) Run(ctx context.Context) error {
	started := false
	s.startOnce.Do(func() { started = true })
	if !started {
		return errors.New("bluegreen: Run called twice")
	}
	s.mu.Lock()
	s.phase, s.step, s.window, s.winStart = Shifting, 0, Counts{}, time.Now()
	s.percent.Store(int32(s.steps[0]))
	s.mu.Unlock()
	s.cfg.Logger.Info("blue-green: shifting", "percent", s.steps[0])
	timer := time.NewTimer(s.cfg.Window)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.trip:
			return s.rollback(ctx)
		case <-timer.C:
		}
		s.mu.Lock()
		switch {
		case s.tripped:
			s.mu.Unlock()
			return s.rollback(ctx)
		case s.window.Queries < int64(s.cfg.MinQueries):
			s.mu.Unlock() // too little traffic to judge: extend the window
			timer.Reset(s.cfg.Window)
			continue
		case s.window.Rate() > s.cfg.Threshold:
			s.tripLocked(fmt.Sprintf("green error rate %.1f%% (%d of %d queries) above %.1f%% at %d%%",
				100*s.window.Rate(), s.window.Errors, s.window.Queries, 100*s.cfg.Threshold, s.steps[s.step]))
			s.mu.Unlock()
			return s.rollback(ctx)
		case s.step == len(s.steps)-1:
			s.phase = Promoted
			r := Report{Phase: Promoted, Step: s.step, Percent: 100, Window: s.window, Reason: "every step passed"}
			s.mu.Unlock()
			s.cfg.Logger.Info("blue-green: promoted green")
			if s.cfg.OnPromote != nil {
				if err := s.cfg.OnPromote(ctx, r); err != nil {
					s.setCallbackErr(err)
				}
			}
			close(s.done)
			return nil
		default:
			s.step++
			s.window, s.winStart = Counts{}, time.Now()
			p := s.steps[s.step]
			s.percent.Store(int32(p))
			s.mu.Unlock()
			s.cfg.Logger.Info("blue-green: shifting", "percent", p)
			timer.Reset(s.cfg.Window)
		}
	}
}

func (s *Switch) rollback(ctx context.Context) error {
	s.mu.Lock()
	r := s.report
	s.mu.Unlock()
	s.cfg.Logger.Warn("blue-green: rolling back", "reason", r.Reason)
	if s.cfg.OnRollback != nil {
		if err := s.cfg.OnRollback(ctx, r); err != nil {
			s.setCallbackErr(err)
			s.cfg.Logger.Error("blue-green: rollback callback", "err", err)
		}
	}
	close(s.done)
	return ErrRolledBack
}

func (s *Switch) setCallbackErr(err error) {
	s.mu.Lock()
	s.cbErr = err
	s.mu.Unlock()
}

// Done is closed when the switch promoted green or rolled back (after the
// callback returned).
func (s *Switch) Done() <-chan struct{} { return s.done }

// Stats returns a snapshot.
func (s *Switch) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Phase: s.phase, Step: s.step, Percent: int(s.percent.Load()), Blue: s.blue, Green: s.green,
		Window: s.window, WindowStarted: s.winStart, CallbackErr: s.cbErr}
}

// Report returns the decision that ended the ramp (zero while shifting).
func (s *Switch) Report() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report
}

// RollbackManager returns an OnRollback that rolls credential id back through
// an in-process Manager (to the previous version, which must still be in
// grace).
func RollbackManager(m *credential.Manager, id string) func(ctx context.Context, r Report) error {
	return func(ctx context.Context, r Report) error {
		_, err := m.Rollback(ctx, id, credential.RollbackOptions{Actor: "bluegreen", Reason: r.Reason})
		return err
	}
}
