package redis

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/internal/dbrot"
)

// connect logs in as t on one fresh connection and returns the client once
// authenticated (go-redis connects lazily, so a PING forces the login; a NOPERM
// on PING still means the login worked).
func (r *Rotator) connect(ctx context.Context, t target) (*redis.Client, error) {
	timeout := rotator.ConnectTimeout(ctx, r.cfg.connectTimeout())
	c := redis.NewClient(&redis.Options{
		Addr:            net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))),
		Username:        t.Username,
		Password:        t.Password.Reveal(),
		Protocol:        2, // AUTH user pass; replies as flat arrays
		DialTimeout:     timeout,
		ReadTimeout:     r.cfg.commandTimeout(),
		WriteTimeout:    r.cfg.commandTimeout(),
		PoolSize:        1,
		MaxRetries:      -1, // the engine retries, with its own backoff
		DialerRetries:   1,
		DisableIdentity: true, // no CLIENT SETINFO
		// A deadline of ctx bounds a command too (the earlier of it and
		// Read/WriteTimeout), so the login below gets the connect timeout.
		ContextTimeoutEnabled: true,
	})
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil && !isPermission(err) {
		c.Close()
		return nil, dbrot.AtAddr(c.Options().Addr, err)
	}
	return c, nil
}

// dead reports an error that means the connection is gone (dbrot.Driver.Dead):
// a network error other than a timeout (a command may still run after one).
func dead(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return dbrot.Broken(err)
}

func isPermission(err error) bool {
	var se redis.Error
	return errors.As(err, &se) && redis.IsPermissionError(err)
}

// db is how the shared login steps reach the server.
func (r *Rotator) db() dbrot.Driver[target, *redis.Client] {
	return dbrot.Driver[target, *redis.Client]{Connect: r.connect, ClassOf: classOf,
		Close: func(c *redis.Client) { r.files.Delete(c); c.Close() },
		Pool:  &r.pool,
		Dead:  dead,
		Ping: func(ctx context.Context, c *redis.Client) error {
			if err := c.Ping(ctx).Err(); err != nil && !isPermission(err) {
				return err
			}
			return nil
		},
		LoginKey: func(t target) string {
			return strings.Join([]string{t.Host, strconv.Itoa(int(t.Port)), t.Username, t.Password.Reveal()}, "\x00")
		}}
}

// manager is the connection that changes the ACL.
type manager struct {
	*redis.Client
	r       *Rotator
	release func(error) error // err = m.release(err) ends the step's use of the connection
}

// manager connects as admin_credential when base names one, otherwise as the
// first of logins that logs in.
func (r *Rotator) manager(ctx context.Context, res rotator.Resolver, base target, op string, logins ...target) (*manager, error) {
	adm, ok, err := admin(ctx, res, base, op)
	if err != nil {
		return nil, err
	}
	c, release, err := r.db().Manager(ctx, op, base, adm, ok, logins)
	if err != nil {
		return nil, err
	}
	return &manager{Client: c, release: release, r: r}, nil
}

// aclUser is what ACL GETUSER says.
type aclUser struct {
	flags     []string
	passwords []string // lowercase hex SHA-256
}

// getUser reads the user's ACL. A missing user is ClassConfig: ACL SETUSER
// would silently create it.
func (m *manager) getUser(ctx context.Context, op, name string) (aclUser, error) {
	v, err := m.Do(ctx, "ACL", "GETUSER", name).Result()
	if errors.Is(err, redis.Nil) {
		return aclUser{}, rotator.Errorf(rotator.ClassConfig, op, "ACL user %q does not exist", name)
	}
	if err != nil {
		return aclUser{}, classify(op, "ACL GETUSER", err)
	}
	var u aclUser
	pairs, ok := v.([]any)
	if !ok {
		return u, rotator.Errorf(rotator.ClassUnknown, op, "unexpected ACL GETUSER reply %T", v)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		key, _ := pairs[i].(string)
		list, _ := pairs[i+1].([]any)
		for _, x := range list {
			s, _ := x.(string)
			switch key {
			case "flags":
				u.flags = append(u.flags, s)
			case "passwords":
				u.passwords = append(u.passwords, s)
			}
		}
	}
	return u, nil
}

// setUser applies ACL rules to an existing user. Arguments travel as separate
// RESP strings: nothing is parsed out of the user name.
func (m *manager) setUser(ctx context.Context, op, name string, rules ...any) error {
	args := append([]any{"ACL", "SETUSER", name}, rules...)
	return classify(op, "ACL SETUSER", m.Do(ctx, args...).Err())
}

// aclFile returns the server's aclfile setting ("" when it has none).
func (m *manager) aclFile(ctx context.Context, op string) (string, error) {
	if f, ok := m.r.files.Load(m.Client); ok {
		return f.(string), nil
	}
	v, err := m.ConfigGet(ctx, "aclfile").Result()
	if err != nil {
		return "", classify(op, "CONFIG GET", err)
	}
	m.r.files.Store(m.Client, v["aclfile"])
	return v["aclfile"], nil
}

// save writes the ACL to the server's ACL file, if it has one, so a restart
// keeps the change. ACL SAVE rewrites the whole file and fsyncs it while the
// server waits, so concurrent saves on one server (same address and admin
// login) are coalesced: a save started after this call's changes covers them
// (saveGroup).
func (m *manager) save(ctx context.Context, op string) error {
	file, err := m.aclFile(ctx, op)
	if err != nil || file == "" {
		return err
	}
	o := m.Options()
	g, _ := m.r.saves.LoadOrStore(o.Addr+"\x00"+o.Username, &saveGroup{})
	return g.(*saveGroup).run(ctx, func() error {
		return classify(op, "ACL SAVE", m.Do(ctx, "ACL", "SAVE").Err())
	})
}

// saveGroup coalesces ACL SAVEs: callers that arrive while a save runs wait
// for it to end, then one of them runs a single save for all of them (it
// starts after every one of their changes, so it writes them all).
type saveGroup struct {
	mu      sync.Mutex
	running bool
	idle    chan struct{} // closed when the running save ends
	next    *saveBatch    // the callers waiting for the next save
}

type saveBatch struct {
	done chan struct{}
	ran  bool
	err  error
}

func (g *saveGroup) run(ctx context.Context, save func() error) error {
	g.mu.Lock()
	if g.next == nil {
		g.next = &saveBatch{done: make(chan struct{})}
	}
	b := g.next
	for g.running {
		idle := g.idle
		g.mu.Unlock()
		select {
		case <-idle:
		case <-b.done: // another caller ran the batch's save
			return b.err
		case <-ctx.Done():
			return ctx.Err()
		}
		g.mu.Lock()
	}
	if b.ran { // ran and ended while this caller was waking up
		g.mu.Unlock()
		<-b.done
		return b.err
	}
	b.ran, g.next, g.running, g.idle = true, nil, true, make(chan struct{})
	g.mu.Unlock()
	b.err = save()
	close(b.done)
	g.mu.Lock()
	g.running = false
	close(g.idle)
	g.mu.Unlock()
	return b.err
}
