package pyexec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Metadata the client sends and reads.
const (
	mdCallID   = "x-pyexec-call-id"  // names each call, for InterruptCall
	mdCallback = "x-pyexec-callback" // a call made while a callback runs
	mdOwner    = "x-pyexec-owner"    // a forwarding replica names the owner
)

const (
	// ownerConnectWait bounds how long a call waits for a new channel to
	// the session's owner before it goes through the dial target instead.
	ownerConnectWait = time.Second
	// ownerCooldown: an owner address that failed is not tried again for
	// this long (its sessions' calls go through the dial target).
	ownerCooldown = 10 * time.Second
	// retryPause is the pause before the one transparent retry of a session
	// call that failed UNAVAILABLE (a draining replica, a lost connection).
	retryPause = 100 * time.Millisecond
	// A session that is moving to another replica (its replica drains)
	// answers UNAVAILABLE "is moving" until the move is done (about a
	// second): such calls did not run and are retried, with back-off from
	// retryPause up to moveRetryMaxPause, for up to moveRetryFor.
	moveRetryMaxPause = time.Second
	moveRetryFor      = 15 * time.Second
)

// retrier decides whether a session call that failed UNAVAILABLE through
// the dial target is sent again, and after which pause. The "is moving"
// answers and the other UNAVAILABLEs are counted apart: a call that waited
// out a move still has its one retry when the old replica then ends it as
// it shuts down (a bare CANCELLED).
type retrier struct {
	start  time.Time
	others int // UNAVAILABLEs other than "is moving"
	pause  time.Duration
}

func (r *retrier) next(err error) (time.Duration, bool) {
	if r.start.IsZero() {
		r.start, r.pause = time.Now(), retryPause
	}
	var se *StatusError
	moving := errors.As(err, &se) && strings.Contains(se.Message, "is moving to another replica")
	if !moving {
		if r.others++; r.others > 1 {
			return 0, false
		}
		return retryPause, true
	}
	if time.Since(r.start) > moveRetryFor {
		return 0, false
	}
	p := r.pause
	if r.pause *= 2; r.pause > moveRetryMaxPause {
		r.pause = moveRetryMaxPause
	}
	return p, true
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type ctxKey int

const (
	callIDKey ctxKey = iota
	callbackKey
)

// WithCallID names the calls made with ctx: each one sends id as its
// x-pyexec-call-id, so that Session.InterruptCall(ctx, id) interrupts that
// very call, also when the Interrupt reaches the server first (the server
// keeps it for a while). Use one id per call; NewCallID makes one.
// Session.GoEval, GoExec and GoCall do this for you.
func WithCallID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, callIDKey, id)
}

var callIDPrefix, callIDSeq = func() (string, *atomic.Uint64) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("pyexec: crypto/rand: " + err.Error())
	}
	return "go-" + hex.EncodeToString(b) + "-", new(atomic.Uint64)
}()

// NewCallID returns an id no other call uses (a random per-process prefix
// and a counter).
func NewCallID() string {
	return callIDPrefix + strconv.FormatUint(callIDSeq.Add(1), 10)
}

// callMetadata returns ctx with the metadata of one call: its call id (the
// one WithCallID set, else a new one) when named, and the id of the callback
// ctx comes from, if any (re-entry).
func callMetadata(ctx context.Context, named bool) context.Context {
	var kv []string
	if named {
		id, _ := ctx.Value(callIDKey).(string)
		if id == "" {
			id = NewCallID()
		}
		kv = append(kv, mdCallID, id)
	}
	if cb, _ := ctx.Value(callbackKey).(string); cb != "" {
		kv = append(kv, mdCallback, cb)
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// owners holds the channels to sessions' owner replicas (WithRouteToOwner),
// one per address, closed with the client.
type owners struct {
	mu    sync.Mutex
	conns map[string]*ownerConn
}

type ownerConn struct {
	conn      *grpc.ClientConn // nil: Dial failed
	stub      pb.PyExecClient
	deadUntil time.Time
}

// ownerStub returns a ready channel to addr, or nil when calls should go
// through the dial target: the address failed recently, or its channel is
// not ready within ownerConnectWait.
func (c *Client) ownerStub(ctx context.Context, addr string) pb.PyExecClient {
	c.owners.mu.Lock()
	if c.closed {
		c.owners.mu.Unlock()
		return nil
	}
	oc := c.owners.conns[addr]
	if oc == nil {
		oc = &ownerConn{}
		conn, err := grpc.Dial(addr, c.dialOpts...)
		if err != nil {
			oc.deadUntil = time.Now().Add(ownerCooldown)
		} else {
			oc.conn, oc.stub = conn, pb.NewPyExecClient(conn)
		}
		c.owners.conns[addr] = oc
	}
	if oc.conn == nil || time.Now().Before(oc.deadUntil) {
		c.owners.mu.Unlock()
		return nil
	}
	c.owners.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, ownerConnectWait)
	defer cancel()
	for {
		switch st := oc.conn.GetState(); st {
		case connectivity.Ready:
			return oc.stub
		case connectivity.TransientFailure, connectivity.Shutdown:
			c.ownerFailed(addr)
			return nil
		default:
			if !oc.conn.WaitForStateChange(wctx, st) {
				if ctx.Err() == nil {
					// Not connected in time: a blackholed or hung address.
					c.ownerFailed(addr)
				}
				return nil
			}
		}
	}
}

// ownerFailed stops routing to addr for ownerCooldown.
func (c *Client) ownerFailed(addr string) {
	c.owners.mu.Lock()
	if oc := c.owners.conns[addr]; oc != nil {
		oc.deadUntil = time.Now().Add(ownerCooldown)
	}
	c.owners.mu.Unlock()
}

func (c *Client) closeOwners() {
	c.owners.mu.Lock()
	conns := c.owners.conns
	c.owners.conns = map[string]*ownerConn{}
	c.owners.mu.Unlock()
	for _, oc := range conns {
		if oc.conn != nil {
			oc.conn.Close()
		}
	}
}

// route picks where a call on s goes: its owner's channel when routing is
// on and the owner is known and reachable, else the dial target ("").
func (c *Client) route(ctx context.Context, s *Session) (pb.PyExecClient, string) {
	if !c.routeToOwner || s == nil {
		return c.stub, ""
	}
	owner := s.ownerAddr()
	if owner == "" {
		return c.stub, ""
	}
	if stub := c.ownerStub(ctx, owner); stub != nil {
		return stub, owner
	}
	return c.stub, ""
}

// learnOwner records where s lives, from a Bind's owner or a forwarded
// answer's x-pyexec-owner. It is a routing hint only: the owner gets the
// same credentials as the dial target and checks them itself.
func (s *Session) learnOwner(addr string) {
	if addr == "" || addr == s.c.target {
		return
	}
	s.mu.Lock()
	s.owner = addr
	s.mu.Unlock()
}

func (s *Session) ownerAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner
}

func (s *Session) forgetOwner(addr string) {
	s.mu.Lock()
	if s.owner == addr {
		s.owner = ""
	}
	s.mu.Unlock()
}

// accepted wraps an error of a call the server had already accepted (a
// Run that asked for a callback, a stream that sent an event): it is not
// retried.
type accepted struct{ err error }

func (a accepted) Error() string { return a.err.Error() }

// attemptFunc makes one attempt of an RPC on stub with ctx (which carries
// the call's metadata), storing the response headers in hdr.
type attemptFunc func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) error

// do runs one RPC of session s (nil: stateless) with routing and retries:
//   - it goes to s's owner when routing is on (WithRouteToOwner), else to the
//     dial target; an UNAVAILABLE from the owner (or an owner that cannot be
//     reached) sends it to the dial target instead, at once;
//   - a session call that fails UNAVAILABLE through the dial target (a
//     draining replica; the call did not run) is retried once after a short
//     pause, with the same call id; while the server says the session is
//     moving to another replica, it is retried with back-off until the
//     move is done (see retrier).
//
// named: the call carries x-pyexec-call-id. The error is a *StatusError,
// with a bare CANCELLED the client did not cause mapped to ErrUnavailable.
func (c *Client) do(ctx context.Context, s *Session, named bool, f attemptFunc) error {
	mctx := callMetadata(ctx, named)
	var retry retrier
	for {
		stub, owner := c.route(ctx, s)
		var hdr metadata.MD
		err := f(mctx, stub, &hdr)
		if s != nil && c.routeToOwner && owner == "" {
			if v := hdr.Get(mdOwner); len(v) > 0 {
				s.learnOwner(v[0])
			}
		}
		if err == nil {
			return nil
		}
		var acc accepted
		if errors.As(err, &acc) {
			return fromCall(ctx, acc.err)
		}
		err = fromCall(ctx, err)
		if !isErr(err, ErrUnavailable) || s == nil || ctx.Err() != nil {
			return err
		}
		if owner != "" {
			// The owner's channel failed: the dial target forwards.
			c.ownerFailed(owner)
			s.forgetOwner(owner)
			continue
		}
		pause, ok := retry.next(err)
		if !ok || !sleepCtx(ctx, pause) {
			return err
		}
	}
}
