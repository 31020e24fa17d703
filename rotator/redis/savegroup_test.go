package redis

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrent ACL SAVEs are coalesced, and every caller returns only after a
// save that started after its own change: a change is never reported saved
// when the file does not hold it.
func TestSaveGroupCoversEveryChange(t *testing.T) {
	var (
		g       saveGroup
		mu      sync.Mutex
		changed []bool // changes made in memory
		onDisk  []bool // what the last save wrote
		saves   atomic.Int32
	)
	const n = 32
	changed, onDisk = make([]bool, n), make([]bool, n)
	save := func() error {
		saves.Add(1)
		mu.Lock()
		snap := append([]bool(nil), changed...)
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // a slow fsync: others pile up
		mu.Lock()
		for i, c := range snap {
			onDisk[i] = onDisk[i] || c
		}
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mu.Lock()
			changed[i] = true
			mu.Unlock()
			if err := g.run(context.Background(), save); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !onDisk[i] {
				t.Errorf("caller %d returned before a save wrote its change", i)
			}
		})
	}
	wg.Wait()
	if s := saves.Load(); s >= n {
		t.Errorf("%d saves for %d concurrent callers: not coalesced", s, n)
	}
	t.Logf("%d saves for %d callers", saves.Load(), n)
}
