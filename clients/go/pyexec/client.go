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
// cancelling it interrupts the code too. A bound session is leased to the
// context given to Bind: when that context is done, or the process dies,
// the server unbinds it after a short grace (see Client.Bind). Python can
// call Go functions registered with Client.RegisterFunction, as
// pyexec.call(name, ...). A call started with Session.GoExec (GoEval,
// GoCall) can be interrupted by name, never too early. A Python exception comes back as a
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
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Client is a connection to one pyexecd. It is safe for concurrent use; one
// Client per server is enough (gRPC multiplexes calls on one connection).
type Client struct {
	conn           *grpc.ClientConn
	stub           pb.PyExecClient
	target         string
	dialOpts       []grpc.DialOption // also for the channels to owners
	routeToOwner   bool
	defaultTimeout time.Duration
	contexts       []*Context

	funcs funcRegistry // RegisterFunction

	// life is cancelled by Close: it ends every lease the client holds.
	life    context.Context
	endLife context.CancelFunc
	leases  sync.WaitGroup

	owners owners
	closed bool // guarded by owners.mu
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
	c := &Client{conn: conn, stub: pb.NewPyExecClient(conn), target: target, dialOpts: dopts,
		routeToOwner: cfg.routeToOwner, defaultTimeout: cfg.defaultTimeout}
	c.owners.conns = map[string]*ownerConn{}
	c.funcs.m = map[string]Func{}
	c.life, c.endLife = context.WithCancel(context.Background())
	c.contexts = make([]*Context, cfg.numContexts)
	for i := range c.contexts {
		c.contexts[i] = &Context{c: c, n: i + 1}
	}
	return c, nil
}

// Close unbinds the numbered contexts that were bound (best effort, a few
// seconds at most), ends every lease the client holds (the server unbinds
// those sessions after its --lease_grace), and closes the connections.
// Sessions bound WithoutLease are the caller's to unbind; the server's idle
// timeout reclaims forgotten ones.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, x := range c.contexts {
		x.release(ctx)
	}
	c.endLife()
	c.leases.Wait()
	c.owners.mu.Lock()
	c.closed = true
	c.owners.mu.Unlock()
	c.closeOwners()
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
	return c.eval(ctx, nil, code, opts)
}

// Exec executes Python statements on a pooled interpreter. Options:
// WithLocals, WithOutput.
func (c *Client) Exec(ctx context.Context, code string, opts ...CallOption) error {
	return c.exec(ctx, nil, code, opts)
}

// Call calls module.function(*args, **kwargs) on a pooled interpreter.
// function may be dotted ("str.upper"). Options: WithKwargs, WithOutput.
func (c *Client) Call(ctx context.Context, module, function string, args []any, opts ...CallOption) (any, error) {
	return c.call(ctx, nil, module, function, args, opts)
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

func (c *Client) eval(ctx context.Context, s *Session, code string, opts []CallOption) (any, error) {
	cfg := applyCall(opts)
	if cfg.kwargs != nil {
		return nil, invalidArgument("WithKwargs applies to Call only")
	}
	locals, err := toValueMap(cfg.locals)
	if err != nil {
		return nil, err
	}
	req := &pb.EvalRequest{Session: s.tokenOrEmpty(), Code: code, Locals: locals,
		ResultAsRef: cfg.resultAsRef}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *pb.EvalResponse
	if fs := c.funcsFor(cfg); fs != nil {
		ev, err := c.run(ctx, s, &pb.RunRequest{Kind: &pb.RunRequest_Eval{Eval: req}}, fs)
		if err != nil {
			return nil, err
		}
		if resp = ev.GetEval(); resp == nil {
			return nil, runMismatch(ev)
		}
	} else {
		err := c.do(ctx, s, true, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
			resp, err = stub.Eval(ctx, req, grpc.Header(hdr))
			return err
		})
		if err != nil {
			return nil, err
		}
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

func (c *Client) exec(ctx context.Context, s *Session, code string, opts []CallOption) error {
	cfg := applyCall(opts)
	req, err := execRequest(s.tokenOrEmpty(), code, cfg)
	if err != nil {
		return err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *pb.ExecResponse
	if fs := c.funcsFor(cfg); fs != nil {
		ev, err := c.run(ctx, s, &pb.RunRequest{Kind: &pb.RunRequest_Exec{Exec: req}}, fs)
		if err != nil {
			return err
		}
		if resp = ev.GetExec(); resp == nil {
			return runMismatch(ev)
		}
	} else {
		err := c.do(ctx, s, true, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
			resp, err = stub.Exec(ctx, req, grpc.Header(hdr))
			return err
		})
		if err != nil {
			return err
		}
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

func (c *Client) call(ctx context.Context, s *Session, module, function string, args []any, opts []CallOption) (any, error) {
	cfg := applyCall(opts)
	req, err := callRequest(s.tokenOrEmpty(), module, function, args, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *pb.CallResponse
	if fs := c.funcsFor(cfg); fs != nil {
		ev, err := c.run(ctx, s, &pb.RunRequest{Kind: &pb.RunRequest_Call{Call: req}}, fs)
		if err != nil {
			return nil, err
		}
		if resp = ev.GetCall(); resp == nil {
			return nil, runMismatch(ev)
		}
	} else {
		err := c.do(ctx, s, true, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
			resp, err = stub.Call(ctx, req, grpc.Header(hdr))
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	cfg.setOutput(resp.Stdout, resp.Stderr)
	if resp.Error != nil {
		return nil, pyError(resp.Error, resp.Stdout, resp.Stderr)
	}
	return FromValue(resp.Value)
}

// Bind dedicates an interpreter to the caller and leases it to ctx: the
// session lives while ctx does. When ctx is done (cancelled, or its
// deadline passes), or at Unbind or Client.Close, or when the process dies
// or loses its connection, the lease ends and the server unbinds the
// session after its --lease_grace (a few seconds), unless a lease is taken
// again in time. So pass a ctx that lives as long as the session is used;
// WithLeaseContext ties the lease to another context (for example
// context.Background(): until Unbind or Close), WithoutLease binds with no
// lease (the session then lives until Unbind or its idle timeout). Bind
// returns once the server holds the lease. Prefer Client.Session, which also
// always unbinds. Options: WithIdleTimeout, WithRestore, WithLeaseContext,
// WithoutLease.
func (c *Client) Bind(ctx context.Context, opts ...BindOption) (*Session, error) {
	var cfg bindConfig
	for _, o := range opts {
		o(&cfg)
	}
	req := &pb.BindRequest{Restore: cfg.restore}
	if cfg.idle > 0 {
		secs := math.Ceil(cfg.idle.Seconds())
		if secs > math.MaxUint32 {
			secs = math.MaxUint32
		}
		req.IdleTimeoutSeconds = uint32(secs)
	}
	bctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *pb.BindResponse
	err := c.do(bctx, nil, false, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
		resp, err = stub.Bind(ctx, req, grpc.Header(hdr))
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &Session{c: c, token: resp.Session,
		idle:        time.Duration(resp.IdleTimeoutSeconds) * time.Second,
		bindOwner:   resp.Owner,
		restoreLost: lostNames(resp.RestoreLost)}
	if e := resp.RestoreError; e != nil {
		s.restoreErr = &PythonError{Type: e.Type, Message: e.Message, Traceback: e.Traceback}
	}
	if c.routeToOwner {
		s.learnOwner(resp.Owner)
	}
	if cfg.noLease {
		return s, nil
	}
	leaseCtx := ctx
	if cfg.leaseCtx != nil {
		leaseCtx = cfg.leaseCtx
	}
	if err := s.startLease(bctx, leaseCtx); err != nil {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Unbind(uctx)
		return nil, err
	}
	return s, nil
}

// Attach returns a handle on an existing session token (for example one
// bound by another process). Nothing is sent until its first call, and it
// holds no lease: Session.Lease takes one.
func (c *Client) Attach(token string) *Session { return &Session{c: c, token: token} }

// Session binds a session leased to ctx, runs f on it and unbinds it when f
// returns, also when f returns an error, panics, or ctx is cancelled (the
// Unbind then gets its own few-second deadline). It returns f's error, or the Bind error; an
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
	BindableWorkers  uint32 // more sessions that can be bound (0: Bind is refused)
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
		Replica: r.Replica, BindableWorkers: r.BindableWorkers,
	}, nil
}

// Session is a bound session: an interpreter dedicated to its holder, whose
// variables and imports persist between calls until Unbind. Safe for
// concurrent use; the server runs one call of a session at a time, in order.
type Session struct {
	c         *Client
	token     string
	idle      time.Duration
	bindOwner string

	restoreLost []LostName
	restoreErr  *PythonError

	mu    sync.Mutex
	owner string // where calls go with WithRouteToOwner; "" = dial target
	lease *lease
}

func (s *Session) tokenOrEmpty() string {
	if s == nil {
		return ""
	}
	return s.token
}

// Token is the session's opaque token.
func (s *Session) Token() string { return s.token }

// IdleTimeout is the idle timeout the server granted (0 for Attach).
func (s *Session) IdleTimeout() time.Duration { return s.idle }

// Owner is the address of the replica that holds the session, as Bind
// named it (BindResponse.owner): empty unless the servers run with --peers.
// With WithRouteToOwner the session's calls go there directly.
func (s *Session) Owner() string { return s.bindOwner }

// Eval evaluates one expression in the session.
func (s *Session) Eval(ctx context.Context, code string, opts ...CallOption) (any, error) {
	return s.c.eval(ctx, s, code, opts)
}

// Exec executes statements in the session.
func (s *Session) Exec(ctx context.Context, code string, opts ...CallOption) error {
	return s.c.exec(ctx, s, code, opts)
}

// Call calls module.function(*args, **kwargs) in the session; module
// "__main__" is the session's namespace.
func (s *Session) Call(ctx context.Context, module, function string, args []any, opts ...CallOption) (any, error) {
	return s.c.call(ctx, s, module, function, args, opts)
}

// Unbind ends the session's lease and releases the session. Idempotent:
// unbinding an unknown or expired session succeeds.
func (s *Session) Unbind(ctx context.Context) error {
	s.endLease()
	ctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	return s.c.do(ctx, s, false, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) error {
		_, err := stub.Unbind(ctx, &pb.UnbindRequest{Session: s.token}, grpc.Header(hdr))
		return err
	})
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
		// Leased for the client's life: Close ends it.
		s, err := x.c.Bind(ctx, WithLeaseContext(x.c.life))
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
	s.endLease()
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
