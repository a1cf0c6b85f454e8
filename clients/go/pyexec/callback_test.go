package pyexec_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// dialFuncs is a client of its own (functions are registered per client).
func dialFuncs(t *testing.T, funcs map[string]pyexec.Func) *pyexec.Client {
	t.Helper()
	c, err := pyexec.Dial(shared.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for name, fn := range funcs {
		c.RegisterFunction(name, fn)
	}
	return c
}

func TestCallbackValuesBothWays(t *testing.T) {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
	var got []any
	var gotKw map[string]any
	c := dialFuncs(t, map[string]pyexec.Func{
		"echo": func(_ context.Context, args []any, kwargs map[string]any) (any, error) {
			got, gotKw = args, kwargs
			return pyexec.Tuple{args, kwargs}, nil
		},
		"give": func(context.Context, []any, map[string]any) (any, error) {
			return []any{nil, true, int64(-5), big70, 2.5, math.Inf(-1), "héllo", []byte{0, 255},
				pyexec.Tuple{1}, pyexec.Set{"s"}, map[string]any{"k": []any{}},
				pyexec.Dict{{Key: int64(1), Value: "one"}, {Key: pyexec.Tuple{1, 2}, Value: nil}}}, nil
		},
	})
	ctx := testCtx(t)
	// Python -> Go: every kind arrives as the documented Go type.
	v, err := c.Eval(ctx, "pyexec.call('echo', None, True, 2**70, -1.5, 'x', b'\\x00', (1,), {2}, [3], {1: 'a'}, k={'s': 'v'})")
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := []any{nil, true, big70, -1.5, "x", []byte{0}, pyexec.Tuple{int64(1)}, pyexec.Set{int64(2)},
		[]any{int64(3)}, pyexec.Dict{{Key: int64(1), Value: "a"}}}
	if !reflect.DeepEqual(got, wantArgs) {
		t.Fatalf("args = %#v\nwant %#v", got, wantArgs)
	}
	if want := map[string]any{"k": map[string]any{"s": "v"}}; !reflect.DeepEqual(gotKw, want) {
		t.Fatalf("kwargs = %#v", gotKw)
	}
	if tup, ok := v.(pyexec.Tuple); !ok || !reflect.DeepEqual(tup[0], wantArgs) {
		t.Fatalf("echoed back: %#v", v)
	}
	// Go -> Python: each value has the Python type it should.
	types, err := c.Eval(ctx, "[type(x).__name__ for x in pyexec.call('give')] + [pyexec.call('give')[3] == 2**70, pyexec.call('give')[11][(1, 2)]]")
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"NoneType", "bool", "int", "int", "float", "float", "str", "bytes", "tuple", "set", "dict", "dict", true, nil}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("Python types %v\nwant %v", types, want)
	}
}

func TestCallbackErrorsBothWays(t *testing.T) {
	var sess *pyexec.Session
	var sawPyErr atomic.Value
	c := dialFuncs(t, map[string]pyexec.Func{
		"fails": func(context.Context, []any, map[string]any) (any, error) {
			return nil, fmt.Errorf("no such user %q", "bob")
		},
		"typed": func(context.Context, []any, map[string]any) (any, error) {
			return nil, &pyexec.PythonError{Type: "KeyError", Message: "bob"}
		},
		"panics": func(context.Context, []any, map[string]any) (any, error) {
			panic("boom")
		},
		"unsendable": func(context.Context, []any, map[string]any) (any, error) {
			return make(chan int), nil
		},
		// Python -> Go: the nested call's exception is a *PythonError here.
		"nested": func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
			_, err := sess.Eval(ctx, "1/0")
			var pe *pyexec.PythonError
			if errors.As(err, &pe) {
				sawPyErr.Store(pe.Type)
			}
			return nil, err
		},
	})
	ctx := testCtx(t)
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unbind(context.Background())
	sess = s
	cases := []struct{ fn, typ, msg string }{
		{"fails", "GoError", `no such user "bob"`},
		{"typed", "KeyError", "bob"},
		{"panics", "GoPanic", "boom"},
		{"unsendable", "TypeError", "cannot be sent"},
		{"nested", "ZeroDivisionError", "division by zero"},
		{"missing", "LookupError", `no function registered as "missing"`},
	}
	mustExec(t, s, `
def _try(name):
    try:
        pyexec.call(name)
    except pyexec.CallbackError as e:
        return e
    return None
`)
	for _, k := range cases {
		v, err := s.Eval(ctx, fmt.Sprintf("(lambda e: (type(e).__name__, e.type, e.message, str(e)))(_try(%q))", k.fn))
		if err != nil {
			t.Fatalf("%s: %v", k.fn, err)
		}
		tup := v.(pyexec.Tuple)
		if tup[0] != "CallbackError" || tup[1] != k.typ || !strings.Contains(tup[2].(string), k.msg) {
			t.Errorf("%s: Python saw %v; want CallbackError type %s message containing %q", k.fn, tup, k.typ, k.msg)
		}
	}
	if sawPyErr.Load() != "ZeroDivisionError" {
		t.Errorf("the nested call's error in Go: %v", sawPyErr.Load())
	}
	// Uncaught, the callback's error is the call's *PythonError; the session
	// is fine afterwards.
	_, err = s.Eval(ctx, "pyexec.call('fails')")
	var pe *pyexec.PythonError
	if !errors.As(err, &pe) || pe.Type != "CallbackError" || !strings.Contains(pe.Message, "no such user") {
		t.Fatalf("uncaught: %v", err)
	}
	// A Python error after a callback returned is an ordinary *PythonError.
	_, err = s.Eval(ctx, "pyexec.call('missing') if False else 1/0")
	if !errors.As(err, &pe) || pe.Type != "ZeroDivisionError" {
		t.Fatalf("after: %v", err)
	}
	if v := mustEval(t, s, "2+2"); v != int64(4) {
		t.Fatal(v)
	}
}

// TestCallbackReentryFiveLevels: Python -> Go -> Call -> Python -> Go ...,
// every level on the session's one interpreter.
func TestCallbackReentryFiveLevels(t *testing.T) {
	var sess *pyexec.Session
	var pids sync.Map
	c := dialFuncs(t, map[string]pyexec.Func{
		"down": func(ctx context.Context, args []any, _ map[string]any) (any, error) {
			v, err := sess.Call(ctx, "__main__", "down", args)
			if err != nil {
				return nil, err
			}
			pair := v.(pyexec.Tuple)
			pids.Store(pair[0], true)
			return pyexec.Tuple{pair[0], pair[1].(int64) + 1}, nil
		},
	})
	ctx := testCtx(t)
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unbind(context.Background())
	sess = s
	mustExec(t, s, `
import os
def down(n):
    if n == 0:
        return (os.getpid(), 0)
    pid, depth = pyexec.call('down', n - 1)
    return (os.getpid(), depth + 1)
`)
	v, err := s.Call(ctx, "__main__", "down", []any{5})
	if err != nil {
		t.Fatal(err)
	}
	// down(5) -> Go(4) -> down(4) -> ... -> Go(0) -> down(0): 5 Python and
	// 5 Go levels above down(0).
	if got := v.(pyexec.Tuple)[1]; got != int64(10) {
		t.Fatalf("depth %v, want 10", got)
	}
	n := 0
	pids.Range(func(k, _ any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("nested calls ran on %d interpreters, want 1", n)
	}
}

// TestCallbackReentryStateless: a callback of a stateless Eval makes
// stateless calls with its ctx; they run on the interpreter that waits for
// it (x-pyexec-callback), 5 Go and 5 Python levels deep, as erlang_python's
// erlang.call from py:eval does.
func TestCallbackReentryStateless(t *testing.T) {
	var c *pyexec.Client
	c = dialFuncs(t, map[string]pyexec.Func{
		"down": func(ctx context.Context, args []any, _ map[string]any) (any, error) {
			n := args[0].(int64)
			code := "(__import__('os').getpid(), 0)"
			if n > 0 {
				code = "(lambda p: (__import__('os').getpid(), p[1] + 1) if p[0] == __import__('os').getpid() else (p[0], -100))(pyexec.call('down', n - 1))"
			}
			v, err := c.Eval(ctx, code, pyexec.WithLocals(map[string]any{"n": n}))
			if err != nil {
				return nil, err
			}
			pair := v.(pyexec.Tuple)
			return pyexec.Tuple{pair[0], pair[1].(int64) + 1}, nil
		},
	})
	ctx := testCtx(t)
	v, err := c.Eval(ctx, "(lambda p: (__import__('os').getpid() == p[0], p[1]))(pyexec.call('down', 4))")
	if err != nil {
		t.Fatal(err)
	}
	// The outer Eval -> Go(4) -> Eval -> Go(3) ... -> Go(0) -> Eval: every
	// Eval on the outer one's interpreter (a different pid makes the depth
	// negative), 5 Go levels each adding 1 and 4 Python levels adding 1.
	pair := v.(pyexec.Tuple)
	if pair[0] != true || pair[1] != int64(9) {
		t.Fatalf("(same interpreter, depth) = %v, want (true, 9)", pair)
	}
}

func TestCallbacksConcurrent(t *testing.T) {
	var running, peak atomic.Int32
	c := dialFuncs(t, map[string]pyexec.Func{
		"ident": func(_ context.Context, args []any, _ map[string]any) (any, error) {
			return args[0], nil
		},
		"slow": func(ctx context.Context, args []any, _ map[string]any) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(300 * time.Millisecond)
			return args[0], nil
		},
	})
	ctx := testCtx(t)
	// Six sessions' calls wait on a 300 ms callback at the same time: the
	// client runs them at once, so they take about 300 ms, not 1.8 s. (Not
	// several Python threads of one call: the worker reads its socket from
	// each of them, and their answers get mixed up.)
	sessions := make([]*pyexec.Session, 6)
	for i := range sessions {
		s, err := c.Bind(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Unbind(context.Background())
		sessions[i] = s
	}
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]any, len(sessions))
	for i, s := range sessions {
		wg.Add(1)
		go func(i int, s *pyexec.Session) {
			defer wg.Done()
			v, err := s.Eval(ctx, fmt.Sprintf("pyexec.call('slow', %d) * 2", i))
			if err != nil {
				v = err
			}
			results[i] = v
		}(i, s)
	}
	wg.Wait()
	d := time.Since(start)
	for i, v := range results {
		if v != int64(2*i) {
			t.Fatalf("session %d: %v", i, v)
		}
	}
	if peak.Load() < 4 || d > 1500*time.Millisecond {
		t.Fatalf("6 callbacks of 300 ms: %d at once at most, %v", peak.Load(), d)
	}
	t.Logf("6 concurrent callbacks of 300 ms: %v, %d at once", d, peak.Load())
	// Concurrent callers, stateless and on sessions, each get their own answers.
	errs := make(chan error, 100)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var r runner = c
			if i%2 == 1 {
				s, err := c.Bind(ctx)
				if err != nil {
					errs <- err
					return
				}
				defer s.Unbind(context.Background())
				r = s
			}
			for j := 0; j < 20; j++ {
				want := int64(i*1000 + j)
				got, err := r.Eval(ctx, fmt.Sprintf("pyexec.call('ident', %d)", want))
				if err != nil || got != want {
					errs <- fmt.Errorf("caller %d: %v, %v; want %d", i, got, err, want)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCallbackThatNeverAnswers(t *testing.T) {
	ended := make(chan error, 1)
	c := dialFuncs(t, map[string]pyexec.Func{
		"never": func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
			<-ctx.Done()
			ended <- ctx.Err()
			return nil, ctx.Err()
		},
	})
	s, err := c.Bind(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unbind(context.Background())
	mustExec(t, s, "x = 3")
	ctx, cancel := context.WithTimeout(testCtx(t), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Exec(ctx, "try:\n    pyexec.call('never')\nexcept TimeoutError:\n    r = 'timed out'")
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	// Python's TimeoutError came before the deadline: the Exec succeeded.
	t.Logf("pyexec.call raised TimeoutError after %v (deadline 1.5 s)", time.Since(start))
	if v := mustEval(t, s, "(r, x)"); !reflect.DeepEqual(v, pyexec.Tuple{"timed out", int64(3)}) {
		t.Fatalf("after: %v", v)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the function's ctx was not cancelled when its call ended")
	}
}

// TestCallbackWaitingCallIsInterrupted: a named call waiting on its
// callback is interrupted; the function's ctx is cancelled.
func TestCallbackWaitingCallIsInterrupted(t *testing.T) {
	entered := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	c := dialFuncs(t, map[string]pyexec.Func{
		"wait": func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
			entered <- struct{}{}
			<-ctx.Done()
			cancelled <- struct{}{}
			return nil, ctx.Err()
		},
	})
	ctx := testCtx(t)
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unbind(context.Background())
	r := s.GoEval(ctx, "pyexec.call('wait')")
	<-entered
	if ok, err := r.Interrupt(ctx); err != nil || !ok {
		t.Fatalf("Interrupt = %v, %v", ok, err)
	}
	if _, err := r.Wait(); !errors.Is(err, pyexec.ErrCancelled) {
		t.Fatalf("interrupted call: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the function's ctx was not cancelled")
	}
	if v := mustEval(t, s, "1"); v != int64(1) {
		t.Fatal(v)
	}
}

func TestCallbackPerCallAndUnregister(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	// No function: a plain Eval, and Python says the client has none.
	_, err := c.Eval(ctx, "pyexec.call('f')")
	var pe *pyexec.PythonError
	if !errors.As(err, &pe) || pe.Type != "RuntimeError" || !strings.Contains(pe.Message, "registered no functions") {
		t.Fatalf("without functions: %v", err)
	}
	// A per-call function.
	f := func(_ context.Context, args []any, kw map[string]any) (any, error) {
		return fmt.Sprint("per-call ", args, kw["k"]), nil
	}
	v, err := c.Eval(ctx, "pyexec.call('f', 1, k=2)", pyexec.WithFunction("f", f))
	if err != nil || v != "per-call [1] 2" {
		t.Fatalf("WithFunction: %v, %v", v, err)
	}
	v, err = c.Call(ctx, "builtins", "eval", []any{"__import__('erlang').call('f', 'x')"}, pyexec.WithFunction("f", f))
	if err != nil || v != "per-call [x] <nil>" {
		t.Fatalf("WithFunction on Call: %v, %v", v, err)
	}
	if _, err := c.ExecStream(ctx, "1", pyexec.WithFunction("f", f)); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("WithFunction on a stream: %v", err)
	}
	// Registered, then overridden for one call, then unregistered.
	c.RegisterFunction("f", func(context.Context, []any, map[string]any) (any, error) { return "registered", nil })
	if v, err := c.Eval(ctx, "pyexec.call('f')"); err != nil || v != "registered" {
		t.Fatalf("registered: %v, %v", v, err)
	}
	if v, err := c.Eval(ctx, "pyexec.call('f', 0)", pyexec.WithFunction("f", f)); err != nil || v != "per-call [0] <nil>" {
		t.Fatalf("per-call over registered: %v, %v", v, err)
	}
	if err := c.Exec(ctx, "assert pyexec.call('f') == 'registered'"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	c.UnregisterFunction("f")
	_, err = c.Eval(ctx, "pyexec.call('f')")
	if !errors.As(err, &pe) || pe.Type != "RuntimeError" {
		t.Fatalf("after UnregisterFunction: %v", err)
	}
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// TestCallbackLatency prints a callback's round trip and Run's cost next to
// a plain Eval, on one session (medians of interleaved rounds).
func TestCallbackLatency(t *testing.T) {
	plain := dial(t)
	withFn := dialFuncs(t, map[string]pyexec.Func{
		"f": func(context.Context, []any, map[string]any) (any, error) { return int64(1), nil },
	})
	ctx := testCtx(t)
	s, err := plain.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unbind(context.Background())
	viaRun := withFn.Attach(s.Token())
	const rounds = 300
	var eval, run, cb []time.Duration
	measure := func(into *[]time.Duration, f func() (any, error)) {
		start := time.Now()
		v, err := f()
		*into = append(*into, time.Since(start))
		if err != nil || v != int64(1) {
			t.Fatalf("%v, %v", v, err)
		}
	}
	for i := 0; i < rounds+20; i++ {
		if i == 20 { // warm-up
			eval, run, cb = nil, nil, nil
		}
		measure(&eval, func() (any, error) { return s.Eval(ctx, "1") })
		measure(&run, func() (any, error) { return viaRun.Eval(ctx, "1") })
		measure(&cb, func() (any, error) { return viaRun.Eval(ctx, "pyexec.call('f')") })
	}
	me, mr, mc := median(eval), median(run), median(cb)
	fmt.Printf("latency (median of %d): Eval %v, Eval as Run %v (%.2fx), Eval with one callback %v (%.2fx Eval)\n",
		rounds, me.Round(time.Microsecond), mr.Round(time.Microsecond), float64(mr)/float64(me),
		mc.Round(time.Microsecond), float64(mc)/float64(me))
}
