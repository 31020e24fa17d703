// Package load runs a query in a loop on several workers and reports
// throughput, failures and latency percentiles per phase (before, during and
// after a rotation). The example program and the consumer tests share it.
package load

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Phase is what happened between two marks.
type Phase struct {
	Name     string
	Elapsed  time.Duration
	Queries  int // successful
	Failures int
	FirstErr error
	P50, P99 time.Duration
	Max      time.Duration
}

// QPS is successful queries per second.
func (p Phase) QPS() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Queries) / p.Elapsed.Seconds()
}

func (p Phase) String() string {
	s := fmt.Sprintf("%-7s %6.1fs %8.0f queries/s %7d ok %4d failed  p50 %v  p99 %v  max %v",
		p.Name, p.Elapsed.Seconds(), p.QPS(), p.Queries, p.Failures, p.P50.Round(time.Microsecond), p.P99.Round(time.Microsecond), p.Max.Round(time.Microsecond))
	if p.FirstErr != nil {
		s += fmt.Sprintf("  first error: %v", p.FirstErr)
	}
	return s
}

// Runner runs Query on Workers goroutines until Stop.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	since    time.Time
	lat      []time.Duration
	failures int
	firstErr error
}

// Start runs query on workers goroutines, each in a loop.
func Start(workers int, query func(ctx context.Context) error) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{cancel: cancel, since: time.Now()}
	for range workers {
		r.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				err := query(ctx)
				d := time.Since(start)
				if ctx.Err() != nil {
					return // stopping: the last query may have been cut short
				}
				r.mu.Lock()
				if err != nil {
					r.failures++
					if r.firstErr == nil {
						r.firstErr = err
					}
				} else {
					r.lat = append(r.lat, d)
				}
				r.mu.Unlock()
			}
		})
	}
	return r
}

// Mark ends the current phase, names it and starts the next.
func (r *Runner) Mark(name string) Phase {
	r.mu.Lock()
	now := time.Now()
	lat, fails, first, since := r.lat, r.failures, r.firstErr, r.since
	r.lat, r.failures, r.firstErr, r.since = make([]time.Duration, 0, len(lat)), 0, nil, now
	r.mu.Unlock()
	p := Phase{Name: name, Elapsed: now.Sub(since), Queries: len(lat), Failures: fails, FirstErr: first}
	if len(lat) > 0 {
		slices.Sort(lat)
		p.P50 = lat[len(lat)*50/100]
		p.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		p.Max = lat[len(lat)-1]
	}
	return p
}

// Stop ends the load, waits for the workers and returns the last phase.
func (r *Runner) Stop(name string) Phase {
	r.cancel()
	r.wg.Wait()
	return r.Mark(name)
}
