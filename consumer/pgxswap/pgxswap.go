// Package pgxswap is a pgxpool.Pool that survives credential rotation.
//
// New connections always log in with the current version of the credential
// (read from a consumer.Source in BeforeConnect). Each connection remembers
// the version it logged in with. When current moves, idle connections on an
// older version are closed at once, busy ones when they are released, and any
// still open after the drain timeout (default 5 minutes) are force-closed.
// When an old version has no connection left, the pool reports it unused to
// the Source (if it implements consumer.UnusedReporter) and calls OnDrained.
//
// When the server refuses a new connection for the credential (SQLSTATE 28P01,
// a wrong password, or 28000, a role that may no longer log in: the pool held
// a version that moved on before it heard of the change), the call refetches
// the current version past the Source's cache (consumer.Refresher) and, if it
// is newer than the refused one, logs in once more with it. RefetchStats
// counts refusals, retries and recoveries. Connections come from the
// pool's own methods (Acquire, Exec, Query, QueryRow, SendBatch, Begin,
// BeginTx, CopyFrom, Ping, AcquireFunc); calling the embedded
// *pgxpool.Pool's methods directly skips the retry.
//
//	src := consumer.FromManager(m)
//	p, err := pgxswap.New(ctx, pgxswap.Config{Source: src, ID: "prod/db/orders"})
//	defer p.Close()
//	p.QueryRow(ctx, "SELECT 1")
//	p.Stats() // open connections per credential version
//
// The credential supplies username and password (fields "username", secret
// "password"); host, port, database and sslmode come from Config.Pool or,
// without one, from the credential's fields.
package pgxswap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/drain"
	"github.com/nebula-credential/nebula-credential/consumer/internal/follow"
)

// DefaultDrainTimeout is how long connections on an old version may stay open.
const DefaultDrainTimeout = 5 * time.Minute

// Config configures New. The zero value of every optional field means its default.
type Config struct {
	// Source and ID name the credential. Required.
	Source consumer.Source
	ID     string
	// Pool is the pool configuration, from pgxpool.ParseConfig. Its user and
	// password are replaced from the credential on every connect; its
	// BeforeConnect runs first, and its other hooks run after this package's.
	// Nil builds one from the credential's fields host, port (default 5432),
	// database (default postgres) and sslmode (default disable).
	Pool *pgxpool.Config
	// DrainTimeout bounds how long a connection on an old version stays open
	// (default 5 minutes). Keep it inside the credential's grace period.
	DrainTimeout time.Duration
	// OnDrained is called when an old version has no connection left.
	OnDrained func(consumer.Drain)
	// Logger; default discards.
	Logger *slog.Logger
}

// Validate reports a Config that cannot be used.
func (c Config) Validate() error {
	if c.Source == nil {
		return errors.New("pgxswap: Config.Source is required")
	}
	if c.ID == "" {
		return errors.New("pgxswap: Config.ID is required")
	}
	if c.DrainTimeout < 0 {
		return errors.New("pgxswap: negative DrainTimeout")
	}
	return nil
}

// Pool is a *pgxpool.Pool whose connections follow the credential's current
// version. Use it as a pgxpool.Pool; Close it (not the embedded pool).
type Pool struct {
	*pgxpool.Pool

	src    consumer.Source
	id     string
	tr     *drain.Tracker[*pgx.Conn]
	log    *slog.Logger
	onDone func(consumer.Drain)
	user   pgxpool.Config // the caller's hooks

	refetch consumer.RefetchCounter

	cancel context.CancelFunc
	wg     sync.WaitGroup // follow and unused reports
	rmu    sync.Mutex
	closed bool
	once   sync.Once
}

// New opens a pool on the current version of cfg.ID. It reads the credential
// once (so a missing credential fails here) but opens no connection.
func New(ctx context.Context, cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cur, err := cfg.Source.Current(ctx, cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("pgxswap: credential %s: %w", cfg.ID, err)
	}
	pc := cfg.Pool
	if pc == nil {
		if pc, err = poolConfigFrom(cur); err != nil {
			return nil, err
		}
	} else {
		pc = pc.Copy()
	}
	timeout := cfg.DrainTimeout
	if timeout == 0 {
		timeout = DefaultDrainTimeout
	}
	p := &Pool{src: cfg.Source, id: cfg.ID, log: cfg.Logger, onDone: cfg.OnDrained, user: *pc}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.tr = drain.New[*pgx.Conn](drain.Config{Timeout: timeout, Drained: p.drained}, cur.Version)
	pc.BeforeConnect = p.beforeConnect
	pc.AfterConnect = p.afterConnect
	pc.PrepareConn = p.prepareConn
	pc.BeforeAcquire = nil // folded into prepareConn
	pc.AfterRelease = p.afterRelease
	pc.BeforeClose = p.beforeClose
	if p.Pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, fmt.Errorf("pgxswap: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	changes, err := p.src.Watch(wctx, p.id)
	if err != nil {
		cancel()
		p.Pool.Close()
		return nil, fmt.Errorf("pgxswap: watch %s: %w", p.id, err)
	}
	p.wg.Go(func() { follow.Run(wctx, p.src, p.id, changes, p.log, p.apply) })
	if tr, ok := p.src.(consumer.TimingReporter); ok {
		p.wg.Go(func() { // the server learns the drain timeout before the first rotation
			rctx, cancel := context.WithTimeout(wctx, 30*time.Second)
			defer cancel()
			if err := tr.ReportTiming(rctx, p.id, cur.Version, timeout); err != nil && rctx.Err() == nil {
				p.log.Warn("reporting drain timeout", "credential", p.id, "err", err)
			}
		})
	}
	return p, nil
}

// poolConfigFrom builds a pool configuration from a credential's fields.
func poolConfigFrom(c consumer.Credential) (*pgxpool.Config, error) {
	q := url.Values{}
	host := c.Field("host")
	if host == "" {
		host = "127.0.0.1"
	}
	port := c.Field("port")
	if port == "" {
		port = "5432"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("pgxswap: credential %s: port %q is not a number", c.ID, port)
	}
	db := c.Field("database")
	if db == "" {
		db = "postgres"
	}
	ssl := c.Field("sslmode")
	if ssl == "" {
		ssl = "disable"
	}
	q.Set("host", host)
	q.Set("port", port)
	q.Set("dbname", db)
	q.Set("sslmode", ssl)
	pc, err := pgxpool.ParseConfig("postgres:///?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("pgxswap: credential %s: connection settings: %w", c.ID, err)
	}
	return pc, nil
}

// apply makes version current for new connections and closes idle
// connections on older versions.
func (p *Pool) apply(ctx context.Context, version int) {
	p.tr.SetCurrent(version)
	p.closeIdle(ctx)
}

// closeIdle takes every idle connection: prepareConn destroys those on an
// old version, the others go back to the pool.
func (p *Pool) closeIdle(ctx context.Context) {
	for _, c := range p.Pool.AcquireAllIdle(ctx) {
		c.Release()
	}
}

func (p *Pool) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if p.user.BeforeConnect != nil {
		if err := p.user.BeforeConnect(ctx, cc); err != nil {
			return err
		}
	}
	// Reserve before reading: no drain may finish between the read and the
	// connect being counted on its version.
	release := p.tr.Pending()
	defer release()
	c, err := p.src.Current(ctx, p.id)
	if err != nil {
		return fmt.Errorf("pgxswap: current credential of %s: %w", p.id, err)
	}
	user := c.Field("username")
	if user == "" {
		return fmt.Errorf("pgxswap: credential %s version %d has no field username", p.id, c.Version)
	}
	p.tr.Observe(c.Version)
	noteAttempt(ctx, c.Version)
	cc.User = user
	cc.Password = c.Secret["password"].Reveal()
	// pgxpool calls pgx.ConnectConfig right after this hook, and pgx calls
	// the connect tracer's end in a defer: done always runs.
	ct := &connectTracer{done: p.tr.Connecting(c.Version)}
	if cc.Tracer != nil {
		cc.Tracer = &fullTracer{connectTracer: ct, inner: cc.Tracer}
	} else {
		cc.Tracer = ct
	}
	return nil
}

func (p *Pool) afterConnect(ctx context.Context, c *pgx.Conn) error {
	if p.user.AfterConnect != nil {
		if err := p.user.AfterConnect(ctx, c); err != nil {
			p.tr.Close(c) // the pool closes it without BeforeClose
			return err
		}
	}
	return nil
}

func (p *Pool) prepareConn(ctx context.Context, c *pgx.Conn) (bool, error) {
	if !p.tr.Usable(c) {
		return false, nil // destroyed; pgxpool retries on another connection
	}
	switch {
	case p.user.PrepareConn != nil:
		return p.user.PrepareConn(ctx, c)
	case p.user.BeforeAcquire != nil:
		return p.user.BeforeAcquire(ctx, c), nil
	}
	return true, nil
}

func (p *Pool) afterRelease(c *pgx.Conn) bool {
	if !p.tr.Usable(c) {
		return false
	}
	if p.user.AfterRelease != nil {
		return p.user.AfterRelease(c)
	}
	return true
}

func (p *Pool) beforeClose(c *pgx.Conn) {
	p.tr.Close(c)
	if p.user.BeforeClose != nil {
		p.user.BeforeClose(c)
	}
}

func (p *Pool) drained(r drain.Result) {
	d := consumer.Drain{ID: p.id, Version: r.Version, Started: r.Started, Took: r.Took, ForceClosed: r.ForceClosed}
	p.log.Info("credential version drained", "credential", p.id, "version", r.Version, "took", r.Took, "force_closed", r.ForceClosed)
	p.rmu.Lock()
	closed := p.closed
	if !closed {
		p.wg.Add(1)
	}
	p.rmu.Unlock()
	if ur, ok := p.src.(consumer.UnusedReporter); ok && !closed {
		go func() {
			defer p.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := ur.ReportUnused(ctx, p.id, r.Version); err != nil {
				p.log.Warn("reporting unused credential version", "credential", p.id, "version", r.Version, "err", err)
			}
		}()
	} else if !closed {
		p.wg.Done()
	}
	if p.onDone != nil {
		p.onDone(d)
	}
}

// Stats returns the number of open connections per credential version.
func (p *Pool) Stats() map[int]int { return p.tr.Stats() }

// Version returns the credential version new connections use.
func (p *Pool) Version() int { return p.tr.Current() }

// Draining returns the old versions that still have connections.
func (p *Pool) Draining() []int { return p.tr.Draining() }

// Close stops following the credential and closes the pool.
func (p *Pool) Close() {
	p.once.Do(func() {
		p.rmu.Lock()
		p.closed = true
		p.rmu.Unlock()
		p.cancel()
		p.tr.Stop()
		p.Pool.Close()
		p.wg.Wait()
	})
}

// connectTracer tags a connection with the version it logs in with; until
// the connect ends the version does not count as drained.
type connectTracer struct {
	done func(*pgx.Conn, func(), bool)
}

// TraceConnectStart implements pgx.ConnectTracer.
func (t *connectTracer) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return ctx
}

// TraceQueryStart implements pgx.QueryTracer (the type of ConnConfig.Tracer).
func (t *connectTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *connectTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceConnectEnd implements pgx.ConnectTracer.
func (t *connectTracer) TraceConnectEnd(_ context.Context, d pgx.TraceConnectEndData) {
	if d.Err != nil || d.Conn == nil {
		t.done(nil, nil, false)
		return
	}
	// Captured here, on the connecting goroutine: closing the network
	// connection is safe while another goroutine uses the pgx.Conn.
	var nc net.Conn = d.Conn.PgConn().Conn()
	t.done(d.Conn, func() { nc.Close() }, true)
}

// fullTracer keeps the caller's tracer working next to connectTracer.
type fullTracer struct {
	*connectTracer
	inner pgx.QueryTracer
}

func (t *fullTracer) TraceConnectStart(ctx context.Context, d pgx.TraceConnectStartData) context.Context {
	ctx = t.connectTracer.TraceConnectStart(ctx, d)
	if ct, ok := t.inner.(pgx.ConnectTracer); ok {
		ctx = ct.TraceConnectStart(ctx, d)
	}
	return ctx
}

func (t *fullTracer) TraceConnectEnd(ctx context.Context, d pgx.TraceConnectEndData) {
	if ct, ok := t.inner.(pgx.ConnectTracer); ok {
		ct.TraceConnectEnd(ctx, d)
	}
	t.connectTracer.TraceConnectEnd(ctx, d)
}

func (t *fullTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return t.inner.TraceQueryStart(ctx, c, d)
}

func (t *fullTracer) TraceQueryEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryEndData) {
	t.inner.TraceQueryEnd(ctx, c, d)
}

func (t *fullTracer) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	if bt, ok := t.inner.(pgx.BatchTracer); ok {
		return bt.TraceBatchStart(ctx, c, d)
	}
	return ctx
}

func (t *fullTracer) TraceBatchQuery(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	if bt, ok := t.inner.(pgx.BatchTracer); ok {
		bt.TraceBatchQuery(ctx, c, d)
	}
}

func (t *fullTracer) TraceBatchEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchEndData) {
	if bt, ok := t.inner.(pgx.BatchTracer); ok {
		bt.TraceBatchEnd(ctx, c, d)
	}
}

func (t *fullTracer) TraceCopyFromStart(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	if ct, ok := t.inner.(pgx.CopyFromTracer); ok {
		return ct.TraceCopyFromStart(ctx, c, d)
	}
	return ctx
}

func (t *fullTracer) TraceCopyFromEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromEndData) {
	if ct, ok := t.inner.(pgx.CopyFromTracer); ok {
		ct.TraceCopyFromEnd(ctx, c, d)
	}
}

func (t *fullTracer) TracePrepareStart(ctx context.Context, c *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	if pt, ok := t.inner.(pgx.PrepareTracer); ok {
		return pt.TracePrepareStart(ctx, c, d)
	}
	return ctx
}

func (t *fullTracer) TracePrepareEnd(ctx context.Context, c *pgx.Conn, d pgx.TracePrepareEndData) {
	if pt, ok := t.inner.(pgx.PrepareTracer); ok {
		pt.TracePrepareEnd(ctx, c, d)
	}
}
