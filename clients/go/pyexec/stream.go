package pyexec

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// EventKind says what a stream Event carries.
type EventKind int

const (
	// EventStdout: Text is a chunk of the code's stdout, sent as it is
	// written (flushed at line ends or at least every 50 ms).
	EventStdout EventKind = iota + 1
	// EventStderr: Text is a chunk of stderr.
	EventStderr
	// EventValue: Value is one item of an iterator or generator result of
	// CallStream, or its one result when it is not an iterator.
	EventValue
)

func (k EventKind) String() string {
	switch k {
	case EventStdout:
		return "stdout"
	case EventStderr:
		return "stderr"
	case EventValue:
		return "value"
	}
	return "unknown"
}

// Event is one event of a Stream.
type Event struct {
	Kind  EventKind
	Text  string // EventStdout, EventStderr
	Value any    // EventValue, mapped as for Eval (a Ref on a bound session)
}

// Stream is a running ExecStream or CallStream, read like bufio.Scanner or
// sql.Rows:
//
//	st, err := s.CallStream(ctx, "__main__", "gen", nil)
//	if err != nil { ... }
//	defer st.Close()
//	for st.Next() {
//		ev := st.Event()
//		...
//	}
//	if err := st.Err(); err != nil { ... } // *PythonError or *StatusError
//
// Close (or cancelling ctx) before the end cancels the RPC: the server
// interrupts the Python code and a bound session keeps its state. The
// ctx deadline (or WithDefaultTimeout) bounds the whole stream. A Stream is
// for one goroutine; Close may be called from any goroutine.
type Stream struct {
	c     *Client
	s     *Session        // nil: stateless
	ctx   context.Context // the caller's, with the deadline
	mctx  context.Context // ctx with the call's metadata
	open  openFunc
	rpc   streamRPC
	owner string // the owner the RPC went to; "": the dial target
	// Before the first event, an UNAVAILABLE reopens the stream (see do).
	gotEvent bool
	retry    retrier

	mu             sync.Mutex // guards cancelAttempt, for Close
	cancelAttempt  context.CancelFunc
	cancelDeadline context.CancelFunc

	ev     Event
	err    error
	done   bool
	closed atomic.Bool // set by Close, possibly from another goroutine
}

// streamRPC is an open ExecStream or CallStream.
type streamRPC interface {
	recv() (*pb.CallEvent, error)
	Header() (metadata.MD, error)
}

type openFunc func(ctx context.Context, stub pb.PyExecClient) (streamRPC, error)

// start opens the RPC on the session's route.
func (st *Stream) start() error {
	stub, owner := st.c.route(st.ctx, st.s)
	actx, cancel := context.WithCancel(st.mctx)
	rpc, err := st.open(actx, stub)
	st.mu.Lock()
	st.cancelAttempt = cancel
	st.mu.Unlock()
	if st.closed.Load() {
		cancel() // Close came while it was opening
	}
	if err != nil {
		return err
	}
	st.rpc, st.owner = rpc, owner
	return nil
}

// reopen decides, for an error before the first event, whether to open the
// stream again (as do does for other calls): at once through the dial
// target after the owner failed, or once after a pause.
func (st *Stream) reopen(err error) bool {
	if st.gotEvent || st.s == nil || st.closed.Load() || st.ctx.Err() != nil ||
		!isErr(err, ErrUnavailable) {
		return false
	}
	if st.owner != "" {
		st.c.ownerFailed(st.owner)
		st.s.forgetOwner(st.owner)
	} else if pause, ok := st.retry.next(err); !ok || !sleepCtx(st.ctx, pause) {
		return false
	}
	st.mu.Lock()
	st.cancelAttempt()
	st.mu.Unlock()
	return st.start() == nil
}

// Next waits for the next event and reports whether there is one. It
// returns false at the end of the stream, on an error (see Err) and after
// Close.
func (st *Stream) Next() bool {
	if st.done || st.closed.Load() {
		st.done = true
		return false
	}
	e, err := st.rpc.recv()
	for err != nil && err != io.EOF && st.reopen(fromCall(st.ctx, err)) {
		e, err = st.rpc.recv()
	}
	if err == nil && !st.gotEvent {
		st.gotEvent = true
		if st.c.routeToOwner && st.s != nil && st.owner == "" {
			if hdr, herr := st.rpc.Header(); herr == nil {
				if v := hdr.Get(mdOwner); len(v) > 0 {
					st.s.learnOwner(v[0])
				}
			}
		}
	}
	if err != nil && st.closed.Load() {
		// Our own Close cancelled the RPC: an early end, not a failure.
		st.finish(nil)
		return false
	}
	if err == io.EOF {
		st.finish(&StatusError{Code: codes.Internal,
			Message: "stream ended without its end event", kind: ErrRPC})
		return false
	}
	if err != nil {
		st.finish(fromCall(st.ctx, err))
		return false
	}
	switch x := e.Event.(type) {
	case *pb.CallEvent_Stdout:
		st.ev = Event{Kind: EventStdout, Text: x.Stdout}
	case *pb.CallEvent_Stderr:
		st.ev = Event{Kind: EventStderr, Text: x.Stderr}
	case *pb.CallEvent_Value:
		v, err := FromValue(x.Value)
		if err != nil {
			st.finish(err)
			return false
		}
		st.ev = Event{Kind: EventValue, Value: v}
	case *pb.CallEvent_End:
		// The output was delivered as events, so the error does not repeat it.
		st.finish(pyError(x.End.GetError(), "", ""))
		return false
	default:
		st.finish(&StatusError{Code: codes.Internal,
			Message: "stream event of unknown kind (newer server?)", kind: ErrRPC})
		return false
	}
	return true
}

// Event is the event Next moved to.
func (st *Stream) Event() Event { return st.ev }

// Err is how the stream ended: nil when it ended OK (or was closed early),
// a *PythonError when the code raised (after the events it produced), or a
// *StatusError (ErrTimeout, ErrCancelled, ErrSessionNotFound, ...).
func (st *Stream) Err() error { return st.err }

// Close cancels the RPC if it is still running (the server interrupts the
// Python code; a bound session keeps its state) and frees it. Calling it
// after the end is harmless; it always returns nil.
func (st *Stream) Close() error {
	st.closed.Store(true)
	st.cancel()
	return nil
}

func (st *Stream) cancel() {
	st.mu.Lock()
	st.cancelAttempt()
	st.mu.Unlock()
	st.cancelDeadline()
}

func (st *Stream) finish(err error) {
	st.err = err
	st.done = true
	st.cancel()
}

// openStream opens a stream of session s (nil: stateless) under a
// cancellable ctx carrying the call's deadline and metadata, routed to the
// session's owner; Next opens it again if it fails UNAVAILABLE before its
// first event, as do does for other calls.
func (c *Client) openStream(ctx context.Context, s *Session, open openFunc) (*Stream, error) {
	ctx, cancelDeadline := c.callCtx(ctx)
	st := &Stream{c: c, s: s, ctx: ctx, mctx: callMetadata(ctx, true), open: open,
		cancelDeadline: cancelDeadline}
	if err := st.start(); err != nil {
		st.cancel()
		return nil, fromCall(ctx, err)
	}
	return st, nil
}

// execRPC reads an ExecStream as CallEvents: ExecEvent is CallEvent without
// values, so one reader serves both.
type execRPC struct{ pb.PyExec_ExecStreamClient }

func (r execRPC) recv() (*pb.CallEvent, error) {
	e, err := r.Recv()
	if err != nil {
		return nil, err
	}
	switch x := e.Event.(type) {
	case *pb.ExecEvent_Stdout:
		return &pb.CallEvent{Event: &pb.CallEvent_Stdout{Stdout: x.Stdout}}, nil
	case *pb.ExecEvent_Stderr:
		return &pb.CallEvent{Event: &pb.CallEvent_Stderr{Stderr: x.Stderr}}, nil
	case *pb.ExecEvent_End:
		return &pb.CallEvent{Event: &pb.CallEvent_End{End: x.End}}, nil
	}
	return &pb.CallEvent{}, nil
}

type callRPC struct{ pb.PyExec_CallStreamClient }

func (r callRPC) recv() (*pb.CallEvent, error) { return r.Recv() }

func (c *Client) execStream(ctx context.Context, s *Session, code string, opts []CallOption) (*Stream, error) {
	cfg := applyCall(opts)
	if cfg.output != nil {
		return nil, invalidArgument("WithOutput does not apply to streams: output arrives as events")
	}
	if cfg.funcs != nil {
		return nil, invalidArgument("WithFunction does not apply to streams")
	}
	req, err := execRequest(s.tokenOrEmpty(), code, cfg)
	if err != nil {
		return nil, err
	}
	return c.openStream(ctx, s, func(ctx context.Context, stub pb.PyExecClient) (streamRPC, error) {
		rpc, err := stub.ExecStream(ctx, req)
		return execRPC{rpc}, err
	})
}

func (c *Client) callStream(ctx context.Context, s *Session, module, function string, args []any, opts []CallOption) (*Stream, error) {
	cfg := applyCall(opts)
	if cfg.output != nil {
		return nil, invalidArgument("WithOutput does not apply to streams: output arrives as events")
	}
	if cfg.funcs != nil {
		return nil, invalidArgument("WithFunction does not apply to streams")
	}
	req, err := callRequest(s.tokenOrEmpty(), module, function, args, cfg)
	if err != nil {
		return nil, err
	}
	return c.openStream(ctx, s, func(ctx context.Context, stub pb.PyExecClient) (streamRPC, error) {
		rpc, err := stub.CallStream(ctx, req)
		return callRPC{rpc}, err
	})
}

// ExecStream executes statements on a pooled interpreter and streams their
// output as it is written. Option: WithLocals.
func (c *Client) ExecStream(ctx context.Context, code string, opts ...CallOption) (*Stream, error) {
	return c.execStream(ctx, nil, code, opts)
}

// CallStream calls module.function(*args, **kwargs) on a pooled interpreter
// and streams its output and its result: one EventValue per item when the
// result is an iterator or generator, else one for the result. Option:
// WithKwargs.
func (c *Client) CallStream(ctx context.Context, module, function string, args []any, opts ...CallOption) (*Stream, error) {
	return c.callStream(ctx, nil, module, function, args, opts)
}

// ExecStream executes statements in the session, streaming their output.
func (s *Session) ExecStream(ctx context.Context, code string, opts ...CallOption) (*Stream, error) {
	return s.c.execStream(ctx, s, code, opts)
}

// CallStream calls module.function(*args, **kwargs) in the session,
// streaming its output and the items of its result (items with no Value
// kind come as Refs). WithResultAsRef sends an iterator result itself as one
// Ref instead.
func (s *Session) CallStream(ctx context.Context, module, function string, args []any, opts ...CallOption) (*Stream, error) {
	return s.c.callStream(ctx, s, module, function, args, opts)
}

// CallMethod calls ref.method(*args, **kwargs) on the session's object;
// method may be a dotted path ("fit", "model.predict"). Options: WithKwargs,
// WithResultAsRef, WithOutput. A ref the session does not hold fails with
// ErrUnknownRef.
func (s *Session) CallMethod(ctx context.Context, ref Ref, method string, args []any, opts ...CallOption) (any, error) {
	opts = append(opts[:len(opts):len(opts)], func(c *callConfig) { c.targetRef = ref.ID })
	return s.c.call(ctx, s, "", method, args, opts)
}

// CallMethodStream is CallMethod as a stream, like CallStream.
func (s *Session) CallMethodStream(ctx context.Context, ref Ref, method string, args []any, opts ...CallOption) (*Stream, error) {
	opts = append(opts[:len(opts):len(opts)], func(c *callConfig) { c.targetRef = ref.ID })
	return s.c.callStream(ctx, s, "", method, args, opts)
}

// GetAttr reads ref.attr (attr may be dotted: "config.name") from the
// session's object. Options: WithResultAsRef, WithOutput.
func (s *Session) GetAttr(ctx context.Context, ref Ref, attr string, opts ...CallOption) (any, error) {
	opts = append(opts[:len(opts):len(opts)], func(c *callConfig) { c.targetRef, c.getAttr = ref.ID, true })
	return s.c.call(ctx, s, "", attr, nil, opts)
}

// Release drops refs held by the session so their objects can be freed,
// and returns how many were live (unknown or already released ones are
// ignored). It waits behind a call running on the session.
func (s *Session) Release(ctx context.Context, refs ...Ref) (int, error) {
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	ctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	var resp *pb.ReleaseResponse
	err := s.c.do(ctx, s, false, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
		resp, err = stub.Release(ctx, &pb.ReleaseRequest{Session: s.token, RefIds: ids}, grpc.Header(hdr))
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(resp.Released), nil
}
