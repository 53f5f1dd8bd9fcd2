package testserver

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from its loopback address to a target
// and can freeze them, as SIGSTOP freezes a process: connections stay
// open and new ones are accepted, but no byte goes through either way
// until Thaw. A client's calls through a frozen proxy neither fail nor
// answer; only its own deadlines, keepalives or timeouts end them.
type Proxy struct {
	lis    net.Listener
	target string
	done   chan struct{} // closed when the proxy closes
	wg     sync.WaitGroup

	mu     sync.Mutex
	thawed chan struct{} // closed while bytes go through
	conns  map[net.Conn]struct{}
}

// NewProxy starts a proxy to target on a random loopback port; it is
// closed, with every connection through it, in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	thawed := make(chan struct{})
	close(thawed)
	p := &Proxy{lis: Listen(t), target: target, done: make(chan struct{}), thawed: thawed, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Freeze holds every byte from now on, on open and new connections. Thaw
// before the servers behind the proxy stop (defer it): grpc.Server.Stop
// waits up to minutes for a connection whose bytes are held.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

// Thaw lets the held bytes and the next ones through.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// track records a connection pair, or closes it and returns false when
// the proxy is closing.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	default:
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, holding each chunk while frozen; when either
// side ends, both close.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pass waits while the proxy is frozen; false when it closes meanwhile.
func (p *Proxy) pass() bool {
	p.mu.Lock()
	thawed := p.thawed
	p.mu.Unlock()
	select {
	case <-thawed:
		return true
	case <-p.done:
		return false
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	close(p.done)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.lis.Close()
	p.wg.Wait()
}
