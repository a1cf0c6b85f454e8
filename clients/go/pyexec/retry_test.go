package pyexec_test

// Status mapping, retries and owner routing against scripted fake servers,
// which show what the client sends and let a test choose each answer.

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/pyexec/pyexec/clients/go/pyexec"
	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

type scripted struct {
	pb.UnimplementedPyExecServer
	addr string

	mu      sync.Mutex
	errs    []error  // the next Eval/Run answers (nil: success); then success
	ids     []string // x-pyexec-call-id of each Eval and Run
	auth    []string // authorization of each Eval
	owner   string   // Bind's owner, and x-pyexec-owner on Eval answers
	value   string   // what Eval returns
	runs    int
	cbAsked int
	// Run: ask for callback "f" first, then fail with this.
	failAfterCallback error
}

func (f *scripted) next(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, md.Get("x-pyexec-call-id")...)
	f.auth = append(f.auth, md.Get("authorization")...)
	if len(f.errs) == 0 {
		return nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return err
}

func (f *scripted) Bind(context.Context, *pb.BindRequest) (*pb.BindResponse, error) {
	return &pb.BindResponse{Session: "tok", Owner: f.owner}, nil
}

func (f *scripted) Eval(ctx context.Context, _ *pb.EvalRequest) (*pb.EvalResponse, error) {
	if err := f.next(ctx); err != nil {
		return nil, err
	}
	if f.owner != "" {
		grpc.SetHeader(ctx, metadata.Pairs("x-pyexec-owner", f.owner))
	}
	return &pb.EvalResponse{Value: &pb.Value{Kind: &pb.Value_Str{Str: f.value}}}, nil
}

func (f *scripted) Run(stream pb.PyExec_RunServer) error {
	f.mu.Lock()
	f.runs++
	f.mu.Unlock()
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := f.next(stream.Context()); err != nil {
		return err
	}
	if err := stream.Send(&pb.RunEvent{Event: &pb.RunEvent_Callback{Callback: &pb.CallbackRequest{Id: "cb1", Name: "f"}}}); err != nil {
		return err
	}
	answer, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.cbAsked++
	fail := f.failAfterCallback
	f.mu.Unlock()
	if fail != nil {
		return fail
	}
	v := answer.GetCallbackResult().GetValue()
	if err := stream.Send(&pb.RunEvent{Event: &pb.RunEvent_Eval{Eval: &pb.EvalResponse{Value: v}}}); err != nil {
		return err
	}
	_, err = stream.Recv() // the half-close
	return nil
}

func (f *scripted) script(errs ...error) {
	f.mu.Lock()
	f.errs, f.ids, f.auth = errs, nil, nil
	f.mu.Unlock()
}

func (f *scripted) seen() (ids, auth []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...), append([]string(nil), f.auth...)
}

func startScripted(t *testing.T, value string) *scripted {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	f := &scripted{addr: lis.Addr().String(), value: value}
	pb.RegisterPyExecServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f
}

func dialScripted(t *testing.T, addr string, opts ...pyexec.Option) *pyexec.Client {
	t.Helper()
	c, err := pyexec.Dial(addr, append([]pyexec.Option{pyexec.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBareCancelledIsUnavailableAndSessionCallsRetryOnce(t *testing.T) {
	f := startScripted(t, "ok")
	c := dialScripted(t, f.addr)
	ctx := testCtx(t)
	bare := status.Error(codes.Canceled, "CANCELLED")
	unavailable := status.Error(codes.Unavailable, "draining")

	// A session call: the bare CANCELLED (server shutdown) is retried once,
	// transparently, under the same call id.
	f.script(bare)
	if v, err := c.Attach("tok").Eval(ctx, "1"); err != nil || v != "ok" {
		t.Fatalf("session Eval after a bare CANCELLED: %v, %v", v, err)
	}
	if ids, _ := f.seen(); len(ids) != 2 || ids[0] != ids[1] || ids[0] == "" {
		t.Fatalf("attempts' call ids %q: want 2 attempts under one id", ids)
	}
	// Twice UNAVAILABLE: one retry only, then ErrUnavailable.
	f.script(unavailable, unavailable, unavailable)
	_, err := c.Attach("tok").Eval(ctx, "1")
	if ids, _ := f.seen(); !errors.Is(err, pyexec.ErrUnavailable) || len(ids) != 2 {
		t.Fatalf("twice UNAVAILABLE: %v after %d attempts", err, len(ids))
	}
	// While the server says the session is moving, the call is retried
	// until the move is done.
	moving := status.Error(codes.Unavailable, "the session is moving to another replica (this one is draining); retry the call")
	f.script(moving, moving, moving, moving)
	if v, err := c.Attach("tok").Eval(ctx, "1"); err != nil || v != "ok" {
		t.Fatalf("session Eval during a move: %v, %v", v, err)
	}
	if ids, _ := f.seen(); len(ids) != 5 || ids[0] != ids[4] {
		t.Fatalf("during a move: %d attempts (%q), want 5 under one id", len(ids), ids)
	}
	// A move waited out, then the old replica ends the call as it shuts
	// down (a bare CANCELLED): that is still worth its one retry; a second
	// one is not.
	f.script(moving, moving, bare)
	if v, err := c.Attach("tok").Eval(ctx, "1"); err != nil || v != "ok" {
		t.Fatalf("session Eval: moving, moving, bare CANCELLED: %v, %v", v, err)
	}
	if ids, _ := f.seen(); len(ids) != 4 || ids[0] != ids[3] {
		t.Fatalf("moving, moving, bare CANCELLED: %d attempts (%q), want 4 under one id", len(ids), ids)
	}
	f.script(moving, bare, moving, bare, bare)
	_, err = c.Attach("tok").Eval(ctx, "1")
	if ids, _ := f.seen(); !errors.Is(err, pyexec.ErrUnavailable) || len(ids) != 4 {
		t.Fatalf("moving, bare, moving, bare: %v after %d attempts, want ErrUnavailable after 4", err, len(ids))
	}
	// A stateless call is not retried, and its bare CANCELLED is
	// ErrUnavailable (status UNAVAILABLE).
	f.script(bare)
	_, err = c.Eval(ctx, "1")
	if ids, _ := f.seen(); !errors.Is(err, pyexec.ErrUnavailable) || status.Code(err) != codes.Unavailable || len(ids) != 1 {
		t.Fatalf("stateless bare CANCELLED: %v (%v) after %d attempts", err, status.Code(err), len(ids))
	}
	// The server's report of an Interrupt stays ErrCancelled, not retried.
	f.script(status.Error(codes.Canceled, "interrupted by an Interrupt request; the session keeps its state"))
	_, err = c.Attach("tok").Eval(ctx, "1")
	if ids, _ := f.seen(); !errors.Is(err, pyexec.ErrCancelled) || errors.Is(err, pyexec.ErrUnavailable) || len(ids) != 1 {
		t.Fatalf("interrupted: %v after %d attempts", err, len(ids))
	}
	// Other codes are not retried.
	f.script(status.Error(codes.NotFound, "gone"))
	_, err = c.Attach("tok").Eval(ctx, "1")
	if ids, _ := f.seen(); !errors.Is(err, pyexec.ErrSessionNotFound) || len(ids) != 1 {
		t.Fatalf("NOT_FOUND: %v after %d attempts", err, len(ids))
	}
	// Our own cancel is ErrCancelled.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Attach("tok").Eval(cctx, "1"); !errors.Is(err, pyexec.ErrCancelled) {
		t.Fatalf("own cancel: %v", err)
	}
}

func TestRunRetriedOnlyBeforeACallback(t *testing.T) {
	f := startScripted(t, "")
	c := dialScripted(t, f.addr)
	var calls int
	var mu sync.Mutex
	c.RegisterFunction("f", func(context.Context, []any, map[string]any) (any, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return "from go", nil
	})
	ctx := testCtx(t)
	f.script(status.Error(codes.Unavailable, "moving"))
	v, err := c.Attach("tok").Eval(ctx, "pyexec.call('f')")
	if ids, _ := f.seen(); err != nil || v != "from go" || len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("Run after UNAVAILABLE: %v, %v; call ids %q", v, err, ids)
	}
	// Once the server asked for a callback the call was accepted: an
	// UNAVAILABLE then is the caller's, not retried.
	f.script()
	f.failAfterCallback = status.Error(codes.Unavailable, "went away")
	_, err = c.Attach("tok").Eval(ctx, "pyexec.call('f')")
	if !errors.Is(err, pyexec.ErrUnavailable) || f.runs != 3 || calls != 2 {
		t.Fatalf("after a callback: %v; %d runs, %d callbacks", err, f.runs, calls)
	}
}

// TestRouteToOwnerWithFakes: calls go to the owner Bind names, with the same
// token; an UNAVAILABLE owner sends them back through the dial target.
func TestRouteToOwnerWithFakes(t *testing.T) {
	target := startScripted(t, "target")
	owner := startScripted(t, "owner")
	target.owner = owner.addr
	c := dialScripted(t, target.addr, pyexec.WithRouteToOwner(), pyexec.WithToken("tkn"))
	ctx := testCtx(t)
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner() != owner.addr {
		t.Fatalf("Owner() = %q", s.Owner())
	}
	for i := 0; i < 3; i++ {
		if v, err := s.Eval(ctx, "1"); err != nil || v != "owner" {
			t.Fatalf("routed Eval: %v, %v", v, err)
		}
	}
	if _, auth := owner.seen(); len(auth) != 3 || auth[0] != "Bearer tkn" {
		t.Fatalf("owner saw authorization %q", auth)
	}
	// The owner fails: this call and the next go through the target.
	owner.script(status.Error(codes.Unavailable, "draining"))
	target.script()
	for i := 0; i < 2; i++ {
		if v, err := s.Eval(ctx, "1"); err != nil || v != "target" {
			t.Fatalf("after the owner failed: %v, %v", v, err)
		}
	}
	if ids, _ := owner.seen(); len(ids) != 1 {
		t.Fatalf("owner tried %d times after failing, want 1", len(ids))
	}
	// A handle on a token learns the owner from x-pyexec-owner.
	c2 := dialScripted(t, target.addr, pyexec.WithRouteToOwner())
	h := c2.Attach("tok")
	for _, want := range []string{"target", "owner", "owner"} {
		if v, err := h.Eval(ctx, "1"); err != nil || v != want {
			t.Fatalf("Attach handle: %v, %v; want %s", v, err, want)
		}
	}
	// Without WithRouteToOwner, everything goes to the target.
	c3 := dialScripted(t, target.addr)
	s3, err := c3.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s3.Eval(ctx, "1"); err != nil || v != "target" {
		t.Fatalf("unrouted: %v, %v", v, err)
	}
}

// TestRouteToOwnerHungOwner: an owner address that accepts connections and
// never answers costs one wait of about a second, then the target serves.
func TestRouteToOwnerHungOwner(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		var held []net.Conn
		for {
			conn, err := hung.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, conn)
		}
	}()
	target := startScripted(t, "target")
	target.owner = hung.Addr().String()
	c := dialScripted(t, target.addr, pyexec.WithRouteToOwner())
	ctx := testCtx(t)
	start := time.Now()
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if v, err := s.Eval(ctx, "1"); err != nil || v != "target" {
			t.Fatalf("Eval: %v, %v", v, err)
		}
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Fatalf("Bind and 10 calls with a hung owner took %v", d)
	} else {
		t.Logf("Bind and 10 calls with a hung owner: %v", d)
	}
}
