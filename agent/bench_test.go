package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/rotation"
	"github.com/nebula-credential/nebula-credential/server"
)

// BenchmarkRotationToDisk measures, over 100 rotations, the time from a
// rotation's commit (the engine's current_changed notification, right after
// the commit transaction returned) to the new content on disk (renamed into
// place and the folder fsynced) and to the action (a command) done, beside
// the rotation's own duration, as p50 and p99 (ms). The agent is pushed by
// the watch stream; nothing polls. Goal: commit-to-disk p99 ≤ 100 ms.
//
// The baseline, measured in the same run right after each delivery, is the
// least any file-based delivery costs here: one HTTP fetch of the credential
// and one durable atomic write of the same file. The ratios are the agent's
// latency over it (1 would mean the watch stream, the render and the
// bookkeeping cost nothing).
//
//	go test -run '^$' -bench RotationToDisk -benchtime 1x -v ./agent/
func BenchmarkRotationToDisk(b *testing.B) {
	s := newSrv(b, server.ConsumerConfig{})
	s.put(b, "app/x", "bench-secret-0")
	dir := b.TempDir()
	cfg := loadCfg(b, dir, fmt.Sprintf(`
servers: [%s]
templates:
  - contents: '{{ pgpass "app/x" }}'
    destination: pgpass
    action: {command: ["true"]}
`, s.ts.URL))
	st := startAgent(b, cfg, s.token)
	st.waitVersion(b, "app/x", 1)
	commits := make(chan time.Time, 16)
	defer s.m.Engine().Subscribe(func(ev rotation.Event) {
		if ev.Kind == rotation.EventCurrentChanged && ev.CredentialID == "app/x" {
			commits <- time.Now()
		}
	})()
	cl, err := client.New(s.ts.URL, s.token, nil)
	if err != nil {
		b.Fatal(err)
	}
	basePath := filepath.Join(dir, "baseline")
	ctx := context.Background()
	const n = 100
	type sample struct {
		rot, event, rendered, disk, done, base time.Duration
		hasEvent                               bool
	}
	var ss []sample
	zero := time.Duration(0)
	for b.Loop() {
		ss = ss[:0]
		for range n {
			start := time.Now()
			if _, err := s.m.Rotate(ctx, "app/x", credential.RotateOptions{Grace: &zero}); err != nil {
				b.Fatal(err)
			}
			returned := time.Now()
			var committed time.Time
			select {
			case committed = <-commits:
			default:
				b.Fatal("Rotate returned before the engine announced the commit")
			}
			c, err := s.m.Get(ctx, "app/x", credential.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			si := st.waitVersion(b, "app/x", c.Version)
			sm := sample{rot: returned.Sub(start), rendered: si.RenderedAt.Sub(committed),
				disk: si.WrittenAt.Sub(committed), done: si.DoneAt.Sub(committed)}
			if !si.EventAt.IsZero() {
				sm.event, sm.hasEvent = si.EventAt.Sub(committed), true
			}
			// the baseline: fetch and write durably, nothing else
			t0 := time.Now()
			got, err := cl.Get(ctx, "app/x", client.GetOptions{Reveal: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := WriteFile(basePath, []byte(got.Secret["password"].Reveal()), 0o600, -1, -1); err != nil {
				b.Fatal(err)
			}
			sm.base = time.Since(t0)
			ss = append(ss, sm)
		}
	}
	pct := func(f func(sample) time.Duration, p float64) float64 {
		var d []time.Duration
		for _, s := range ss {
			if v := f(s); v != noValue {
				d = append(d, v)
			}
		}
		if len(d) == 0 {
			return -1
		}
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	metric := func(name string, f func(sample) time.Duration) (p50, p99 float64) {
		p50, p99 = pct(f, .5), pct(f, .99)
		b.ReportMetric(p50, name+"-p50-ms")
		b.ReportMetric(p99, name+"-p99-ms")
		return p50, p99
	}
	metric("rotate", func(s sample) time.Duration { return s.rot })
	metric("commit-to-event", func(s sample) time.Duration {
		if !s.hasEvent {
			return noValue
		}
		return s.event
	})
	metric("commit-to-rendered", func(s sample) time.Duration { return s.rendered })
	d50, d99 := metric("commit-to-disk", func(s sample) time.Duration { return s.disk })
	metric("commit-to-action", func(s sample) time.Duration { return s.done })
	b50, b99 := metric("baseline-fetch-write", func(s sample) time.Duration { return s.base })
	b.ReportMetric(d50/b50, "disk/baseline-p50")
	b.ReportMetric(d99/b99, "disk/baseline-p99")
	noEvent := 0
	for _, s := range ss {
		if !s.hasEvent {
			noEvent++
		}
	}
	b.ReportMetric(float64(noEvent), "passes-without-event")
	b.ReportMetric(0, "ns/op")
	// the slowest deliveries, step by step, to see where a tail comes from
	slices.SortFunc(ss, func(x, y sample) int { return int(y.disk - x.disk) })
	for _, s := range ss[:min(3, len(ss))] {
		b.Logf("slow delivery: event +%v rendered +%v on disk +%v action +%v (baseline %v)",
			s.event.Round(10*time.Microsecond), s.rendered.Round(10*time.Microsecond), s.disk.Round(10*time.Microsecond), s.done.Round(10*time.Microsecond), s.base.Round(10*time.Microsecond))
	}
}

const noValue = time.Duration(-1 << 63)
