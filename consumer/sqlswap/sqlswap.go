// Package sqlswap is a database/sql driver.Connector that survives credential
// rotation.
//
// Every Connect reads the current version of the credential from a
// consumer.Source and logs in with it, so new connections always use current.
// Each connection remembers its version. When current moves, idle connections
// on an older version are closed at once (their network connection; database/sql
// drops them at their next checkout), and the others answer ResetSession and
// IsValid with driver.ErrBadConn / false, so database/sql discards them when
// they are released or taken from the idle pool (retrying the query on another
// connection: nothing fails). Connections still open after the drain timeout
// (default 5 minutes) are force-closed by closing their network connection.
//
//	src := consumer.FromManager(m)
//	c, err := sqlswap.New(ctx, sqlswap.Config{Source: src, ID: "prod/db/orders", Driver: sqlswap.Postgres("")})
//	db := sql.OpenDB(c) // db.Close also closes c
//	c.Stats()           // open connections per credential version
//
// Postgres (pgx's stdlib) and MySQL (go-sql-driver/mysql) build the driver
// side; any other driver works through a Driver function that uses the given
// dial function.
package sqlswap

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

	"database/sql/driver"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/internal/drain"
	"github.com/nebula-credential/nebula-credential/consumer/internal/follow"
)

// DefaultDrainTimeout is how long connections on an old version may stay open.
const DefaultDrainTimeout = 5 * time.Minute

// DialFunc dials the database server. A Driver must make its driver use it:
// it records each connection's network connection so that a connection still
// open at the drain timeout can be force-closed.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Driver builds the driver side for one credential version: a Connector that
// logs in with c's username and password and dials with dial.
type Driver func(c consumer.Credential, dial DialFunc) (driver.Connector, error)

// Config configures New. The zero value of every optional field means its default.
type Config struct {
	// Source and ID name the credential. Required.
	Source consumer.Source
	ID     string
	// Driver builds connectors, e.g. Postgres("") or MySQL(nil). Required.
	Driver Driver
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
	switch {
	case c.Source == nil:
		return errors.New("sqlswap: Config.Source is required")
	case c.ID == "":
		return errors.New("sqlswap: Config.ID is required")
	case c.Driver == nil:
		return errors.New("sqlswap: Config.Driver is required")
	case c.DrainTimeout < 0:
		return errors.New("sqlswap: negative DrainTimeout")
	}
	return nil
}

// Connector is a driver.Connector on the current version of a credential.
// Pass it to sql.OpenDB; closing the *sql.DB closes it.
type Connector struct {
	src    consumer.Source
	id     string
	build  Driver
	tr     *drain.Tracker[*conn]
	log    *slog.Logger
	onDone func(consumer.Drain)

	mu     sync.Mutex
	cached struct {
		version int
		c       driver.Connector
	}

	refetch consumer.RefetchCounter

	cancel context.CancelFunc
	wg     sync.WaitGroup
	rmu    sync.Mutex
	closed bool
	once   sync.Once
}

var (
	_ driver.Connector           = (*Connector)(nil)
	_ interface{ Close() error } = (*Connector)(nil)
)

// New returns a Connector for cfg.ID. It reads the credential once (so a
// missing credential fails here) but opens no connection.
func New(ctx context.Context, cfg Config) (*Connector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cur, err := cfg.Source.Current(ctx, cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("sqlswap: credential %s: %w", cfg.ID, err)
	}
	timeout := cfg.DrainTimeout
	if timeout == 0 {
		timeout = DefaultDrainTimeout
	}
	c := &Connector{src: cfg.Source, id: cfg.ID, build: cfg.Driver, log: cfg.Logger, onDone: cfg.OnDrained}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if _, err := c.connector(cur); err != nil {
		return nil, err
	}
	c.tr = drain.New[*conn](drain.Config{Timeout: timeout, Drained: c.drained}, cur.Version)
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	changes, err := c.src.Watch(wctx, c.id)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("sqlswap: watch %s: %w", c.id, err)
	}
	c.wg.Go(func() { follow.Run(wctx, c.src, c.id, changes, c.log, c.apply) })
	if tr, ok := c.src.(consumer.TimingReporter); ok {
		c.wg.Go(func() { // the server learns the drain timeout before the first rotation
			rctx, cancel := context.WithTimeout(wctx, 30*time.Second)
			defer cancel()
			if err := tr.ReportTiming(rctx, c.id, cur.Version, timeout); err != nil && rctx.Err() == nil {
				c.log.Warn("reporting drain timeout", "credential", c.id, "err", err)
			}
		})
	}
	return c, nil
}

// connector returns the driver connector for version cur, built once per version.
func (c *Connector) connector(cur consumer.Credential) (driver.Connector, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached.c != nil && c.cached.version == cur.Version {
		return c.cached.c, nil
	}
	dc, err := c.build(cur, dial)
	if err != nil {
		return nil, fmt.Errorf("sqlswap: credential %s version %d: %w", c.id, cur.Version, err)
	}
	c.cached.version, c.cached.c = cur.Version, dc
	return dc, nil
}

// Connect logs in with the current version. If the login fails while the
// current version moved on (a connect that raced with a rotation whose old
// version was retired meanwhile), it tries once more with the new one. A
// login the server refuses for the credential itself (PostgreSQL 28P01 or
// 28000, MySQL 1045, 3118 or MariaDB 4151) first refetches the current
// version past the Source's cache (consumer.Refresher): the change may not
// have reached this process yet. RefetchStats counts these.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	w, v, err := c.connect(ctx)
	if err == nil || ctx.Err() != nil || v == 0 {
		return w, err
	}
	denied := refused(err)
	var cur consumer.Credential
	var cerr error
	if denied {
		c.refetch.Refused()
		cur, cerr = consumer.Refetch(ctx, c.src, c.id)
	} else {
		cur, cerr = c.src.Current(ctx, c.id)
	}
	if cerr == nil && cur.Version != v {
		c.log.Info("login failed with a version no longer current; retrying with the current one", "credential", c.id, "version", v, "current", cur.Version)
		w, _, err = c.connect(ctx)
		if denied {
			c.refetch.Retried(err == nil)
		}
	}
	return w, err
}

// refused reports whether err is a login the server refused for the
// credential: PostgreSQL 28P01 (password) or 28000 (the role may not log in),
// MySQL 1045 (access denied), 3118 or MariaDB 4151 (account locked).
func refused(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "28P01" || pe.Code == "28000"
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1045 || me.Number == 3118 || me.Number == 4151
	}
	return false
}

// RefetchStats reports how often a login was refused for the credential, and
// how often a refetched version was retried and logged in.
func (c *Connector) RefetchStats() consumer.RefetchStats { return c.refetch.Stats() }

// connect logs in once; it returns the version it used (0 if it read none).
func (c *Connector) connect(ctx context.Context) (driver.Conn, int, error) {
	// Reserve before reading: no drain may finish between the read and the
	// connect being counted on its version.
	release := c.tr.Pending()
	cur, err := c.src.Current(ctx, c.id)
	if err != nil {
		release()
		return nil, 0, fmt.Errorf("sqlswap: current credential of %s: %w", c.id, err)
	}
	c.tr.Observe(cur.Version)
	done := c.tr.Connecting(cur.Version)
	release()
	dc, err := c.connector(cur)
	if err != nil {
		done(nil, nil, false)
		return nil, 0, err
	}
	slot := &dialSlot{}
	inner, err := dc.Connect(context.WithValue(ctx, slotKey{}, slot))
	if err != nil {
		done(nil, nil, false)
		return nil, cur.Version, err
	}
	w := &conn{inner: inner, c: c, nc: slot.get()}
	var closer func()
	if w.nc != nil {
		closer = w.kill
	} else {
		c.log.Warn("the driver did not dial through sqlswap's DialFunc: connections on old versions cannot be force-closed", "credential", c.id)
	}
	done(w, closer, true)
	return w, cur.Version, nil
}

// Driver implements driver.Connector (the current version's driver).
func (c *Connector) Driver() driver.Driver {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cached.c.Driver()
}

// apply makes version current for new connections and discards idle
// connections on older versions.
func (c *Connector) apply(ctx context.Context, version int) {
	c.tr.SetCurrent(version)
	for _, w := range c.tr.Stale() {
		if w.closeIfIdle() {
			c.tr.Close(w) // database/sql discards it at its next checkout
		}
	}
}

func (c *Connector) drained(r drain.Result) {
	d := consumer.Drain{ID: c.id, Version: r.Version, Started: r.Started, Took: r.Took, ForceClosed: r.ForceClosed}
	c.log.Info("credential version drained", "credential", c.id, "version", r.Version, "took", r.Took, "force_closed", r.ForceClosed)
	ur, ok := c.src.(consumer.UnusedReporter)
	c.rmu.Lock()
	if ok && !c.closed {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := ur.ReportUnused(ctx, c.id, r.Version); err != nil {
				c.log.Warn("reporting unused credential version", "credential", c.id, "version", r.Version, "err", err)
			}
		}()
	}
	c.rmu.Unlock()
	if c.onDone != nil {
		c.onDone(d)
	}
}

// Stats returns the number of open connections per credential version.
func (c *Connector) Stats() map[int]int { return c.tr.Stats() }

// Version returns the credential version new connections use.
func (c *Connector) Version() int { return c.tr.Current() }

// Draining returns the old versions that still have connections.
func (c *Connector) Draining() []int { return c.tr.Draining() }

// Close stops following the credential. sql.DB.Close calls it after closing
// its connections.
func (c *Connector) Close() error {
	c.once.Do(func() {
		c.rmu.Lock()
		c.closed = true
		c.rmu.Unlock()
		c.cancel()
		c.tr.Stop()
		c.wg.Wait()
	})
	return nil
}

// dial is the DialFunc handed to Drivers: it records the network connection
// in the slot Connect put in the context.
func dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if s, ok := ctx.Value(slotKey{}).(*dialSlot); ok {
		s.set(nc)
	}
	return nc, nil
}

type slotKey struct{}

type dialSlot struct {
	mu sync.Mutex
	nc net.Conn
}

func (s *dialSlot) set(nc net.Conn) {
	s.mu.Lock()
	s.nc = nc // a driver that dials several times (fallbacks) keeps the last
	s.mu.Unlock()
}

func (s *dialSlot) get() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nc
}

// Postgres builds connections with pgx's stdlib driver. base is a connection
// string without user and password (e.g. "host=db port=5432 dbname=app
// sslmode=require"); "" builds it from the credential's fields host, port
// (default 5432), database (default postgres) and sslmode (default disable).
// The credential supplies the field username and the secret password.
func Postgres(base string) Driver {
	return func(c consumer.Credential, dial DialFunc) (driver.Connector, error) {
		dsn := base
		if dsn == "" {
			var err error
			if dsn, err = postgresDSN(c); err != nil {
				return nil, err
			}
		}
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("connection settings: %w", err)
		}
		if cfg.User = c.Field("username"); cfg.User == "" {
			return nil, errors.New("no field username")
		}
		cfg.Password = c.Secret["password"].Reveal()
		cfg.DialFunc = pgconn.DialFunc(dial) // fallback hosts dial through it too
		return stdlib.GetConnector(*cfg), nil
	}
}

func postgresDSN(c consumer.Credential) (string, error) {
	q := url.Values{}
	host, port, db, ssl := c.Field("host"), c.Field("port"), c.Field("database"), c.Field("sslmode")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", fmt.Errorf("port %q is not a number", port)
	}
	if db == "" {
		db = "postgres"
	}
	if ssl == "" {
		ssl = "disable"
	}
	q.Set("host", host)
	q.Set("port", port)
	q.Set("dbname", db)
	q.Set("sslmode", ssl)
	return "postgres:///?" + q.Encode(), nil
}

// MySQL builds connections with go-sql-driver/mysql. base holds everything
// but user and password (it is cloned, never modified); nil builds it from the
// credential's fields host, port (default 3306), database and tls, and sends
// the driver's own log lines (such as those about connections force-closed
// here) to slog at debug level. The credential supplies the field username and
// the secret password.
func MySQL(base *mysql.Config) Driver {
	return func(c consumer.Credential, dial DialFunc) (driver.Connector, error) {
		var cfg *mysql.Config
		if base != nil {
			cfg = base.Clone()
		} else {
			cfg = mysql.NewConfig()
			cfg.Logger = debugLogger{}
			host, port := c.Field("host"), c.Field("port")
			if host == "" {
				host = "127.0.0.1"
			}
			if port == "" {
				port = "3306"
			}
			if _, err := strconv.Atoi(port); err != nil {
				return nil, fmt.Errorf("port %q is not a number", port)
			}
			cfg.Net = "tcp"
			cfg.Addr = net.JoinHostPort(host, port)
			cfg.DBName = c.Field("database")
			if tls := c.Field("tls"); tls != "" {
				cfg.TLSConfig = tls
			}
		}
		if cfg.User = c.Field("username"); cfg.User == "" {
			return nil, errors.New("no field username")
		}
		cfg.Passwd = c.Secret["password"].Reveal()
		cfg.DialFunc = dial
		return mysql.NewConnector(cfg)
	}
}

// debugLogger sends go-sql-driver/mysql's log lines to slog at debug level.
type debugLogger struct{}

func (debugLogger) Print(v ...any) { slog.Debug("mysql driver", "msg", fmt.Sprint(v...)) }
