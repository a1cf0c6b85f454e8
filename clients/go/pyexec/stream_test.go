package pyexec_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// bound binds a session on c for the test and unbinds it at the end.
func bound(t *testing.T, c *pyexec.Client) *pyexec.Session {
	t.Helper()
	s, err := c.Bind(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Unbind(context.Background()) })
	return s
}

func mustExec(t *testing.T, s *pyexec.Session, code string) {
	t.Helper()
	if err := s.Exec(testCtx(t), code); err != nil {
		t.Fatalf("Exec(%q): %v", code, err)
	}
}

func mustEval(t *testing.T, s *pyexec.Session, code string, opts ...pyexec.CallOption) any {
	t.Helper()
	v, err := s.Eval(testCtx(t), code, opts...)
	if err != nil {
		t.Fatalf("Eval(%q): %v", code, err)
	}
	return v
}

type seen struct {
	kind pyexec.EventKind
	x    any
}

func (e seen) String() string { return e.kind.String() }

func seenOf(ev pyexec.Event) seen {
	if ev.Kind == pyexec.EventValue {
		return seen{ev.Kind, ev.Value}
	}
	return seen{ev.Kind, ev.Text}
}

func collect(t *testing.T, st *pyexec.Stream) []seen {
	t.Helper()
	var out []seen
	for st.Next() {
		out = append(out, seenOf(st.Event()))
	}
	return out
}

// merged joins adjacent chunks of the same output stream. Where a chunk
// ends is not part of the contract (a line end, or 50 ms without one); the
// order and the content of the output are, and merging keeps both.
func merged(evs []seen) []seen {
	var out []seen
	for _, e := range evs {
		if n := len(out); n > 0 && e.kind != pyexec.EventValue && out[n-1].kind == e.kind {
			out[n-1].x = out[n-1].x.(string) + e.x.(string)
			continue
		}
		out = append(out, e)
	}
	return out
}

// eventsDiff describes the first difference between two event sequences,
// exact in order and count, or returns "" when they are equal: a reordered,
// lost, duplicated or extra event is a difference.
func eventsDiff(got, want []seen) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(want):
			return fmt.Sprintf("%d events, want %d: extra event %d = %s %#v", len(got), len(want), i, got[i].kind, got[i].x)
		case i >= len(got):
			return fmt.Sprintf("%d events, want %d: event %d (%s %#v) is missing", len(got), len(want), i, want[i].kind, want[i].x)
		case !reflect.DeepEqual(got[i], want[i]):
			return fmt.Sprintf("event %d = %s %#v, want %s %#v (%d events, want %d)",
				i, got[i].kind, got[i].x, want[i].kind, want[i].x, len(got), len(want))
		}
	}
	return ""
}

func TestEventsDiffCatchesReorderLossAndDuplicates(t *testing.T) {
	v := func(i int64) seen { return seen{pyexec.EventValue, i} }
	out := func(s string) seen { return seen{pyexec.EventStdout, s} }
	want := []seen{out("a\n"), v(0), v(1), v(2), out("b\n")}
	for name, got := range map[string][]seen{
		"reordered":        {out("a\n"), v(0), v(2), v(1), out("b\n")},
		"lost":             {out("a\n"), v(0), v(2), out("b\n")},
		"lost at the end":  {out("a\n"), v(0), v(1), v(2)},
		"duplicated":       {out("a\n"), v(0), v(1), v(1), v(2), out("b\n")},
		"output moved":     {v(0), out("a\n"), v(1), v(2), out("b\n")},
		"output lost":      {out("a"), v(0), v(1), v(2), out("b\n")},
		"stderr not out":   {out("a\n"), v(0), v(1), v(2), {pyexec.EventStderr, "b\n"}},
		"value is a float": {out("a\n"), {pyexec.EventValue, 0.0}, v(1), v(2), out("b\n")},
	} {
		if eventsDiff(merged(got), want) == "" {
			t.Errorf("%s: no difference found in %v", name, got)
		}
	}
	if d := eventsDiff(merged([]seen{out("a"), out("\n"), v(0), v(1), v(2), out("b\n")}), want); d != "" {
		t.Errorf("a chunk split in two: %s", d)
	}
}

func TestStreamOutputArrivesBeforeTheCallEnds(t *testing.T) {
	s := bound(t, dial(t))
	start := time.Now()
	st, err := s.ExecStream(testCtx(t), "import time\nprint('first')\ntime.sleep(1)\nprint('second')")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Next() {
		t.Fatalf("no first event: %v", st.Err())
	}
	firstAt := time.Since(start)
	if ev := st.Event(); ev.Kind != pyexec.EventStdout || ev.Text != "first\n" {
		t.Fatalf("first event = %+v", ev)
	}
	if firstAt >= 900*time.Millisecond {
		t.Fatalf("first chunk after %v: it waited for the call to end", firstAt)
	}
	rest := collect(t, st)
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []seen{{pyexec.EventStdout, "second\n"}}; !reflect.DeepEqual(rest, want) {
		t.Fatalf("rest = %v, want %v", rest, want)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("stream ended after %v, before the 1 s sleep", d)
	}
	t.Logf("first chunk after %v, end after %v", firstAt, time.Since(start))
}

func TestStreamGeneratorItemByItemThenPythonError(t *testing.T) {
	s := bound(t, dial(t))
	mustExec(t, s, `
import sys, time
def gen(n, pause):
    for i in range(n):
        print(f'making {i}')
        yield i
        time.sleep(pause)
    print('bad', file=sys.stderr)
    raise KeyError('k')
`)
	// The first item arrives while the generator sleeps after it.
	start := time.Now()
	st, err := s.CallStream(testCtx(t), "__main__", "gen", []any{2}, pyexec.WithKwargs(map[string]any{"pause": 1}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := []seen{}
	for st.Next() {
		ev := st.Event()
		if ev.Kind == pyexec.EventValue && ev.Value == int64(0) {
			if d := time.Since(start); d >= 900*time.Millisecond {
				t.Fatalf("item 0 after %v: not streamed item by item", d)
			}
		}
		if ev.Kind == pyexec.EventValue {
			got = append(got, seen{ev.Kind, ev.Value})
		} else {
			got = append(got, seen{ev.Kind, ev.Text})
		}
	}
	want := []seen{{pyexec.EventStdout, "making 0\n"}, {pyexec.EventValue, int64(0)},
		{pyexec.EventStdout, "making 1\n"}, {pyexec.EventValue, int64(1)},
		{pyexec.EventStderr, "bad\n"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %#v, want %#v", got, want)
	}
	var pe *pyexec.PythonError
	if !errors.As(st.Err(), &pe) || pe.Type != "KeyError" || !errors.Is(st.Err(), pyexec.ErrPython) {
		t.Fatalf("Err = %v, want a KeyError *PythonError", st.Err())
	}
	if st.Next() {
		t.Fatal("Next after the end")
	}

	// A list is iterated, item by item; a dict (a mapping) is one value;
	// stateless streams work.
	c := dial(t)
	st2, err := c.CallStream(testCtx(t), "builtins", "list", []any{pyexec.Tuple{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	got = collect(t, st2)
	if want := []seen{{pyexec.EventValue, int64(1)}, {pyexec.EventValue, int64(2)}, {pyexec.EventValue, int64(3)}}; !reflect.DeepEqual(got, want) || st2.Err() != nil {
		t.Fatalf("list stream = %v, %v", got, st2.Err())
	}
	st2, err = c.CallStream(testCtx(t), "builtins", "dict", nil, pyexec.WithKwargs(map[string]any{"a": 1}))
	if err != nil {
		t.Fatal(err)
	}
	got = collect(t, st2)
	if want := []seen{{pyexec.EventValue, map[string]any{"a": int64(1)}}}; !reflect.DeepEqual(got, want) || st2.Err() != nil {
		t.Fatalf("dict stream = %v, %v", got, st2.Err())
	}
	st3, err := c.ExecStream(testCtx(t), "print('x')")
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, st3); !reflect.DeepEqual(got, []seen{{pyexec.EventStdout, "x\n"}}) || st3.Err() != nil {
		t.Fatalf("stateless ExecStream = %v, %v", got, st3.Err())
	}
}

// TestStreamLongGeneratorExactOrder: every event of a long stream arrives
// once, in the order Python produced it, while backpressure pauses and
// resumes reading the worker many times (pyexecd holds only a few unconsumed
// events per call, and this reader also stops reading twice for a while).
func TestStreamLongGeneratorExactOrder(t *testing.T) {
	s := bound(t, dial(t))
	mustExec(t, s, `
import sys
def counted(n, every):
    for i in range(n):
        if i % every == 0:
            print(f'at {i}')
        yield i
    print('done', file=sys.stderr)
`)
	const n, every = 10000, 500
	var want []seen
	for i := 0; i < n; i++ {
		if i%every == 0 {
			want = append(want, seen{pyexec.EventStdout, fmt.Sprintf("at %d\n", i)})
		}
		want = append(want, seen{pyexec.EventValue, int64(i)})
	}
	want = append(want, seen{pyexec.EventStderr, "done\n"})
	st, err := s.CallStream(testCtx(t), "__main__", "counted", []any{n, every})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []seen
	for st.Next() {
		ev := seenOf(st.Event())
		got = append(got, ev)
		if ev.kind == pyexec.EventValue && (ev.x == int64(100) || ev.x == int64(n/2)) {
			// Not a synchronisation: the pause lets the transport's window
			// and pyexecd's buffer fill, so that reading resumes from full.
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("Err = %v after %d events", err, len(got))
	}
	if d := eventsDiff(merged(got), want); d != "" {
		t.Fatal(d)
	}
}

// TestStreamLongOutputExactOrder: a long ExecStream's stdout and stderr
// arrive complete and in the order they were written, interleaved.
func TestStreamLongOutputExactOrder(t *testing.T) {
	c := dial(t)
	const n = 3000
	st, err := c.ExecStream(testCtx(t), fmt.Sprintf(`
import sys
for i in range(%d):
    print(i, file=sys.stderr if i %% 7 == 0 else sys.stdout)
`, n))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var want []seen
	for i := 0; i < n; i++ {
		kind := pyexec.EventStdout
		if i%7 == 0 {
			kind = pyexec.EventStderr
		}
		want = append(want, seen{kind, fmt.Sprintf("%d\n", i)})
	}
	got := collect(t, st)
	if err := st.Err(); err != nil {
		t.Fatalf("Err = %v after %d events", err, len(got))
	}
	if d := eventsDiff(merged(got), merged(want)); d != "" {
		t.Fatal(d)
	}
}

// TestStreamEarlyCloseExactPrefixEveryTime reads the first items of an
// endless generator and closes the stream, many times: each run must see
// exactly 1, 2, ... in order (a batch of events overtaken by later ones, or
// dropped, once pyexecd paused reading the worker, shows here).
func TestStreamEarlyCloseExactPrefixEveryTime(t *testing.T) {
	s := bound(t, dial(t))
	mustExec(t, s, "def forever():\n    i = 0\n    while True:\n        i += 1\n        yield i\n")
	const runs, items = 30, 40
	want := make([]seen, items)
	for i := range want {
		want[i] = seen{pyexec.EventValue, int64(i + 1)}
	}
	for r := 0; r < runs; r++ {
		st, err := s.CallStream(testCtx(t), "__main__", "forever", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []seen
		for len(got) < items && st.Next() {
			got = append(got, seenOf(st.Event()))
		}
		err = st.Err()
		st.Close()
		if err != nil {
			t.Fatalf("run %d: Err = %v", r, err)
		}
		if d := eventsDiff(got, want); d != "" {
			t.Fatalf("run %d: %s", r, d)
		}
	}
}

func TestStreamCloseAndCancelMidStreamKeepState(t *testing.T) {
	s := bound(t, dial(t))
	mustExec(t, s, `
state = 42
made = 0
def gen():
    global made
    while True:
        made += 1
        yield made
`)
	// Close from the reader after 5 items.
	st, err := s.CallStream(testCtx(t), "__main__", "gen", nil)
	if err != nil {
		t.Fatal(err)
	}
	var items []any
	for len(items) < 5 && st.Next() {
		items = append(items, st.Event().Value)
	}
	if !reflect.DeepEqual(items, []any{int64(1), int64(2), int64(3), int64(4), int64(5)}) {
		t.Fatalf("items = %v (err %v)", items, st.Err())
	}
	st.Close()
	if st.Next() || st.Err() != nil {
		t.Fatalf("after Close: Next true or Err = %v", st.Err())
	}
	if v := mustEval(t, s, "state"); v != int64(42) {
		t.Fatalf("state = %v after Close", v)
	}
	if v := mustEval(t, s, "made"); v.(int64) < 5 {
		t.Fatalf("made = %v", v)
	}

	// Close from another goroutine while Next waits on a silent loop.
	st, err = s.ExecStream(testCtx(t), "print('go')\nwhile True: pass")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Next() || st.Event().Text != "go\n" {
		t.Fatalf("first event %+v, err %v", st.Event(), st.Err())
	}
	go st.Close()
	if st.Next() || st.Err() != nil {
		t.Fatalf("after a concurrent Close: Next true or Err = %v", st.Err())
	}
	if v := mustEval(t, s, "state"); v != int64(42) {
		t.Fatalf("state = %v after a concurrent Close", v)
	}

	// Cancelling ctx mid-stream: Err is ErrCancelled (and context.Canceled).
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	st, err = s.CallStream(ctx, "__main__", "gen", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []seen
	for st.Next() {
		if got = append(got, seenOf(st.Event())); len(got) == 3 {
			cancel()
		}
	}
	if !errors.Is(st.Err(), pyexec.ErrCancelled) || !errors.Is(st.Err(), context.Canceled) {
		t.Fatalf("Err after cancel = %v", st.Err())
	}
	// gen counts on from where the earlier streams left `made`. Items
	// already on their way may follow the cancel, but only as the next
	// ones: k, k+1, k+2, ... with none lost or out of place.
	if len(got) < 3 || got[0].kind != pyexec.EventValue {
		t.Fatalf("events before the end = %v, want at least the 3 items read before cancel", got)
	}
	first, _ := got[0].x.(int64)
	want := make([]seen, len(got))
	for i := range want {
		want[i] = seen{pyexec.EventValue, first + int64(i)}
	}
	if d := eventsDiff(got, want); d != "" {
		t.Fatalf("cancelled stream: %s", d)
	}
	if v := mustEval(t, s, "state"); v != int64(42) {
		t.Fatalf("state = %v after cancel", v)
	}
}

func TestStreamDeadlineAndStatusErrors(t *testing.T) {
	c := dial(t)
	s := bound(t, c)
	mustExec(t, s, "x = 5")
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	st, err := s.ExecStream(ctx, "while True: pass")
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, st); len(got) != 0 {
		t.Fatalf("events = %v", got)
	}
	if !errors.Is(st.Err(), pyexec.ErrTimeout) {
		t.Fatalf("Err = %v, want ErrTimeout", st.Err())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadline took %v", d)
	}
	if v := mustEval(t, s, "x"); v != int64(5) {
		t.Fatalf("x = %v after the deadline", v)
	}

	st, err = c.Attach("no-such-token").ExecStream(testCtx(t), "1")
	if err == nil {
		collect(t, st)
		err = st.Err()
	}
	if !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
	st, err = c.ExecStream(testCtx(t), "")
	if err == nil {
		collect(t, st)
		err = st.Err()
	}
	if !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("empty code: %v", err)
	}
	if _, err := c.ExecStream(testCtx(t), "1", pyexec.WithOutput(&pyexec.Output{})); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("WithOutput on a stream: %v", err)
	}
}

func TestRefsRoundTripMethodsAttributes(t *testing.T) {
	c := dial(t)
	s := bound(t, c)
	ctx := testCtx(t)
	mustExec(t, s, `
class Model:
    def __init__(self, w):
        self.w = w
        self.cfg = type('Cfg', (), {'name': 'in'})()
    def predict(self, x, bias=0):
        return self.w * x + bias
`)
	v := mustEval(t, s, "Model(3)")
	m, ok := v.(pyexec.Ref)
	if !ok || len(m.ID) != 24 || m.Repr == "" {
		t.Fatalf("Model(3) = %#v, want a Ref", v)
	}
	if got, err := s.CallMethod(ctx, m, "predict", []any{5}, pyexec.WithKwargs(map[string]any{"bias": 1})); err != nil || got != int64(16) {
		t.Fatalf("CallMethod = %v, %v", got, err)
	}
	if got, err := s.GetAttr(ctx, m, "w"); err != nil || got != int64(3) {
		t.Fatalf("GetAttr = %v, %v", got, err)
	}
	if got, err := s.GetAttr(ctx, m, "cfg.name"); err != nil || got != "in" {
		t.Fatalf("GetAttr dotted = %v, %v", got, err)
	}
	// Back as a local, an argument, and nested.
	if got := mustEval(t, s, "m.predict(2)", pyexec.WithLocals(map[string]any{"m": m})); got != int64(6) {
		t.Fatalf("ref as local: %v", got)
	}
	if got, err := s.Call(ctx, "builtins", "getattr", []any{m, "w"}); err != nil || got != int64(3) {
		t.Fatalf("ref as arg: %v, %v", got, err)
	}
	if got := mustEval(t, s, "m is n[0]", pyexec.WithLocals(map[string]any{"m": m, "n": []any{m}})); got != true {
		t.Fatalf("same object: %v", got)
	}
	// Nested result: [1, ref].
	got := mustEval(t, s, "[1, Model(1)]").([]any)
	if _, ok := got[1].(pyexec.Ref); !ok || got[0] != int64(1) {
		t.Fatalf("nested = %#v", got)
	}
	// result_as_ref keeps a convertible result in Python.
	big, ok := mustEval(t, s, "list(range(100000))", pyexec.WithResultAsRef()).(pyexec.Ref)
	if !ok || big.Type != "list" {
		t.Fatalf("result_as_ref = %#v", big)
	}
	if n, err := s.Call(ctx, "builtins", "len", []any{big}); err != nil || n != int64(100000) {
		t.Fatalf("len(ref) = %v, %v", n, err)
	}
	if r, err := s.Call(ctx, "builtins", "sum", []any{[]any{1, 2}}, pyexec.WithResultAsRef()); err != nil {
		t.Fatal(err)
	} else if _, ok := r.(pyexec.Ref); !ok {
		t.Fatalf("Call result_as_ref = %#v", r)
	}
	if r, err := s.CallMethod(ctx, m, "predict", []any{1}, pyexec.WithResultAsRef()); err != nil {
		t.Fatal(err)
	} else if _, ok := r.(pyexec.Ref); !ok {
		t.Fatalf("CallMethod result_as_ref = %#v", r)
	}
	// A generator's items with no Value kind stream as refs, methods too.
	st, err := s.CallMethodStream(ctx, m, "predict", []any{7})
	if err != nil {
		t.Fatal(err)
	}
	if items := collect(t, st); !reflect.DeepEqual(items, []seen{{pyexec.EventValue, int64(21)}}) || st.Err() != nil {
		t.Fatalf("CallMethodStream = %v, %v", items, st.Err())
	}
	// Stateless: opaque, and result_as_ref is refused.
	if o, err := c.Eval(ctx, "object()"); err != nil {
		t.Fatal(err)
	} else if _, ok := o.(pyexec.Opaque); !ok {
		t.Fatalf("stateless object() = %#v", o)
	}
	if _, err := c.Eval(ctx, "1", pyexec.WithResultAsRef()); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("stateless result_as_ref: %v", err)
	}
	if err := s.Exec(ctx, "1", pyexec.WithResultAsRef()); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("Exec with WithResultAsRef: %v", err)
	}
}

func TestRefReleaseAndForeignRefs(t *testing.T) {
	c := dial(t)
	a, b := bound(t, c), bound(t, c)
	ctx := testCtx(t)
	ra := mustEval(t, a, "object()").(pyexec.Ref)
	// Another session cannot reach it.
	_, err := b.Call(ctx, "builtins", "id", []any{ra})
	if !errors.Is(err, pyexec.ErrUnknownRef) || !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("foreign ref: %v", err)
	}
	if _, err := b.GetAttr(ctx, ra, "__class__"); !errors.Is(err, pyexec.ErrUnknownRef) {
		t.Fatalf("foreign target ref: %v", err)
	}
	if n, err := b.Release(ctx, ra); err != nil || n != 0 {
		t.Fatalf("Release on the other session = %v, %v", n, err)
	}
	if _, err := a.Call(ctx, "builtins", "id", []any{ra}); err != nil {
		t.Fatalf("ref dead after a foreign Release: %v", err)
	}
	if n, err := a.Release(ctx, ra, pyexec.Ref{ID: "made-up"}); err != nil || n != 1 {
		t.Fatalf("Release = %v, %v", n, err)
	}
	if n, err := a.Release(ctx, ra); err != nil || n != 0 {
		t.Fatalf("second Release = %v, %v", n, err)
	}
	_, err = a.Call(ctx, "builtins", "id", []any{ra})
	if !errors.Is(err, pyexec.ErrUnknownRef) {
		t.Fatalf("released ref: %v", err)
	}
	if _, err := a.CallMethod(ctx, ra, "__repr__", nil); !errors.Is(err, pyexec.ErrUnknownRef) {
		t.Fatalf("method of a released ref: %v", err)
	}
	if errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatal("unknown ref must not look like a lost session")
	}
	if v := mustEval(t, a, "1+1"); v != int64(2) {
		t.Fatalf("session broken after unknown ref: %v", v)
	}
	if _, err := c.Attach("no-such-token").Release(ctx, ra); !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("Release on unknown session: %v", err)
	}
	// A plain INVALID_ARGUMENT is not an unknown ref.
	if _, err := a.Eval(ctx, ""); !errors.Is(err, pyexec.ErrInvalidArgument) || errors.Is(err, pyexec.ErrUnknownRef) {
		t.Fatalf("empty code: %v", err)
	}
}

func TestRefLimit(t *testing.T) {
	srv, err := startServer(pyexecdPath(), "--workers=1", "--max_workers=2", "--max_refs_per_session=3",
		"--drain_timeout=1s", "--kill_grace=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := pyexec.Dial(srv.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := bound(t, c)
	ctx := testCtx(t)
	refs := mustEval(t, s, "[object(), object()]").([]any)
	_, err = s.Eval(ctx, "[object(), object()]")
	if !errors.Is(err, pyexec.ErrRefLimit) || !errors.Is(err, pyexec.ErrPoolExhausted) {
		t.Fatalf("past the limit: %v", err)
	}
	if n, err := s.Release(ctx, refs[0].(pyexec.Ref), refs[1].(pyexec.Ref)); err != nil || n != 2 {
		t.Fatalf("Release = %v, %v", n, err)
	}
	if _, err := s.Eval(ctx, "[object(), object()]"); err != nil {
		t.Fatalf("after Release: %v", err)
	}
}

func TestInterruptFromAnotherGoroutineKeepsState(t *testing.T) {
	c := dial(t)
	s := bound(t, c)
	ctx := testCtx(t)
	mustExec(t, s, "x = 5")
	if ok, err := s.Interrupt(ctx); err != nil || ok {
		t.Fatalf("Interrupt when idle = %v, %v", ok, err)
	}
	// The stream's first chunk is the signal that the loop is running.
	running := make(chan struct{})
	type result struct {
		events []seen
		err    error
	}
	ended := make(chan result, 1)
	go func() {
		st, err := s.ExecStream(ctx, "print('running')\nwhile True: pass")
		if err != nil {
			close(running)
			ended <- result{nil, err}
			return
		}
		defer st.Close()
		var evs []seen
		for st.Next() {
			if evs = append(evs, seenOf(st.Event())); len(evs) == 1 {
				close(running)
			}
		}
		ended <- result{evs, st.Err()}
	}()
	<-running
	start := time.Now()
	if ok, err := s.Interrupt(ctx); err != nil || !ok {
		t.Fatalf("Interrupt = %v, %v", ok, err)
	}
	select {
	case r := <-ended:
		if !errors.Is(r.err, pyexec.ErrCancelled) {
			t.Fatalf("interrupted call ended with %v, want ErrCancelled", r.err)
		}
		if d := eventsDiff(r.events, []seen{{pyexec.EventStdout, "running\n"}}); d != "" {
			t.Fatalf("interrupted stream: %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop was not interrupted within 10 s")
	}
	t.Logf("interrupted after %v", time.Since(start))
	if v := mustEval(t, s, "x"); v != int64(5) {
		t.Fatalf("x = %v after Interrupt", v)
	}
	// A plain Exec in another goroutine, interrupted when the server says
	// something is running (Interrupt answers false until then).
	done := make(chan error, 1)
	go func() { done <- s.Exec(ctx, "while True: pass") }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := s.Interrupt(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Interrupt never saw the Exec running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; !errors.Is(err, pyexec.ErrCancelled) {
		t.Fatalf("interrupted Exec: %v", err)
	}
	if v := mustEval(t, s, "x"); v != int64(5) {
		t.Fatalf("x = %v after Interrupt of Exec", v)
	}
	if _, err := c.Attach("no-such-token").Interrupt(ctx); !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("Interrupt of unknown session: %v", err)
	}
}
