package testenv

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Consumers simulates applications during a rotation: Workers goroutines each
// log in with the latest published credential, run QueriesPerConn queries,
// close, and start again. Publish swaps the credential the way a consumer pool
// does (new logins use it at once; logins already under way finish).
type Consumers[C any] struct {
	Workers        int
	QueriesPerConn int
	// Open logs in with c and returns a function running one query and a close.
	Open func(ctx context.Context, c C) (query func(context.Context) error, close func(), err error)

	mu      sync.RWMutex // held for reading from reading the credential to the end of the login
	cur     C
	queries atomic.Int64
	logins  atomic.Int64

	fmu      sync.Mutex
	failures []Failure

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Failure is one failed login or query.
type Failure struct {
	At    time.Time
	Login bool // false: a query failed
	Err   error
}

// Start begins the load with credential c.
func (l *Consumers[C]) Start(c C) {
	l.cur = c
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for range l.Workers {
		l.wg.Add(1)
		go l.work(ctx)
	}
}

func (l *Consumers[C]) work(ctx context.Context) {
	defer l.wg.Done()
	for ctx.Err() == nil {
		l.mu.RLock()
		c := l.cur
		q, closeFn, err := l.Open(ctx, c)
		l.mu.RUnlock()
		if ctx.Err() != nil {
			if err == nil {
				closeFn()
			}
			return
		}
		l.logins.Add(1)
		if err != nil {
			l.fail(Failure{At: time.Now(), Login: true, Err: err})
			time.Sleep(time.Millisecond)
			continue
		}
		for range l.QueriesPerConn {
			if err := q(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				l.fail(Failure{At: time.Now(), Err: err})
				break
			}
			l.queries.Add(1)
		}
		closeFn()
	}
}

func (l *Consumers[C]) fail(f Failure) {
	l.fmu.Lock()
	l.failures = append(l.failures, f)
	l.fmu.Unlock()
}

// Publish makes c the credential for new logins and returns once no login
// with an older credential is still under way.
func (l *Consumers[C]) Publish(c C) {
	l.mu.Lock()
	l.cur = c
	l.mu.Unlock()
}

// Queries is the number of successful queries so far.
func (l *Consumers[C]) Queries() int64 { return l.queries.Load() }

// Logins is the number of login attempts so far.
func (l *Consumers[C]) Logins() int64 { return l.logins.Load() }

// Failures returns every failure so far.
func (l *Consumers[C]) Failures() []Failure {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	return append([]Failure(nil), l.failures...)
}

// Stop ends the load and waits for the workers.
func (l *Consumers[C]) Stop() {
	l.cancel()
	l.wg.Wait()
}
