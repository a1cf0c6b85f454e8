package pyexec

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

const (
	leaseBackoffMin = 25 * time.Millisecond
	leaseBackoffMax = time.Second
)

// lease is a held Attach stream of a session, taken again whenever it breaks
// while the session lives.
type lease struct {
	cancel context.CancelFunc
	done   chan struct{}
	// Set before done is closed.
	err   error
	grace time.Duration // guarded by Session.mu
}

// errNoLeases: the server does not implement Attach (an older pyexecd).
var errNoLeases = errors.New("pyexec: the server has no leases (Attach is unimplemented)")

func ctxStatus(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &StatusError{Code: codes.DeadlineExceeded, Message: err.Error(), kind: ErrTimeout}
	}
	return &StatusError{Code: codes.Canceled, Message: err.Error(), kind: ErrCancelled}
}

// Lease holds a lease on the session until ctx is done, Unbind or
// Client.Close: while a lease is held the session does not idle out, and
// once the last lease on it ends (also when this process dies or loses its
// connection) the server unbinds it after its --lease_grace. Bind leases
// by default; Lease is for a session from Attach or bound WithoutLease. It
// returns once the server holds the lease, and is a no-op while one is
// held. A lease that breaks (a lost connection, the session moved to
// another replica) is taken again, with back-off, as long as the session
// lives.
func (s *Session) Lease(ctx context.Context) error {
	wctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	return s.startLease(wctx, ctx)
}

func (s *Session) startLease(waitCtx, leaseCtx context.Context) error {
	if s.c.life.Err() != nil {
		return &StatusError{Code: codes.Canceled, Message: "the client is closed", kind: ErrCancelled}
	}
	s.mu.Lock()
	if l := s.lease; l != nil {
		select {
		case <-l.done:
		default:
			s.mu.Unlock()
			return nil
		}
	}
	lctx, cancel := context.WithCancel(leaseCtx)
	l := &lease{cancel: cancel, done: make(chan struct{})}
	s.lease = l
	s.mu.Unlock()
	first := make(chan error, 1)
	s.c.leases.Add(1)
	go func() {
		defer s.c.leases.Done()
		// Close ends every lease of the client.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-s.c.life.Done():
				cancel()
			case <-stop:
			}
		}()
		s.holdLease(lctx, l, first)
	}()
	select {
	case err := <-first:
		if errors.Is(err, errNoLeases) {
			return nil
		}
		return err
	case <-waitCtx.Done():
		cancel()
		return ctxStatus(waitCtx.Err())
	}
}

// holdLease keeps an Attach stream open on s until ctx is done or the
// session is gone; first gets nil once the server holds the lease, or the
// error that ended it before.
func (s *Session) holdLease(ctx context.Context, l *lease, first chan<- error) {
	held := false
	var end error
	defer func() {
		if !held {
			first <- end
		}
		l.err = end
		close(l.done)
		l.cancel()
	}()
	backoff := time.Duration(0)
	for {
		stub, owner := s.c.route(ctx, s)
		actx, acancel := context.WithCancel(ctx)
		var copts []grpc.CallOption
		if held && owner == "" {
			// Taking it again through the dial target: wait for the
			// channel to reconnect rather than fail fast while it does.
			copts = append(copts, grpc.WaitForReady(true))
		}
		stream, err := stub.Attach(actx, &pb.AttachRequest{Session: s.token}, copts...)
		var ev *pb.AttachEvent
		if err == nil {
			ev, err = stream.Recv()
		}
		if err == nil {
			if hdr, herr := stream.Header(); herr == nil && s.c.routeToOwner && owner == "" {
				if v := hdr.Get(mdOwner); len(v) > 0 {
					s.learnOwner(v[0])
				}
			}
			if e := ev.GetEnded(); e != nil {
				acancel()
				end = sessionEnded(e.Reason)
				return
			}
			att := ev.GetAttached()
			if att == nil {
				err = status.Error(codes.Internal, "the lease's first event is not 'attached'")
			} else {
				s.mu.Lock()
				l.grace = time.Duration(att.GraceSeconds) * time.Second
				s.mu.Unlock()
				if !held {
					held = true
					first <- nil
				}
				backoff = 0
				for {
					ev, err = stream.Recv()
					if err != nil {
						break
					}
					if e := ev.GetEnded(); e != nil {
						acancel()
						end = sessionEnded(e.Reason)
						return
					}
				}
			}
		}
		acancel()
		if ctx.Err() != nil {
			end = ctx.Err()
			return
		}
		if err == io.EOF {
			// Ended without its last event: take it again.
			err = status.Error(codes.Unavailable, "the lease stream ended")
		}
		code := status.Code(err)
		err = fromCall(ctx, err)
		switch {
		case isErr(err, ErrSessionNotFound):
			end = err
			return
		case code == codes.Unimplemented && !held:
			end = errNoLeases
			return
		case !held && (code == codes.Unauthenticated || code == codes.PermissionDenied ||
			code == codes.InvalidArgument):
			end = err
			return
		case isErr(err, ErrUnavailable) && owner != "":
			// The owner's channel failed: the dial target forwards.
			s.c.ownerFailed(owner)
			s.forgetOwner(owner)
			continue
		}
		// Moved (UNAVAILABLE), a lost connection or anything else: take the
		// lease again, at once the first time, then with back-off.
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				end = ctx.Err()
				return
			case <-t.C:
			}
		}
		switch {
		case backoff == 0:
			backoff = leaseBackoffMin
		case backoff < leaseBackoffMax:
			backoff *= 2
			if backoff > leaseBackoffMax {
				backoff = leaseBackoffMax
			}
		}
	}
}

func sessionEnded(reason string) error {
	return &StatusError{Code: codes.NotFound, Message: "the session ended: " + reason,
		kind: ErrSessionNotFound}
}

// endLease ends the session's lease, if any (Unbind, a lost session).
func (s *Session) endLease() {
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l != nil {
		l.cancel()
	}
}

// Leased reports whether the session's lease is held (or being taken again
// after a break).
func (s *Session) Leased() bool {
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l == nil {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// LeaseDone is closed when the session's lease ends (at once if it has
// none): its context is done, Unbind or Client.Close, or the session ended
// on the server (unbound elsewhere, its worker died).
func (s *Session) LeaseDone() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == nil {
		return closedChan
	}
	return s.lease.done
}

// LeaseErr says why the lease ended, once LeaseDone is closed: the lease
// context's error (context.Canceled also for Unbind and Client.Close), or
// an ErrSessionNotFound whose message gives the server's reason when the
// session ended. Nil while the lease is held or when there was none.
func (s *Session) LeaseErr() error {
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	select {
	case <-l.done:
		if errors.Is(l.err, errNoLeases) {
			return nil
		}
		return l.err
	default:
		return nil
	}
}

// LeaseGrace is how long the server keeps the session after its last
// lease ends (its --lease_grace), as it said when the lease was taken.
func (s *Session) LeaseGrace() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == nil {
		return 0
	}
	return s.lease.grace
}
