package dbrot

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// Pool keeps admin connections that are logged in between the steps of
// rotations, so a step does not pay a new login (on PostgreSQL a backend fork
// and a SCRAM exchange) for the admin it has just resolved.
//
// What it never changes:
//
//   - authorization: a rotator takes a connection from the pool only for an
//     admin the engine's resolver has just given it, and the resolver applies
//     the binding rule (rotation.Engine.Recheck) at every resolve. The pool is
//     reached after that check, never instead of it;
//   - which login a connection belongs to: the key is the admin credential's
//     ID and version and a keyed hash (HMAC with a random per-process key,
//     never stored) of everything the login used: address, username,
//     password, database, TLS settings. A new version of the admin (a
//     rotation, a put, a changed scope) or any other change of what it logs
//     in with is a new key, and the connections of the old one are closed at
//     the first use of the new;
//   - the logins that prove something: LogsIn, VerifyLogin and CheckCurrent
//     always open a fresh connection.
//
// A connection goes back to the pool only after a step that used it without
// any error. It is pinged before it is handed out again only when it has been
// idle longer than PingIdle (as pgxpool's default ShouldPing): a connection
// used a moment ago is handed out as it is, and a step that then finds it dead
// (the driver's Dead: reset, closed, or the session ended by the server; never
// a statement the server refused) is redone once on a fresh login by Redo. The
// pool is bounded
// (max idle connections in all), closes connections idle longer than the idle
// timeout, and Close closes every idle one (a later step opens new ones).
// Forget(id) closes those of admin credential id: a rotator calls it when it
// rotates that credential itself. The zero Pool is ready to use with the
// defaults (8 idle, 30 s, ping after 1 s idle).
type Pool[C any] struct {
	// MaxIdle bounds the idle connections kept: 0 means 8, negative disables
	// the pool (every step logs in afresh).
	MaxIdle int
	// IdleTimeout closes a connection unused for this long: 0 means 30 s.
	IdleTimeout time.Duration
	// PingIdle is how long a connection may have been idle before it is
	// pinged on its way out: 0 means 1 s, negative pings it every time.
	PingIdle time.Duration

	mu     sync.Mutex
	hkey   []byte
	idle   []pooled[C] // oldest first
	gen    map[string]uint64
	closer func(C)
	timer  *time.Timer
	hits   int64
	misses int64
}

type pooled[C any] struct {
	key   PoolKey
	conn  C
	since time.Time
}

// PoolKey names one admin login.
type PoolKey struct {
	Admin   string // admin credential ID
	Version int    // its version
	login   [sha256.Size]byte
}

func (p *Pool[C]) maxIdle() int {
	if p.MaxIdle == 0 {
		return 8
	}
	return p.MaxIdle
}

func (p *Pool[C]) pingIdle() time.Duration {
	if p.PingIdle == 0 {
		return time.Second
	}
	return p.PingIdle
}

func (p *Pool[C]) idleTimeout() time.Duration {
	if p.IdleTimeout <= 0 {
		return 30 * time.Second
	}
	return p.IdleTimeout
}

// Key returns the key of admin credential id at version, logging in with
// login: every setting and the password, in one string the rotator builds.
// Only its keyed hash is kept.
func (p *Pool[C]) Key(id string, version int, login string) PoolKey {
	p.mu.Lock()
	if p.hkey == nil {
		p.hkey = make([]byte, 32)
		rand.Read(p.hkey)
	}
	m := hmac.New(sha256.New, p.hkey)
	p.mu.Unlock()
	m.Write([]byte(login))
	k := PoolKey{Admin: id, Version: version}
	copy(k.login[:], m.Sum(nil))
	return k
}

// get takes an idle connection for key, or reports none; idle is how long it
// was unused. Connections of the same admin under another key (an older
// version, another password) are returned in stale for the caller to close.
func (p *Pool[C]) get(key PoolKey) (c C, ok bool, idle time.Duration, stale []C) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	keep := p.idle[:0]
	for _, e := range p.idle {
		switch {
		case e.key.Admin == key.Admin && e.key != key, now.Sub(e.since) >= p.idleTimeout():
			stale = append(stale, e.conn)
		default:
			keep = append(keep, e)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	for i := len(p.idle) - 1; i >= 0; i-- { // newest first: the likeliest alive
		if p.idle[i].key == key {
			c, ok, idle = p.idle[i].conn, true, now.Sub(p.idle[i].since)
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.idle = p.idle[:len(p.idle):len(p.idle)]
			break
		}
	}
	if ok {
		p.hits++
	} else {
		p.misses++
	}
	return c, ok, idle, stale
}

// generation returns the count of Forget calls for admin id, taken when a
// connection is handed out: put refuses it back if it changed.
func (p *Pool[C]) generation(id string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen[id]
}

// put returns c to the pool under key. It reports the connections the caller
// must close: c itself when the pool is disabled or admin key.Admin was
// forgotten since c was handed out (gen), and the oldest when the pool is full.
func (p *Pool[C]) put(key PoolKey, gen uint64, c C, closer func(C)) (closeNow []C) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxIdle() < 0 || p.gen[key.Admin] != gen {
		return []C{c}
	}
	p.closer = closer
	p.idle = append(p.idle, pooled[C]{key: key, conn: c, since: time.Now()})
	for len(p.idle) > p.maxIdle() {
		closeNow = append(closeNow, p.idle[0].conn)
		p.idle = p.idle[1:]
	}
	p.arm()
	return closeNow
}

// arm makes sure a timer will close connections that go idle too long.
// Called with mu held.
func (p *Pool[C]) arm() {
	if p.timer != nil || len(p.idle) == 0 {
		return
	}
	p.timer = time.AfterFunc(p.idleTimeout(), p.expire)
}

func (p *Pool[C]) expire() {
	p.mu.Lock()
	p.timer = nil
	now := time.Now()
	var stale []C
	keep := p.idle[:0]
	for _, e := range p.idle {
		if now.Sub(e.since) >= p.idleTimeout() {
			stale = append(stale, e.conn)
		} else {
			keep = append(keep, e)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	if len(p.idle) > 0 {
		p.timer = time.AfterFunc(p.idleTimeout()-now.Sub(p.idle[0].since), p.expire)
	}
	closer := p.closer
	p.mu.Unlock()
	for _, c := range stale {
		if closer != nil {
			closer(c)
		}
	}
}

// Forget closes the idle connections of admin credential id (call it when
// the credential itself is rotated, reverted or retired).
func (p *Pool[C]) Forget(id string) {
	p.mu.Lock()
	if p.gen == nil {
		p.gen = map[string]uint64{}
	}
	p.gen[id]++
	p.mu.Unlock()
	p.drop(func(k PoolKey) bool { return k.Admin == id })
}

// Close closes every idle connection. The pool stays usable.
func (p *Pool[C]) Close() { p.drop(func(PoolKey) bool { return true }) }

func (p *Pool[C]) drop(match func(PoolKey) bool) {
	p.mu.Lock()
	var stale []C
	keep := p.idle[:0]
	for _, e := range p.idle {
		if match(e.key) {
			stale = append(stale, e.conn)
		} else {
			keep = append(keep, e)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	if len(p.idle) == 0 && p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	closer := p.closer
	p.mu.Unlock()
	for _, c := range stale {
		if closer != nil {
			closer(c)
		}
	}
}

// Stats reports how often a step found an idle connection (hits) and how
// often it logged in (misses), and how many are idle now.
func (p *Pool[C]) Stats() (hits, misses int64, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.misses, len(p.idle)
}

// pingTimeout bounds the health check of an idle connection.
const pingTimeout = 5 * time.Second

// checkout returns an idle connection for key, closing stale and broken ones
// on the way. A connection idle longer than PingIdle is pinged first;
// unpinged reports one that was not (recheck, if set, has passed instead).
func (p *Pool[C]) checkout(ctx context.Context, key PoolKey, ping, recheck func(context.Context, C) error, closer func(C)) (c C, ok, unpinged bool) {
	for {
		c, ok, idle, stale := p.get(key)
		for _, s := range stale {
			closer(s)
		}
		if !ok {
			return c, false, false
		}
		if pi := p.pingIdle(); pi > 0 && idle <= pi {
			if recheck == nil || recheck(ctx, c) == nil {
				return c, true, true
			}
			closer(c)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := ping(pctx, c)
		cancel()
		if err == nil {
			return c, true, false
		}
		closer(c)
	}
}

// dropKey closes the idle connections of key: one of them was found dead, and
// a server restart or a killed session usually takes the others with it.
func (p *Pool[C]) dropKey(key PoolKey) { p.drop(func(k PoolKey) bool { return k == key }) }
