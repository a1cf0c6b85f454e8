package pyexec_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startReplica(t *testing.T, args ...string) *server {
	t.Helper()
	s, err := startServer(pyexecdPath(), append([]string{"--workers=1", "--max_workers=4",
		"--lease_grace=1s", "--drain_timeout=1s", "--kill_grace=1s"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// settled waits until p's byte count stops moving (HTTP/2 acks after the
// last call) and returns it.
func settled(p *proxy) int64 {
	n := p.Sent()
	for {
		time.Sleep(150 * time.Millisecond)
		m := p.Sent()
		if m == n {
			return n
		}
		n = m
	}
}

// TestRouteToOwnerReplicas: two pyexecd replicas with --peers, A and B. B
// advertises the address of a proxy in front of it (px), so the test sees
// and can cut what goes to B as an owner. Balancers are proxies too.
func TestRouteToOwnerReplicas(t *testing.T) {
	addrA, addrB := freeAddr(t), freeAddr(t)
	px := startProxy(t, addrB)
	peers := "--peers=" + addrA + "," + px.Addr
	startReplica(t, "--listen="+addrA, peers)
	startReplica(t, "--listen="+addrB, "--advertise_address="+px.Addr, peers)
	lbA, lbB := startProxy(t, addrA), startProxy(t, addrB)
	ctx := testCtx(t)
	evals := func(t *testing.T, s *pyexec.Session, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if v, err := s.Eval(ctx, "x"); err != nil || v != int64(1) {
				t.Fatalf("Eval %d: %v, %v", i, v, err)
			}
		}
	}

	c, err := pyexec.Dial(lbB.Addr, pyexec.WithInsecure(), pyexec.WithRouteToOwner())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.RegisterFunction("f", func(_ context.Context, args []any, _ map[string]any) (any, error) {
		return args[0], nil
	})
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("calls go straight to the owner Bind names", func(t *testing.T) {
		if s.Owner() != px.Addr {
			t.Fatalf("Owner() = %q, want %s", s.Owner(), px.Addr)
		}
		if err := s.Exec(ctx, "x = 1"); err != nil {
			t.Fatal(err)
		}
		lb, own := settled(lbB), px.Sent()
		evals(t, s, 20)
		if v, err := s.Eval(ctx, "pyexec.call('f', x)"); err != nil || v != int64(1) {
			t.Fatalf("callback: %v, %v", v, err)
		}
		st, err := s.CallStream(ctx, "builtins", "range", []any{3})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for st.Next() {
			n++
		}
		if st.Err() != nil || n != 3 {
			t.Fatalf("stream: %d events, %v", n, st.Err())
		}
		if ok, err := s.Interrupt(ctx); err != nil || ok {
			t.Fatalf("Interrupt: %v, %v", ok, err)
		}
		if got := settled(lbB); got != lb {
			t.Fatalf("the balancer carried %d bytes of the session's calls", got-lb)
		}
		if px.Sent()-own < 1000 || !s.Leased() {
			t.Fatalf("the owner got %d bytes; leased %v", px.Sent()-own, s.Leased())
		}
		t.Logf("24 calls went to the owner (%d bytes), none through the balancer", px.Sent()-own)
	})

	t.Run("a handle learns the owner from a forwarded answer", func(t *testing.T) {
		plain, err := pyexec.Dial(addrB, pyexec.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		other, err := plain.Bind(ctx, pyexec.WithoutLease())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Unbind(context.Background())
		if err := other.Exec(ctx, "x = 1"); err != nil {
			t.Fatal(err)
		}
		viaA, err := pyexec.Dial(lbA.Addr, pyexec.WithInsecure(), pyexec.WithRouteToOwner())
		if err != nil {
			t.Fatal(err)
		}
		defer viaA.Close()
		h := viaA.Attach(other.Token())
		evals(t, h, 1) // through A, which forwards it and names the owner
		lb := settled(lbA)
		evals(t, h, 20)
		if got := settled(lbA); got != lb {
			t.Fatalf("balancer A carried %d bytes after the owner was known", got-lb)
		}
	})

	t.Run("an unreachable owner: calls and the lease go through the balancer", func(t *testing.T) {
		px.Refuse(true)
		px.Break()
		lb := settled(lbB)
		start := time.Now()
		evals(t, s, 20)
		d := time.Since(start)
		if settled(lbB) == lb {
			t.Fatal("the calls did not go through the balancer")
		}
		// The lease broke with the owner's connection and was taken again
		// through the balancer: the session outlives the grace.
		time.Sleep(1500 * time.Millisecond)
		evals(t, s, 1)
		if !s.Leased() {
			t.Fatalf("lease: %v", s.LeaseErr())
		}
		t.Logf("20 calls through the balancer after the owner became unreachable: %v", d)
	})
}

// TestRouteToOwnerDeadAdvertisedAddress: a replica whose advertised address
// nobody can reach; the client keeps working through its dial target.
func TestRouteToOwnerDeadAdvertisedAddress(t *testing.T) {
	dead := freeAddr(t)
	r := startReplica(t, "--advertise_address="+dead, "--peers="+dead)
	c, err := pyexec.Dial(r.Addr, pyexec.WithInsecure(), pyexec.WithRouteToOwner())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	start := time.Now()
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner() != dead {
		t.Fatalf("Owner() = %q, want %s", s.Owner(), dead)
	}
	mustExec(t, s, "x = 1")
	for i := 0; i < 20; i++ {
		if v := mustEval(t, s, "x"); v != int64(1) {
			t.Fatal(v)
		}
	}
	if d := time.Since(start); d > 3*time.Second || !s.Leased() {
		t.Fatalf("Bind and 21 calls took %v; leased %v", d, s.Leased())
	} else {
		t.Logf("Bind and 21 calls with a dead owner address: %v", d)
	}
}

// TestSessionMovedOnDrain: replica A drains (SIGTERM) and moves its
// sessions to B; clients behind a balancer that fails over from A to B
// (one of them routing to owners) keep calling without an error, the one
// UNAVAILABLE of a move being retried, and their leases are taken again on
// B.
func TestSessionMovedOnDrain(t *testing.T) {
	addrA, addrB := freeAddr(t), freeAddr(t)
	peers := "--peers=" + addrA + "," + addrB
	// Replicas move sessions under a shared peer secret.
	secret := filepath.Join(t.TempDir(), "peer-secret")
	if err := os.WriteFile(secret, []byte(pyexec.NewCallID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The move must finish within A's --drain_timeout: 5 s rather than 1 s,
	// and B keeps 3 warm workers so that restoring needs no spawn, because
	// on a loaded machine (CI, 2 cores) a restore that spawns a worker can
	// take over a second and the session then stays on A and dies with it.
	a := startReplica(t, "--listen="+addrA, peers, "--peer_secret_file="+secret, "--drain_timeout=5s")
	startReplica(t, "--listen="+addrB, peers, "--peer_secret_file="+secret, "--workers=3")
	lb := startProxy(t, addrA, addrB)
	ctx := testCtx(t)
	type client struct {
		name    string
		s       *pyexec.Session
		errs    []error
		n       int
		slowest time.Duration
	}
	var clients []*client
	for _, route := range []bool{false, true} {
		opts := []pyexec.Option{pyexec.WithInsecure()}
		name := "balancer only"
		if route {
			opts = append(opts, pyexec.WithRouteToOwner())
			name = "routing to owners"
		}
		c, err := pyexec.Dial(lb.Addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.Bind(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s, "x = 1")
		clients = append(clients, &client{name: name, s: s})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func(cl *client) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				v, err := cl.s.Eval(ctx, "x")
				if d := time.Since(start); d > cl.slowest {
					cl.slowest = d
				}
				cl.n++
				if err == nil && v != int64(1) {
					err = fmt.Errorf("x = %v", v)
				}
				if err != nil {
					cl.errs = append(cl.errs, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(cl)
	}
	time.Sleep(200 * time.Millisecond)
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		t.Fatal("replica A did not exit within 20 s of SIGTERM")
	}
	// Past the lease grace after A is gone: the sessions live on B only if
	// their leases were taken again there.
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	for _, cl := range clients {
		if len(cl.errs) > 0 {
			t.Errorf("%s: %d of %d calls failed during the move; first: %v", cl.name, len(cl.errs), cl.n, cl.errs[0])
		}
		if v := mustEval(t, cl.s, "x"); v != int64(1) || !cl.s.Leased() {
			t.Errorf("%s: x = %v, leased %v (%v)", cl.name, v, cl.s.Leased(), cl.s.LeaseErr())
		}
		t.Logf("%s: %d calls across the move, %d failed, the slowest took %v", cl.name, cl.n,
			len(cl.errs), cl.slowest)
	}
}
