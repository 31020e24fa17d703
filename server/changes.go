package server

// changeFeed is implemented by stores shared by several servers
// (store/postgres): Subscribe calls fn with the table another server (or
// this one) changed, at its commit, or with "" when notifications may have
// been lost.
type changeFeed interface {
	Subscribe(fn func(table string)) (unsubscribe func())
}

// followStore keeps this server's state fresh when other servers change the
// store: new events wake the watch streams at once (polling stays the
// fallback), and a token revoked or changed anywhere is no longer served
// from the token cache.
func (s *Server) followStore() (unsubscribe func()) {
	f, ok := s.m.Store().(changeFeed)
	if !ok {
		return func() {}
	}
	return f.Subscribe(func(table string) {
		switch table {
		case "events":
			s.hub.poke()
		case "tokens":
			s.dropTokens()
		case "":
			s.hub.poke()
			s.dropTokens()
		}
	})
}

// poke makes the poller read the events table now.
func (h *hub) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// dropTokens empties the token cache.
func (s *Server) dropTokens() {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	clear(s.tokCache)
	s.tokGen++
}
