package testenv

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a local port to a target address until
// Close, which shuts the port (new connections are refused) and cuts every
// forwarded connection, as a server that goes away mid-rotation would.
type Proxy struct {
	Host string
	Port int

	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	hole   bool
	closed bool
	wg     sync.WaitGroup
}

// NewProxy starts a proxy to target on 127.0.0.1 and closes it at the end of
// the test.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Blackhole makes the proxy accept new connections and never answer them, so
// clients time out.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.hole = true
	p.mu.Unlock()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[c] = struct{}{}
		hole := p.hole
		p.mu.Unlock()
		if hole {
			continue // held open, never read, until Close
		}
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.Close()
		c.Close()
		return
	}
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	go func() { io.Copy(s, c); s.Close(); c.Close() }()
	io.Copy(c, s)
	c.Close()
	s.Close()
}

// Close shuts the port and every connection through it. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// Reopen listens on the same port again after Close, as a server that comes
// back would.
func (p *Proxy) Reopen(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)))
	if err != nil {
		t.Fatalf("proxy reopen: %v", err)
	}
	p.mu.Lock()
	p.ln, p.closed, p.hole = ln, false, false
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.serve()
}
