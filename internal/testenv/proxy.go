package testenv

import (
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
	// open is closed while data flows; Blackhole replaces it with a new
	// channel that Restore closes.
	open chan struct{}
}

// NewProxy starts a proxy to target on 127.0.0.1 and closes it at the end of
// the test.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, target: target, conns: map[net.Conn]struct{}{},
		open: make(chan struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Blackhole makes the proxy accept new connections and never answer them, and
// stops forwarding on the connections already open, so clients time out (a
// network that drops packets). Restore ends it.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.hole {
		p.hole = true
		p.open = make(chan struct{})
	}
}

// Restore ends a Blackhole: held data and connections go through again, as
// retransmissions do when a network heals.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hole {
		p.hole = false
		close(p.open)
	}
}

// gate waits while the proxy is blackholed.
func (p *Proxy) gate() {
	p.mu.Lock()
	ch := p.open
	p.mu.Unlock()
	<-ch
}

// pipe copies src to dst, holding data while the proxy is blackholed.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
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
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	p.gate() // a blackholed connection is held, unanswered, until Restore or Close
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
	go p.pipe(s, c)
	p.pipe(c, s)
}

// Close shuts the port and every connection through it. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.hole {
		p.hole = false
		close(p.open) // held goroutines see closed connections and end
	}
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
	p.ln, p.closed = ln, false
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.serve()
}
