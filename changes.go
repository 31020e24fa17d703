package credential

import "context"

// changeFeed is implemented by stores shared by several servers
// (store/postgres): Subscribe calls fn with the table changed by a commit on
// any server, or "" when notifications may have been lost.
type changeFeed interface {
	Subscribe(fn func(table string)) (unsubscribe func())
}

// followStore reloads the key-encryption keys when another server changes
// them (`key rotate`), so that every server seals new data keys under the
// new active key at once.
func (m *Manager) followStore() (unsubscribe func()) {
	f, ok := m.st.(changeFeed)
	if !ok {
		return func() {}
	}
	reload := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-reload:
				if err := m.loadKEKs(context.Background()); err != nil {
					m.log.Warn("reloading keys changed by another server", "err", err)
				}
			}
		}
	}()
	unsub := f.Subscribe(func(table string) {
		switch table {
		case "keks", "meta", "":
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	})
	return func() {
		unsub()
		close(done)
	}
}
