package pyexec

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Interrupt raises KeyboardInterrupt in the call running on the session, or
// else in the first one waiting, if any (from another goroutine than the
// caller's). That call ends with ErrCancelled and the session keeps its
// state. It reports whether there was such a call. To interrupt one call
// you started, also before it reaches the server, use Running.Interrupt
// or InterruptCall.
func (s *Session) Interrupt(ctx context.Context) (bool, error) {
	return s.InterruptCall(ctx, "")
}

// InterruptCall interrupts the call of this session named id (see
// WithCallID): if it is running or waiting it ends with ErrCancelled; if
// it has not reached the server yet, the server keeps the interrupt for a
// while and the call ends ErrCancelled as soon as it comes. So an
// interrupt sent right after starting a call is never lost. It reports
// false when the named call has already ended. An empty id is Interrupt.
func (s *Session) InterruptCall(ctx context.Context, id string) (bool, error) {
	ctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	var resp *pb.InterruptResponse
	err := s.c.do(ctx, s, false, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
		resp, err = stub.Interrupt(ctx, &pb.InterruptRequest{Session: s.token, CallId: id},
			grpc.Header(hdr))
		return err
	})
	if err != nil {
		return false, err
	}
	return resp.Interrupted, nil
}

// Running is a call started with GoEval, GoExec or GoCall: it runs in its
// own goroutine and can be interrupted by name.
//
//	r := s.GoExec(ctx, "while True: pass")
//	ok, err := r.Interrupt(ctx) // true: that very call is interrupted
//	_, err = r.Wait()           // ErrCancelled
type Running struct {
	s    *Session
	id   string
	done chan struct{}
	v    any
	err  error
}

func (s *Session) start(ctx context.Context, f func(ctx context.Context) (any, error)) *Running {
	r := &Running{s: s, id: NewCallID(), done: make(chan struct{})}
	ctx = WithCallID(ctx, r.id)
	go func() {
		defer close(r.done)
		r.v, r.err = f(ctx)
	}()
	return r
}

// GoEval starts Eval in a goroutine and returns at once.
func (s *Session) GoEval(ctx context.Context, code string, opts ...CallOption) *Running {
	return s.start(ctx, func(ctx context.Context) (any, error) { return s.Eval(ctx, code, opts...) })
}

// GoExec starts Exec in a goroutine and returns at once; Wait's value is nil.
func (s *Session) GoExec(ctx context.Context, code string, opts ...CallOption) *Running {
	return s.start(ctx, func(ctx context.Context) (any, error) { return nil, s.Exec(ctx, code, opts...) })
}

// GoCall starts Call in a goroutine and returns at once.
func (s *Session) GoCall(ctx context.Context, module, function string, args []any, opts ...CallOption) *Running {
	return s.start(ctx, func(ctx context.Context) (any, error) {
		return s.Call(ctx, module, function, args, opts...)
	})
}

// ID is the call's x-pyexec-call-id.
func (r *Running) ID() string { return r.id }

// Interrupt interrupts this call, whether it is running, waiting, or not
// yet at the server (InterruptCall). It reports false when the call has
// already ended.
func (r *Running) Interrupt(ctx context.Context) (bool, error) {
	return r.s.InterruptCall(ctx, r.id)
}

// Done is closed when the call has ended.
func (r *Running) Done() <-chan struct{} { return r.done }

// Wait waits for the call to end and returns its result (nil for Exec) and
// error, as Eval, Exec or Call would have.
func (r *Running) Wait() (any, error) {
	<-r.done
	return r.v, r.err
}
