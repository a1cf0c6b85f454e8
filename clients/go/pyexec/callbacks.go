package pyexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Func is a function Python can call back while a call of this client runs:
// pyexec.call(name, *args, **kwargs) (or erlang.call) in Python. args and
// kwargs are mapped as results are (int64, string, []any, Tuple, ...); the
// returned value is mapped as arguments are, and pyexec.call returns it. A
// returned error makes pyexec.call raise pyexec.CallbackError with the
// error's message and the type "GoError", or the Type of a *PythonError
// (return &PythonError{Type: "KeyError", Message: ...} to choose it); a
// panic is caught and raised the same way, with the type "GoPanic".
//
// ctx is cancelled when the call that asked ends (deadline, Interrupt,
// cancel). Calls the function makes with ctx on the same session (or on a
// stateless call's waiting interpreter) run on the interpreter that is
// waiting for it (re-entry): Python -> Go -> Eval -> Python -> Go works at
// any depth. Several callbacks may run at once, each in its own goroutine.
type Func func(ctx context.Context, args []any, kwargs map[string]any) (any, error)

type funcRegistry struct {
	mu sync.RWMutex
	m  map[string]Func
}

// RegisterFunction makes fn callable from Python as pyexec.call(name, ...)
// during every Eval, Exec and Call of this client (stateless or on a
// session; not streams), replacing a function registered under the same
// name. While any function is registered these calls travel as Run streams
// (a bidirectional stream per call; on loopback about as fast as a plain
// call, 0.93-1.06x, since the half-close and the final status are read off
// the caller's path) so that the server can ask for callbacks on them;
// with none registered they are plain calls. A name Python calls that is
// not registered raises pyexec.CallbackError (LookupError) in Python.
// It panics if name is empty or fn is nil.
func (c *Client) RegisterFunction(name string, fn Func) {
	if name == "" || fn == nil {
		panic("pyexec: RegisterFunction needs a name and a function")
	}
	c.funcs.mu.Lock()
	c.funcs.m[name] = fn
	c.funcs.mu.Unlock()
}

// UnregisterFunction removes the function registered as name, if any.
func (c *Client) UnregisterFunction(name string) {
	c.funcs.mu.Lock()
	delete(c.funcs.m, name)
	c.funcs.mu.Unlock()
}

// funcSet is what one call can call back: its WithFunction functions, then
// the client's registered ones (looked up when Python asks).
type funcSet struct {
	local map[string]Func
	reg   *funcRegistry
}

func (f funcSet) lookup(name string) Func {
	if fn, ok := f.local[name]; ok {
		return fn
	}
	f.reg.mu.RLock()
	defer f.reg.mu.RUnlock()
	return f.reg.m[name]
}

// funcsFor returns the functions of a call, or nil when there are none (the
// call is then a plain RPC).
func (c *Client) funcsFor(cfg callConfig) *funcSet {
	c.funcs.mu.RLock()
	n := len(c.funcs.m)
	c.funcs.mu.RUnlock()
	if n == 0 && len(cfg.funcs) == 0 {
		return nil
	}
	return &funcSet{local: cfg.funcs, reg: &c.funcs}
}

func runMismatch(ev *pb.RunEvent) error {
	return &StatusError{Code: codes.Internal, kind: ErrRPC,
		Message: fmt.Sprintf("Run answered with %T, not the response to the call", ev.GetEvent())}
}

// runDrain bounds how long a finished Run waits for its OK status.
const runDrain = 10 * time.Second

// run sends req on a Run stream and answers the server's callback requests
// with fs's functions until the response comes, which it returns. Routing
// and the one retry on UNAVAILABLE are do's, as long as the server has not
// asked for a callback yet.
func (c *Client) run(ctx context.Context, s *Session, req *pb.RunRequest, fs *funcSet) (*pb.RunEvent, error) {
	// Callbacks get ctx without this call's id (their own calls have their
	// own), cancelled when the call ends.
	cbParent := context.WithValue(ctx, callIDKey, "")
	var resp *pb.RunEvent
	err := c.do(ctx, s, true, func(mctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) error {
		rctx, cancel := context.WithCancel(mctx)
		stream, err := stub.Run(rctx)
		if err != nil {
			cancel()
			return err
		}
		cbCtx, cbCancel := context.WithCancel(cbParent)
		var sendMu sync.Mutex
		send := func(r *pb.RunRequest) error {
			sendMu.Lock()
			defer sendMu.Unlock()
			return stream.Send(r)
		}
		// A failed Send shows as the stream's status on Recv.
		_ = send(req)
		asked := false
		for {
			ev, err := stream.Recv()
			if err != nil {
				cbCancel()
				cancel()
				if err == io.EOF {
					err = &StatusError{Code: codes.Internal, kind: ErrRPC,
						Message: "Run ended without the response to the call"}
				}
				if asked {
					return accepted{err}
				}
				return err
			}
			if !asked {
				if h, herr := stream.Header(); herr == nil {
					*hdr = h
				}
			}
			if cb := ev.GetCallback(); cb != nil {
				asked = true
				go answerCallback(cbCtx, cb, fs, send)
				continue
			}
			resp = ev
			sendMu.Lock()
			_ = stream.CloseSend()
			sendMu.Unlock()
			// The OK status follows the half-close; collect it off the
			// caller's path, then end the callbacks still running.
			go func() {
				t := time.AfterFunc(runDrain, cancel)
				for {
					if _, err := stream.Recv(); err != nil {
						break
					}
				}
				t.Stop()
				cbCancel()
				cancel()
			}()
			return nil
		}
	})
	return resp, err
}

// answerCallback runs the function Python asked for and sends its result.
func answerCallback(ctx context.Context, cb *pb.CallbackRequest, fs *funcSet, send func(*pb.RunRequest) error) {
	result := &pb.CallbackResult{Id: cb.Id}
	fail := func(typ, msg string) {
		result.Outcome = &pb.CallbackResult_Error{Error: &pb.PythonError{Type: typ, Message: msg}}
	}
	fn := fs.lookup(cb.Name)
	if fn == nil {
		fail("LookupError", "no function registered as "+strconv.Quote(cb.Name))
	} else if args, kwargs, err := callbackArgs(cb); err != nil {
		fail("TypeError", err.Error())
	} else {
		ctx = context.WithValue(ctx, callbackKey, cb.Id)
		v, err := safeCall(ctx, fn, args, kwargs)
		if err == nil {
			var pv *pb.Value
			if pv, err = ToValue(v); err == nil {
				result.Outcome = &pb.CallbackResult_Value{Value: pv}
			} else {
				fail("TypeError", fmt.Sprintf("the result of %s cannot be sent: %v", cb.Name, err))
			}
		} else {
			var pe *PythonError
			var panicked panicError
			switch {
			case errors.As(err, &panicked):
				fail("GoPanic", panicked.msg)
			case errors.As(err, &pe):
				fail(pe.Type, pe.Message)
			default:
				fail("GoError", err.Error())
			}
		}
	}
	_ = send(&pb.RunRequest{Kind: &pb.RunRequest_CallbackResult{CallbackResult: result}})
}

type panicError struct{ msg string }

func (p panicError) Error() string { return p.msg }

func safeCall(ctx context.Context, fn Func, args []any, kwargs map[string]any) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{fmt.Sprint(r)}
		}
	}()
	return fn(ctx, args, kwargs)
}

func callbackArgs(cb *pb.CallbackRequest) ([]any, map[string]any, error) {
	args := make([]any, len(cb.Args))
	for i, a := range cb.Args {
		v, err := FromValue(a)
		if err != nil {
			return nil, nil, err
		}
		args[i] = v
	}
	kwargs := make(map[string]any, len(cb.Kwargs))
	for k, a := range cb.Kwargs {
		v, err := FromValue(a)
		if err != nil {
			return nil, nil, err
		}
		kwargs[k] = v
	}
	return args, kwargs, nil
}
