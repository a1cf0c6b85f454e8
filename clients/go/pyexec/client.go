// Package pyexec is the Go client of pyexec, a gRPC service that runs Python
// for programs written in any language.
//
//	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
//	defer c.Close()
//	v, err := c.Eval(ctx, "6*7")                         // int64(42)
//	err = c.Session(ctx, func(s *pyexec.Session) error { // bound, always unbound
//		if err := s.Exec(ctx, "import math; r = 2"); err != nil {
//			return err
//		}
//		area, err := s.Eval(ctx, "math.pi * r**2")
//		...
//	})
//
// Every call takes a context.Context first: its deadline is sent as the
// gRPC deadline (the server interrupts the Python code when it passes) and
// cancelling it interrupts the code too. A Python exception comes back as a
// *PythonError; every other failure is a *StatusError wrapping one sentinel
// (ErrSessionNotFound, ErrTimeout, ErrPoolExhausted, ...).
package pyexec

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Client is a connection to one pyexecd. It is safe for concurrent use; one
// Client per server is enough (gRPC multiplexes calls on one connection).
type Client struct {
	conn           *grpc.ClientConn
	stub           pb.PyExecClient
	defaultTimeout time.Duration
	contexts       []*Context
}

// Dial connects to target ("host:port", or any gRPC target). Exactly one of
// WithTLS or WithInsecure is required. Like grpc.Dial it does not wait for
// the connection: a server that is down shows as ErrUnavailable on calls.
func Dial(target string, opts ...Option) (*Client, error) {
	cfg := dialConfig{numContexts: defaultContexts()}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	var dopts []grpc.DialOption
	switch {
	case cfg.tls != nil && cfg.insecure:
		return nil, fmt.Errorf("pyexec: both WithTLS and WithInsecure given")
	case cfg.tls != nil:
		dopts = append(dopts, grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls)))
	case cfg.insecure:
		dopts = append(dopts, grpc.WithInsecure())
	default:
		return nil, fmt.Errorf("pyexec: Dial needs WithTLS(...) or WithInsecure()")
	}
	if cfg.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(
			bearer{md: map[string]string{"authorization": "Bearer " + cfg.token}}))
	}
	dopts = append(dopts, cfg.extra...)
	conn, err := grpc.Dial(target, dopts...)
	if err != nil {
		return nil, fromRPC(err)
	}
	c := &Client{conn: conn, stub: pb.NewPyExecClient(conn), defaultTimeout: cfg.defaultTimeout}
	c.contexts = make([]*Context, cfg.numContexts)
	for i := range c.contexts {
		c.contexts[i] = &Context{c: c, n: i + 1}
	}
	return c, nil
}

// Close unbinds the numbered contexts that were bound (best effort, a few
// seconds at most) and closes the connection. Sessions from Bind are the
// caller's to unbind; the server's idle timeout reclaims forgotten ones.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, x := range c.contexts {
		x.release(ctx)
	}
	return c.conn.Close()
}

// Conn returns the underlying connection, for RPCs this package does not
// wrap yet.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.defaultTimeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			return context.WithTimeout(ctx, c.defaultTimeout)
		}
	}
	return ctx, func() {}
}

// Eval evaluates one Python expression on a pooled interpreter (no state is
// kept between stateless calls) and returns its value. Options: WithLocals,
// WithOutput.
func (c *Client) Eval(ctx context.Context, code string, opts ...CallOption) (any, error) {
	return c.eval(ctx, "", code, opts)
}

// Exec executes Python statements on a pooled interpreter. Options:
// WithLocals, WithOutput.
func (c *Client) Exec(ctx context.Context, code string, opts ...CallOption) error {
	return c.exec(ctx, "", code, opts)
}

// Call calls module.function(*args, **kwargs) on a pooled interpreter.
// function may be dotted ("str.upper"). Options: WithKwargs, WithOutput.
func (c *Client) Call(ctx context.Context, module, function string, args []any, opts ...CallOption) (any, error) {
	return c.call(ctx, "", module, function, args, opts)
}

func applyCall(opts []CallOption) callConfig {
	var cfg callConfig
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

func toValueMap(m map[string]any) (map[string]*pb.Value, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]*pb.Value, len(m))
	for k, v := range m {
		pv, err := ToValue(v)
		if err != nil {
			return nil, err
		}
		out[k] = pv
	}
	return out, nil
}

func pyError(e *pb.PythonError, stdout, stderr string) error {
	if e == nil {
		return nil
	}
	return &PythonError{Type: e.Type, Message: e.Message, Traceback: e.Traceback,
		Stdout: stdout, Stderr: stderr}
}

func (cfg *callConfig) setOutput(stdout, stderr string) {
	if cfg.output != nil {
		cfg.output.Stdout, cfg.output.Stderr = stdout, stderr
	}
}

func (c *Client) eval(ctx context.Context, session, code string, opts []CallOption) (any, error) {
	cfg := applyCall(opts)
	if cfg.kwargs != nil {
		return nil, invalidArgument("WithKwargs applies to Call only")
	}
	locals, err := toValueMap(cfg.locals)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.stub.Eval(ctx, &pb.EvalRequest{Session: session, Code: code, Locals: locals,
		ResultAsRef: cfg.resultAsRef})
	if err != nil {
		return nil, fromRPC(err)
	}
	cfg.setOutput(resp.Stdout, resp.Stderr)
	if resp.Error != nil {
		return nil, pyError(resp.Error, resp.Stdout, resp.Stderr)
	}
	return FromValue(resp.Value)
}

// execRequest checks opts for Exec and ExecStream and builds the request.
func execRequest(session, code string, cfg callConfig) (*pb.ExecRequest, error) {
	if cfg.kwargs != nil {
		return nil, invalidArgument("WithKwargs applies to Call only")
	}
	if cfg.resultAsRef {
		return nil, invalidArgument("WithResultAsRef applies to Eval and Call only")
	}
	locals, err := toValueMap(cfg.locals)
	if err != nil {
		return nil, err
	}
	return &pb.ExecRequest{Session: session, Code: code, Locals: locals}, nil
}

func (c *Client) exec(ctx context.Context, session, code string, opts []CallOption) error {
	cfg := applyCall(opts)
	req, err := execRequest(session, code, cfg)
	if err != nil {
		return err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.stub.Exec(ctx, req)
	if err != nil {
		return fromRPC(err)
	}
	cfg.setOutput(resp.Stdout, resp.Stderr)
	return pyError(resp.Error, resp.Stdout, resp.Stderr)
}

// callRequest checks opts for Call, CallStream, CallMethod and GetAttr and
// builds the request.
func callRequest(session, module, function string, args []any, cfg callConfig) (*pb.CallRequest, error) {
	if cfg.locals != nil {
		return nil, invalidArgument("WithLocals applies to Eval and Exec only")
	}
	req := &pb.CallRequest{Session: session, Module: module, Function: function,
		ResultAsRef: cfg.resultAsRef, TargetRef: cfg.targetRef, GetAttribute: cfg.getAttr}
	for _, a := range args {
		v, err := ToValue(a)
		if err != nil {
			return nil, err
		}
		req.Args = append(req.Args, v)
	}
	kwargs, err := toValueMap(cfg.kwargs)
	if err != nil {
		return nil, err
	}
	req.Kwargs = kwargs
	return req, nil
}

func (c *Client) call(ctx context.Context, session, module, function string, args []any, opts []CallOption) (any, error) {
	cfg := applyCall(opts)
	req, err := callRequest(session, module, function, args, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.stub.Call(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	cfg.setOutput(resp.Stdout, resp.Stderr)
	if resp.Error != nil {
		return nil, pyError(resp.Error, resp.Stdout, resp.Stderr)
	}
	return FromValue(resp.Value)
}

// Bind dedicates an interpreter to the caller. The caller must Unbind the
// session (prefer Client.Session, which always does). Option:
// WithIdleTimeout.
func (c *Client) Bind(ctx context.Context, opts ...BindOption) (*Session, error) {
	var cfg bindConfig
	for _, o := range opts {
		o(&cfg)
	}
	req := &pb.BindRequest{}
	if cfg.idle > 0 {
		secs := math.Ceil(cfg.idle.Seconds())
		if secs > math.MaxUint32 {
			secs = math.MaxUint32
		}
		req.IdleTimeoutSeconds = uint32(secs)
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.stub.Bind(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	return &Session{c: c, token: resp.Session,
		idle: time.Duration(resp.IdleTimeoutSeconds) * time.Second}, nil
}

// Attach returns a handle on an existing session token (for example one
// bound by another process). Nothing is sent until its first call.
func (c *Client) Attach(token string) *Session { return &Session{c: c, token: token} }

// Session binds a session, runs f on it and unbinds it when f returns, also
// when f returns an error, panics, or ctx is cancelled (the Unbind then gets
// its own few-second deadline). It returns f's error, or the Bind error; an
// Unbind failure is returned only when f succeeded.
func (c *Client) Session(ctx context.Context, f func(s *Session) error, opts ...BindOption) (err error) {
	s, err := c.Bind(ctx, opts...)
	if err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if uerr := s.Unbind(uctx); err == nil {
			err = uerr
		}
	}()
	return f(s)
}

// Stats are the server's pool figures (GetStats).
type Stats struct {
	NumWorkers       uint32 // live workers: available + checked out
	AvailableWorkers uint32 // idle, unbound, ready workers
	CheckedOut       uint32 // workers bound to sessions
	PendingRequests  uint32 // calls waiting for a worker
	MaxWorkers       uint32 // limit on checked-out workers
	StartingWorkers  uint32 // workers being spawned
	BusyWorkers      uint32 // workers running a call right now
	WorkersSpawned   uint64 // since start
	WorkersDied      uint64 // unexpected deaths since start
	CallsTotal       uint64 // calls answered since start
	Sessions         uint32 // bound sessions
	Replica          string // this replica's --advertise_address (scale-out)
}

// Stats returns the server's pool figures.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	r, err := c.stub.GetStats(ctx, &pb.GetStatsRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &Stats{
		NumWorkers: r.NumWorkers, AvailableWorkers: r.AvailableWorkers,
		CheckedOut: r.CheckedOut, PendingRequests: r.PendingRequests,
		MaxWorkers: r.MaxWorkers, StartingWorkers: r.StartingWorkers,
		BusyWorkers: r.BusyWorkers, WorkersSpawned: r.WorkersSpawned,
		WorkersDied: r.WorkersDied, CallsTotal: r.CallsTotal, Sessions: r.Sessions,
		Replica: r.Replica,
	}, nil
}

// Session is a bound session: an interpreter dedicated to its holder, whose
// variables and imports persist between calls until Unbind. Safe for
// concurrent use; the server runs one call of a session at a time, in order.
type Session struct {
	c     *Client
	token string
	idle  time.Duration
}

// Token is the session's opaque token.
func (s *Session) Token() string { return s.token }

// IdleTimeout is the idle timeout the server granted (0 for Attach).
func (s *Session) IdleTimeout() time.Duration { return s.idle }

// Eval evaluates one expression in the session.
func (s *Session) Eval(ctx context.Context, code string, opts ...CallOption) (any, error) {
	return s.c.eval(ctx, s.token, code, opts)
}

// Exec executes statements in the session.
func (s *Session) Exec(ctx context.Context, code string, opts ...CallOption) error {
	return s.c.exec(ctx, s.token, code, opts)
}

// Call calls module.function(*args, **kwargs) in the session; module
// "__main__" is the session's namespace.
func (s *Session) Call(ctx context.Context, module, function string, args []any, opts ...CallOption) (any, error) {
	return s.c.call(ctx, s.token, module, function, args, opts)
}

// Unbind releases the session. Idempotent: unbinding an unknown or expired
// session succeeds.
func (s *Session) Unbind(ctx context.Context) error {
	ctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	_, err := s.c.stub.Unbind(ctx, &pb.UnbindRequest{Session: s.token})
	return fromRPC(err)
}

// Context is one of the client's numbered shared contexts, like
// erlang_python's py:context(N): a session bound on first use and shared by
// every caller that picks the same number, so state set through it is seen
// by all of them. If the session is lost (ErrSessionNotFound or
// ErrWorkerDied), that error is returned and the next call binds a fresh
// session. Close unbinds them all.
type Context struct {
	c *Client
	n int

	mu      sync.Mutex // guards session; held across the first Bind
	session *Session
}

// Context returns shared context n, 1-based, up to WithContexts (default
// GOMAXPROCS). An out-of-range n gives a Context whose calls fail with
// ErrInvalidArgument.
func (c *Client) Context(n int) *Context {
	if n < 1 || n > len(c.contexts) {
		return &Context{c: c, n: n}
	}
	return c.contexts[n-1]
}

// NumContexts is how many numbered contexts the client offers.
func (c *Client) NumContexts() int { return len(c.contexts) }

func (x *Context) get(ctx context.Context) (*Session, error) {
	if x.n < 1 || x.n > len(x.c.contexts) {
		return nil, invalidArgument("context %d out of range 1..%d", x.n, len(x.c.contexts))
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.session == nil {
		s, err := x.c.Bind(ctx)
		if err != nil {
			return nil, err
		}
		x.session = s
	}
	return x.session, nil
}

// forget drops a session the server no longer has, so the next call rebinds.
func (x *Context) forget(s *Session, err error) {
	if err == nil || !(isErr(err, ErrSessionNotFound) || isErr(err, ErrWorkerDied)) {
		return
	}
	x.mu.Lock()
	if x.session == s {
		x.session = nil
	}
	x.mu.Unlock()
}

func (x *Context) release(ctx context.Context) {
	x.mu.Lock()
	s := x.session
	x.session = nil
	x.mu.Unlock()
	if s != nil {
		_ = s.Unbind(ctx)
	}
}

// Eval evaluates one expression in the shared context's session.
func (x *Context) Eval(ctx context.Context, code string, opts ...CallOption) (any, error) {
	s, err := x.get(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.Eval(ctx, code, opts...)
	x.forget(s, err)
	return v, err
}

// Exec executes statements in the shared context's session.
func (x *Context) Exec(ctx context.Context, code string, opts ...CallOption) error {
	s, err := x.get(ctx)
	if err != nil {
		return err
	}
	err = s.Exec(ctx, code, opts...)
	x.forget(s, err)
	return err
}

// Call calls module.function(*args, **kwargs) in the shared context's session.
func (x *Context) Call(ctx context.Context, module, function string, args []any, opts ...CallOption) (any, error) {
	s, err := x.get(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.Call(ctx, module, function, args, opts...)
	x.forget(s, err)
	return v, err
}

// N is the context's number.
func (x *Context) N() int { return x.n }
