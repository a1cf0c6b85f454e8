package pyexec_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// proxy is a TCP proxy on 127.0.0.1:0 in front of upstreams (the first
// that accepts), standing for a balancer or a network path in the tests: it counts the bytes
// clients send through it, and can break its connections or refuse new
// ones.
type proxy struct {
	Addr      string
	upstreams []string // the first that accepts a connection is used
	ln        net.Listener
	sent      atomic.Int64 // client -> upstream bytes
	accepted  atomic.Int64
	refuse    atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startProxy(t testing.TB, upstreams ...string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{Addr: ln.Addr().String(), upstreams: upstreams, ln: ln, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			in.Close()
			continue
		}
		p.accepted.Add(1)
		var out net.Conn
		for _, u := range p.upstreams {
			if out, err = net.Dial("tcp", u); err == nil {
				break
			}
		}
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		go p.pipe(out, in, true)
		go p.pipe(in, out, false)
	}
}

func (p *proxy) pipe(dst, src net.Conn, count bool) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if count {
				p.sent.Add(int64(n))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			p.mu.Lock()
			delete(p.conns, src)
			delete(p.conns, dst)
			p.mu.Unlock()
			return
		}
	}
}

// Sent is how many bytes clients have sent through the proxy.
func (p *proxy) Sent() int64 { return p.sent.Load() }

// Break closes every connection through the proxy (new ones still work
// unless Refuse).
func (p *proxy) Break() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Refuse makes the proxy close new connections at once.
func (p *proxy) Refuse(on bool) { p.refuse.Store(on) }

func (p *proxy) Close() {
	p.ln.Close()
	p.Break()
}
