package pyexec_test

import (
	"context"
	"errors"
	"math"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// gone asserts that token names no live session.
func gone(t *testing.T, c *pyexec.Client, token string) {
	t.Helper()
	_, err := c.Attach(token).Eval(testCtx(t), "1")
	if !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("session %s still usable after the scope: err=%v", token, err)
	}
}

func TestStatelessEvalExecCall(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	v, err := c.Eval(ctx, "6*7")
	if err != nil || v != int64(42) {
		t.Fatalf("Eval = %v, %v", v, err)
	}
	if err := c.Exec(ctx, "y = 1"); err != nil {
		t.Fatal(err)
	}
	v, err = c.Call(ctx, "math", "gcd", []any{12, 18})
	if err != nil || v != int64(6) {
		t.Fatalf("Call = %v, %v", v, err)
	}
	v, err = c.Call(ctx, "builtins", "int", []any{"ff"}, pyexec.WithKwargs(map[string]any{"base": 16}))
	if err != nil || v != int64(255) {
		t.Fatalf("Call with kwargs = %v, %v", v, err)
	}
}

func TestOutputCaptured(t *testing.T) {
	c := dial(t)
	var out pyexec.Output
	err := c.Exec(testCtx(t), "import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nraise KeyError('k')",
		pyexec.WithOutput(&out))
	var pe *pyexec.PythonError
	if !errors.As(err, &pe) || pe.Type != "KeyError" {
		t.Fatalf("err = %v, want KeyError", err)
	}
	if out.Stdout != "hi\n" || out.Stderr != "oops\n" {
		t.Fatalf("output = %+v", out)
	}
	if pe.Stdout != "hi\n" || pe.Stderr != "oops\n" {
		t.Fatalf("PythonError output = %q, %q", pe.Stdout, pe.Stderr)
	}
}

func TestPythonErrorIsTypedAndNotAStatus(t *testing.T) {
	c := dial(t)
	_, err := c.Eval(testCtx(t), "1/0")
	var pe *pyexec.PythonError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v (%T), want *PythonError", err, err)
	}
	if pe.Type != "ZeroDivisionError" || pe.Message != "division by zero" ||
		!strings.Contains(pe.Traceback, "ZeroDivisionError") {
		t.Fatalf("PythonError = %+v", pe)
	}
	if !errors.Is(err, pyexec.ErrPython) || errors.Is(err, pyexec.ErrRPC) {
		t.Fatal("a PythonError must match ErrPython and no status sentinel")
	}
	var se *pyexec.StatusError
	if errors.As(err, &se) {
		t.Fatal("a PythonError must not be a StatusError")
	}
	if err.Error() != "ZeroDivisionError: division by zero" {
		t.Fatalf("Error() = %q", err.Error())
	}
}

func TestSessionStateAndScopedUnbind(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	var token string
	err := c.Session(ctx, func(s *pyexec.Session) error {
		token = s.Token()
		if err := s.Exec(ctx, "import math; r = 2"); err != nil {
			return err
		}
		v, err := s.Eval(ctx, "math.pi * r**2")
		if err != nil {
			return err
		}
		if v != math.Pi*4 {
			t.Errorf("area = %v", v)
		}
		if err := s.Exec(ctx, "def area(k):\n    return k * r"); err != nil {
			return err
		}
		v, err = s.Call(ctx, "__main__", "area", []any{pyexec.Tuple{1}})
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(v, pyexec.Tuple{int64(1), int64(1)}) {
			t.Errorf("area((1,)) = %#v, want (1, 1)", v)
		}
		return nil
	}, pyexec.WithIdleTimeout(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	gone(t, c, token)
}

func TestSessionUnbindsOnError(t *testing.T) {
	c := dial(t)
	boom := errors.New("boom")
	var token string
	err := c.Session(testCtx(t), func(s *pyexec.Session) error {
		token = s.Token()
		return boom
	})
	if err != boom {
		t.Fatalf("Session returned %v, want f's error", err)
	}
	gone(t, c, token)
}

func TestSessionUnbindsOnPanic(t *testing.T) {
	c := dial(t)
	var token string
	func() {
		defer func() {
			if r := recover(); r != "panic in f" {
				t.Fatalf("recovered %v", r)
			}
		}()
		c.Session(testCtx(t), func(s *pyexec.Session) error {
			token = s.Token()
			panic("panic in f")
		})
	}()
	gone(t, c, token)
}

func TestSessionUnbindsWhenCtxCancelled(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	var token string
	err := c.Session(ctx, func(s *pyexec.Session) error {
		token = s.Token()
		cancel()
		_, err := s.Eval(ctx, "1")
		return err
	})
	if !errors.Is(err, pyexec.ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrCancelled", err)
	}
	gone(t, c, token)
}

func TestBindUnbindExplicit(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	s, err := c.Bind(ctx, pyexec.WithIdleTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if s.IdleTimeout() != 30*time.Second || len(s.Token()) == 0 {
		t.Fatalf("session %q idle %v", s.Token(), s.IdleTimeout())
	}
	if err := s.Exec(ctx, "z = 5"); err != nil {
		t.Fatal(err)
	}
	// Another handle on the same token sees the same state.
	if v, err := c.Attach(s.Token()).Eval(ctx, "z"); err != nil || v != int64(5) {
		t.Fatalf("via Attach: %v, %v", v, err)
	}
	if err := s.Unbind(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Unbind(ctx); err != nil {
		t.Fatalf("second Unbind: %v (must be idempotent)", err)
	}
	_, err = s.Eval(ctx, "z")
	var se *pyexec.StatusError
	if !errors.Is(err, pyexec.ErrSessionNotFound) || !errors.As(err, &se) || se.Code != codes.NotFound {
		t.Fatalf("err = %v", err)
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("status.Code(err) = %v: GRPCStatus not honoured", status.Code(err))
	}
}

func TestTimeoutIsErrTimeoutAndContextDeadline(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Eval(ctx, "__import__('time').sleep(10)")
	if !errors.Is(err, pyexec.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if errors.Is(err, pyexec.ErrSessionNotFound) || errors.Is(err, pyexec.ErrPoolExhausted) {
		t.Fatal("one error must match one class only")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestDefaultTimeout(t *testing.T) {
	c := dial(t, pyexec.WithDefaultTimeout(300*time.Millisecond))
	_, err := c.Eval(context.Background(), "__import__('time').sleep(10)")
	if !errors.Is(err, pyexec.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestInvalidArgument(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	if _, err := c.Eval(ctx, ""); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("empty code: %v", err)
	}
	// Refused by the client before sending.
	if _, err := c.Eval(ctx, "1", pyexec.WithKwargs(map[string]any{"a": 1})); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("kwargs on Eval: %v", err)
	}
	if _, err := c.Eval(ctx, "x", pyexec.WithLocals(map[string]any{"x": make(chan int)})); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("chan local: %v", err)
	}
	if _, err := c.Context(0).Eval(ctx, "1"); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("Context(0): %v", err)
	}
}

func TestPoolExhausted(t *testing.T) {
	srv, err := startServer(pyexecdPath(), "--workers=1", "--max_workers=1", "--drain_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := pyexec.Dial(srv.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	err = c.Session(ctx, func(*pyexec.Session) error {
		_, err := c.Bind(ctx)
		return err
	})
	var se *pyexec.StatusError
	if !errors.Is(err, pyexec.ErrPoolExhausted) || !errors.As(err, &se) ||
		!strings.Contains(se.Message, "no_workers_available") {
		t.Fatalf("second Bind: %v, want ErrPoolExhausted", err)
	}
}

func TestUnavailable(t *testing.T) {
	srv, err := startServer(pyexecdPath(), "--workers=1", "--drain_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr
	srv.Stop()
	c, err := pyexec.Dial(addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Eval(testCtx(t), "1")
	if !errors.Is(err, pyexec.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestWorkerDiedThenSessionNotFound(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Exec(ctx, "import os; os._exit(3)")
	if !errors.Is(err, pyexec.ErrWorkerDied) {
		t.Fatalf("err = %v, want ErrWorkerDied", err)
	}
	if _, err := s.Eval(ctx, "1"); !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("after death: %v", err)
	}
}

func TestNumberedContextsShared(t *testing.T) {
	// Its own server, so that the session count is this test's alone.
	srv, err := startServer(pyexecdPath(), "--workers=1", "--drain_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := pyexec.Dial(srv.Addr, pyexec.WithInsecure(), pyexec.WithContexts(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := pyexec.Dial(srv.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := testCtx(t)
	before, err := other.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Sessions != 0 {
		t.Fatalf("%d sessions before any call, want 0 (contexts bind lazily)", before.Sessions)
	}
	if c.NumContexts() != 2 || c.Context(2).N() != 2 {
		t.Fatal("NumContexts/N")
	}
	if err := c.Context(1).Exec(ctx, "shared = 5"); err != nil {
		t.Fatal(err)
	}
	// Many callers picking context 1 see the same state.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Context(1).Eval(ctx, "shared")
			if err == nil && v != int64(5) {
				err = errors.New("wrong value")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Context 2 is another session.
	v, err := c.Context(2).Eval(ctx, "'shared' in globals()")
	if err != nil || v != false {
		t.Fatalf("context 2 sees context 1's state: %v, %v", v, err)
	}
	after, err := other.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Sessions != before.Sessions+2 {
		t.Fatalf("sessions %d -> %d, want +2 (lazy, one per context)", before.Sessions, after.Sessions)
	}
	if _, err := c.Context(3).Eval(ctx, "1"); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("Context(3) of 2: %v", err)
	}
	c.Close()
	closed, err := other.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if closed.Sessions != before.Sessions {
		t.Fatalf("Close left %d sessions, want %d", closed.Sessions, before.Sessions)
	}
}

func TestNumberedContextRebindsAfterLoss(t *testing.T) {
	c := dial(t, pyexec.WithContexts(1))
	ctx := testCtx(t)
	if err := c.Context(1).Exec(ctx, "import os; marker = 1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Context(1).Exec(ctx, "os._exit(3)"); !errors.Is(err, pyexec.ErrWorkerDied) {
		t.Fatalf("err = %v, want ErrWorkerDied", err)
	}
	v, err := c.Context(1).Eval(ctx, "'marker' in globals()")
	if err != nil || v != false {
		t.Fatalf("after loss: %v, %v (want a fresh session)", v, err)
	}
}

func TestStats(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	a, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Eval(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	b, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.CallsTotal <= a.CallsTotal || b.MaxWorkers != 12 || b.NumWorkers == 0 {
		t.Fatalf("stats %+v -> %+v", a, b)
	}
}

// TestNativeMapping sends Go types beyond the conformance vectors' and
// checks what Python sees and what comes back.
func TestNativeMapping(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	type celsius float64
	maxU := uint64(math.MaxUint64)
	cases := []struct {
		in       any
		pyRepr   string
		back     any // nil: do not compare the round trip
		backKind string
	}{
		{[]int{1, 2}, "[1, 2]", nil, "[]any"},
		{[3]string{"a", "b", "c"}, "['a', 'b', 'c']", nil, "[]any"},
		{map[int]string{7: "x"}, "{7: 'x'}", nil, "Dict"},
		{map[string]int{"k": 1}, "{'k': 1}", nil, "map"},
		{maxU, "18446744073709551615", nil, "*big.Int"},
		{big.NewInt(5), "5", int64(5), ""},
		{celsius(21.5), "21.5", 21.5, ""},
		{float32(0.5), "0.5", 0.5, ""},
		{uint8(200), "200", int64(200), ""},
		{[]byte(nil), "b''", nil, "[]byte"},
		{[2]byte{1, 255}, "b'\\x01\\xff'", nil, ""},
		{(*int)(nil), "None", nil, "nil"},
		{pyexec.Set{pyexec.Tuple{1, 2}}, "{(1, 2)}", nil, "Set"},
		{pyexec.Dict{{Key: pyexec.Tuple{1}, Value: []byte("v")}}, "{(1,): b'v'}", nil, "Dict"},
	}
	for _, tc := range cases {
		locals := pyexec.WithLocals(map[string]any{"x": tc.in})
		r, err := c.Eval(ctx, "repr(x)", locals)
		if err != nil || r != tc.pyRepr {
			t.Errorf("%#v: Python sees %v (%v), want %s", tc.in, r, err, tc.pyRepr)
			continue
		}
		back, err := c.Eval(ctx, "x", locals)
		if err != nil {
			t.Errorf("%#v: %v", tc.in, err)
			continue
		}
		if tc.back != nil && back != tc.back {
			t.Errorf("%#v: back %#v, want %#v", tc.in, back, tc.back)
		}
		ok := true
		switch tc.backKind {
		case "[]any":
			_, ok = back.([]any)
		case "Dict":
			_, ok = back.(pyexec.Dict)
		case "map":
			_, ok = back.(map[string]any)
		case "*big.Int":
			b, isBig := back.(*big.Int)
			ok = isBig && b.String() == "18446744073709551615"
		case "[]byte":
			b, isBytes := back.([]byte)
			ok = isBytes && b != nil && len(b) == 0
		case "nil":
			ok = back == nil
		case "Set":
			_, ok = back.(pyexec.Set)
		}
		if !ok {
			t.Errorf("%#v: back as %T (%#v), want %s", tc.in, back, back, tc.backKind)
		}
	}
	// Dict keeps Python's order.
	v, err := c.Eval(ctx, "{3: 'c', 1: 'a', 2: 'b'}")
	if err != nil {
		t.Fatal(err)
	}
	d := v.(pyexec.Dict)
	if len(d) != 3 || d[0].Key != int64(3) || d[1].Key != int64(1) || d[2].Value != "b" {
		t.Fatalf("dict order: %#v", d)
	}
	v, err = c.Eval(ctx, "__import__('datetime').date(2024, 1, 2)")
	if err != nil || v != (pyexec.Opaque{Type: "datetime.date", Repr: "datetime.date(2024, 1, 2)"}) {
		t.Fatalf("opaque: %#v, %v", v, err)
	}
}
