package agent

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/server"
)

// BenchmarkRotationToDisk measures, over 100 rotations, the time from a
// rotation's commit (Rotate returning) to the new content on disk and to the
// action (a command) done, beside the rotation's own duration, as p50 and p99
// (ms). The agent is pushed by the watch stream; nothing polls.
//
//	go test -run '^$' -bench RotationToDisk -benchtime 1x ./agent/
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
	const n = 100
	var rot, disk, done []time.Duration
	zero := time.Duration(0)
	for b.Loop() {
		rot, disk, done = rot[:0], disk[:0], done[:0]
		for range n {
			start := time.Now()
			if _, err := s.m.Rotate(context.Background(), "app/x", credential.RotateOptions{Grace: &zero}); err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			c, err := s.m.Get(context.Background(), "app/x", credential.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			si := st.waitVersion(b, "app/x", c.Version)
			rot = append(rot, committed.Sub(start))
			disk = append(disk, si.WrittenAt.Sub(committed))
			done = append(done, si.DoneAt.Sub(committed))
		}
	}
	pct := func(d []time.Duration, p float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(rot, .5), "rotate-p50-ms")
	b.ReportMetric(pct(rot, .99), "rotate-p99-ms")
	b.ReportMetric(pct(disk, .5), "commit-to-disk-p50-ms")
	b.ReportMetric(pct(disk, .99), "commit-to-disk-p99-ms")
	b.ReportMetric(pct(done, .5), "commit-to-action-p50-ms")
	b.ReportMetric(pct(done, .99), "commit-to-action-p99-ms")
	b.ReportMetric(0, "ns/op")
}
