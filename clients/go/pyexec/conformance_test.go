package pyexec_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// TestConformance runs clients/conformance/vectors.json through the public
// API, per clients/conformance/README.md.

type vcase struct {
	Name       string                     `json:"name"`
	Kind       string                     `json:"kind"`
	Value      json.RawMessage            `json:"value"`
	PythonType *string                    `json:"python_type"`
	Code       string                     `json:"code"`
	Setup      string                     `json:"setup"`
	Expect     json.RawMessage            `json:"expect"`
	Module     string                     `json:"module"`
	Function   string                     `json:"function"`
	Args       []json.RawMessage          `json:"args"`
	Kwargs     map[string]json.RawMessage `json:"kwargs"`
	Op         string                     `json:"op"`
	Error      struct {
		Type              string `json:"type"`
		MessageContains   string `json:"message_contains"`
		TracebackContains string `json:"traceback_contains"`
	} `json:"error"`
	Scenario       string  `json:"scenario"`
	TimeoutSeconds float64 `json:"timeout_seconds"`
	Depth          int     `json:"depth"`
	// v2
	ExpectItems  []json.RawMessage          `json:"expect_items"`
	Type         string                     `json:"type"`
	Use          string                     `json:"use"`
	AfterRelease string                     `json:"after_release"`
	Functions    map[string]json.RawMessage `json:"functions"`
	Eval         string                     `json:"eval"`
	GraceSeconds float64                    `json:"grace_seconds"`
	Rounds       int                        `json:"rounds"`
}

// canon is a value in a comparable, kind-exact form: expectations are
// parsed into it from tagged JSON and results are read into it from the
// client's native Go values, so a lossy native mapping shows as a mismatch.
type canon struct {
	Kind   string
	Scalar string  // bool, int, str, bytes; opaque type
	F      float64 // float
	Repr   *string // opaque
	Items  []canon
	Keys   []canon
}

func (c canon) String() string {
	switch c.Kind {
	case "float":
		return fmt.Sprintf("float(%v)", c.F)
	case "list", "tuple", "set":
		parts := make([]string, len(c.Items))
		for i, it := range c.Items {
			parts[i] = it.String()
		}
		return c.Kind + "[" + strings.Join(parts, ", ") + "]"
	case "dict":
		parts := make([]string, len(c.Items))
		for i := range c.Items {
			parts[i] = c.Keys[i].String() + ": " + c.Items[i].String()
		}
		return "dict{" + strings.Join(parts, ", ") + "}"
	}
	s := c.Kind + "(" + strconv.Quote(c.Scalar)
	if c.Repr != nil {
		s += ", " + strconv.Quote(*c.Repr)
	}
	return s + ")"
}

func oneKey(raw json.RawMessage) (string, json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", nil, err
	}
	if len(m) != 1 {
		return "", nil, fmt.Errorf("tagged value with %d keys: %s", len(m), raw)
	}
	for k, v := range m {
		return k, v, nil
	}
	panic("unreachable")
}

func parseFloat(raw json.RawMessage) (float64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "nan":
			return math.NaN(), nil
		case "inf":
			return math.Inf(1), nil
		case "-inf":
			return math.Inf(-1), nil
		}
		return 0, fmt.Errorf("bad float %q", s)
	}
	var f float64
	err := json.Unmarshal(raw, &f)
	return f, err
}

// tagToNative converts a tagged JSON value to the client's native Go value.
func tagToNative(raw json.RawMessage) (any, error) {
	tag, body, err := oneKey(raw)
	if err != nil {
		return nil, err
	}
	switch tag {
	case "none":
		return nil, nil
	case "bool":
		var b bool
		err := json.Unmarshal(body, &b)
		return b, err
	case "int":
		var s string
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, err
		}
		b, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("bad int %q", s)
		}
		if b.IsInt64() {
			return b.Int64(), nil
		}
		return b, nil
	case "float":
		return parseFloat(body)
	case "str":
		var s string
		err := json.Unmarshal(body, &s)
		return s, err
	case "bytes":
		var s string
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(s)
	case "list", "tuple", "set":
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, err
		}
		items := make([]any, len(raws))
		for i, r := range raws {
			if items[i], err = tagToNative(r); err != nil {
				return nil, err
			}
		}
		switch tag {
		case "tuple":
			return pyexec.Tuple(items), nil
		case "set":
			return pyexec.Set(items), nil
		}
		return items, nil
	case "dict":
		var pairs [][2]json.RawMessage
		if err := json.Unmarshal(body, &pairs); err != nil {
			return nil, err
		}
		d := make(pyexec.Dict, len(pairs))
		allStr := true
		for i, p := range pairs {
			if d[i].Key, err = tagToNative(p[0]); err != nil {
				return nil, err
			}
			if d[i].Value, err = tagToNative(p[1]); err != nil {
				return nil, err
			}
			if _, ok := d[i].Key.(string); !ok {
				allStr = false
			}
		}
		if allStr {
			// The idiomatic form for str keys; Dict is for the others.
			m := make(map[string]any, len(d))
			for _, kv := range d {
				m[kv.Key.(string)] = kv.Value
			}
			return m, nil
		}
		return d, nil
	}
	return nil, fmt.Errorf("tag %q cannot be sent", tag)
}

// tagToCanon parses an expectation.
func tagToCanon(raw json.RawMessage) (canon, error) {
	tag, body, err := oneKey(raw)
	if err != nil {
		return canon{}, err
	}
	switch tag {
	case "float":
		f, err := parseFloat(body)
		return canon{Kind: "float", F: f}, err
	case "opaque":
		var o struct {
			Type string  `json:"type"`
			Repr *string `json:"repr"`
		}
		err := json.Unmarshal(body, &o)
		return canon{Kind: "opaque", Scalar: o.Type, Repr: o.Repr}, err
	}
	native, err := tagToNative(raw)
	if err != nil {
		return canon{}, err
	}
	return nativeToCanon(native), nil
}

// nativeToCanon reads a native Go value the client returned. Only the types
// the package documents are accepted, so a wrong Go type is a mismatch.
func nativeToCanon(v any) canon {
	seq := func(kind string, items []any) canon {
		c := canon{Kind: kind, Items: make([]canon, len(items))}
		for i, it := range items {
			c.Items[i] = nativeToCanon(it)
		}
		return c
	}
	switch x := v.(type) {
	case nil:
		return canon{Kind: "none"}
	case bool:
		return canon{Kind: "bool", Scalar: strconv.FormatBool(x)}
	case int64:
		return canon{Kind: "int", Scalar: strconv.FormatInt(x, 10)}
	case *big.Int:
		if x.IsInt64() {
			// Documented: ints within int64 come back as int64.
			return canon{Kind: "*big.Int within int64", Scalar: x.String()}
		}
		return canon{Kind: "int", Scalar: x.String()}
	case float64:
		return canon{Kind: "float", F: x}
	case string:
		return canon{Kind: "str", Scalar: x}
	case []byte:
		return canon{Kind: "bytes", Scalar: string(x)}
	case []any:
		return seq("list", x)
	case pyexec.Tuple:
		return seq("tuple", x)
	case pyexec.Set:
		return seq("set", x)
	case map[string]any:
		c := canon{Kind: "dict"}
		for k, val := range x {
			c.Keys = append(c.Keys, canon{Kind: "str", Scalar: k})
			c.Items = append(c.Items, nativeToCanon(val))
		}
		return c
	case pyexec.Dict:
		c := canon{Kind: "dict"}
		for _, kv := range x {
			c.Keys = append(c.Keys, nativeToCanon(kv.Key))
			c.Items = append(c.Items, nativeToCanon(kv.Value))
		}
		return c
	case pyexec.Opaque:
		r := x.Repr
		return canon{Kind: "opaque", Scalar: x.Type, Repr: &r}
	}
	return canon{Kind: fmt.Sprintf("undocumented Go type %T", v)}
}

// matches compares got with want per the README: sets and dicts without
// order, floats numerically with nan == nan, everything else exactly.
func matches(want, got canon) bool {
	if want.Kind != got.Kind {
		return false
	}
	switch want.Kind {
	case "float":
		if math.IsNaN(want.F) || math.IsNaN(got.F) {
			return math.IsNaN(want.F) && math.IsNaN(got.F)
		}
		return want.F == got.F
	case "opaque":
		return want.Scalar == got.Scalar && (want.Repr == nil || (got.Repr != nil && *want.Repr == *got.Repr))
	case "list", "tuple":
		if len(want.Items) != len(got.Items) {
			return false
		}
		for i := range want.Items {
			if !matches(want.Items[i], got.Items[i]) {
				return false
			}
		}
		return true
	case "set", "dict":
		if len(want.Items) != len(got.Items) {
			return false
		}
		used := make([]bool, len(got.Items))
	next:
		for i := range want.Items {
			for j := range got.Items {
				if used[j] || !matches(want.Items[i], got.Items[j]) {
					continue
				}
				if want.Kind == "dict" && !matches(want.Keys[i], got.Keys[j]) {
					continue
				}
				used[j] = true
				continue next
			}
			return false
		}
		return true
	}
	return want.Scalar == got.Scalar
}

func expectValue(raw json.RawMessage, got any) error {
	want, err := tagToCanon(raw)
	if err != nil {
		return fmt.Errorf("bad expectation: %v", err)
	}
	g := nativeToCanon(got)
	if !matches(want, g) {
		return fmt.Errorf("got %s, want %s", g, want)
	}
	return nil
}

var errorClasses = map[string]error{
	"session_not_found":  pyexec.ErrSessionNotFound,
	"timeout":            pyexec.ErrTimeout,
	"invalid_argument":   pyexec.ErrInvalidArgument,
	"resource_exhausted": pyexec.ErrPoolExhausted,
}

func expectClass(name string, err error) error {
	class, ok := errorClasses[name]
	if !ok {
		return fmt.Errorf("unknown error class %q", name)
	}
	if !errors.Is(err, class) {
		return fmt.Errorf("got error %v, want %v", err, class)
	}
	var se *pyexec.StatusError
	if !errors.As(err, &se) {
		return fmt.Errorf("error %v is not a *pyexec.StatusError", err)
	}
	return nil
}

// onSession runs f on a bound session when setup is non-empty (after
// exec(setup)), else on the stateless client.
type runner interface {
	Eval(ctx context.Context, code string, opts ...pyexec.CallOption) (any, error)
	Exec(ctx context.Context, code string, opts ...pyexec.CallOption) error
	Call(ctx context.Context, module, function string, args []any, opts ...pyexec.CallOption) (any, error)
}

func onSession(ctx context.Context, c *pyexec.Client, setup string, f func(r runner) error) error {
	if setup == "" {
		return f(c)
	}
	return c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, setup); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		return f(s)
	})
}

func runCase(ctx context.Context, c *pyexec.Client, k vcase) error {
	switch k.Kind {
	case "roundtrip":
		v, err := tagToNative(k.Value)
		if err != nil {
			return err
		}
		locals := pyexec.WithLocals(map[string]any{"x": v})
		got, err := c.Eval(ctx, "x", locals)
		if err != nil {
			return err
		}
		if err := expectValue(k.Value, got); err != nil {
			return err
		}
		if k.PythonType != nil {
			typ, err := c.Eval(ctx, "type(x).__name__", locals)
			if err != nil {
				return err
			}
			if typ != *k.PythonType {
				return fmt.Errorf("python type %v, want %s", typ, *k.PythonType)
			}
		}
		return nil
	case "eval":
		return onSession(ctx, c, k.Setup, func(r runner) error {
			got, err := r.Eval(ctx, k.Code)
			if err != nil {
				return err
			}
			return expectValue(k.Expect, got)
		})
	case "call":
		args := make([]any, len(k.Args))
		for i, a := range k.Args {
			var err error
			if args[i], err = tagToNative(a); err != nil {
				return err
			}
		}
		var opts []pyexec.CallOption
		if k.Kwargs != nil {
			kw := map[string]any{}
			for name, raw := range k.Kwargs {
				v, err := tagToNative(raw)
				if err != nil {
					return err
				}
				kw[name] = v
			}
			opts = append(opts, pyexec.WithKwargs(kw))
		}
		return onSession(ctx, c, k.Setup, func(r runner) error {
			got, err := r.Call(ctx, k.Module, k.Function, args, opts...)
			if err != nil {
				return err
			}
			return expectValue(k.Expect, got)
		})
	case "python_error":
		var err error
		switch k.Op {
		case "eval":
			_, err = c.Eval(ctx, k.Code)
		case "exec":
			err = c.Exec(ctx, k.Code)
		default:
			return fmt.Errorf("unknown op %q", k.Op)
		}
		var pe *pyexec.PythonError
		if !errors.As(err, &pe) {
			return fmt.Errorf("got %v, want a *pyexec.PythonError", err)
		}
		if !errors.Is(err, pyexec.ErrPython) {
			return fmt.Errorf("errors.Is(err, ErrPython) is false")
		}
		if pe.Type != k.Error.Type || !strings.Contains(pe.Message, k.Error.MessageContains) ||
			!strings.Contains(pe.Traceback, k.Error.TracebackContains) {
			return fmt.Errorf("got %+v, want %+v", *pe, k.Error)
		}
		return nil
	case "status":
		return runScenario(ctx, c, k)
	case "stream":
		return runStream(ctx, c, k)
	case "ref":
		return runRef(ctx, c, k)
	case "callback":
		return runCallback(ctx, k)
	case "lease":
		return runLease(ctx, c, k)
	case "interrupt_race":
		return runInterruptRace(ctx, c, k)
	}
	return fmt.Errorf("unknown case kind %q", k.Kind)
}

func nativeArgs(k vcase) ([]any, []pyexec.CallOption, error) {
	args := make([]any, len(k.Args))
	for i, a := range k.Args {
		var err error
		if args[i], err = tagToNative(a); err != nil {
			return nil, nil, err
		}
	}
	var opts []pyexec.CallOption
	if k.Kwargs != nil {
		kw := map[string]any{}
		for name, raw := range k.Kwargs {
			v, err := tagToNative(raw)
			if err != nil {
				return nil, nil, err
			}
			kw[name] = v
		}
		opts = append(opts, pyexec.WithKwargs(kw))
	}
	return args, opts, nil
}

// runStream: CallStream's values must be expect_items, in order, and the
// stream must end OK.
func runStream(ctx context.Context, c *pyexec.Client, k vcase) error {
	args, opts, err := nativeArgs(k)
	if err != nil {
		return err
	}
	type streamer interface {
		CallStream(ctx context.Context, module, function string, args []any, opts ...pyexec.CallOption) (*pyexec.Stream, error)
	}
	check := func(r streamer) error {
		st, err := r.CallStream(ctx, k.Module, k.Function, args, opts...)
		if err != nil {
			return err
		}
		defer st.Close()
		var items []any
		for st.Next() {
			if ev := st.Event(); ev.Kind == pyexec.EventValue {
				items = append(items, ev.Value)
			}
		}
		if err := st.Err(); err != nil {
			return fmt.Errorf("stream ended with %v after %d items", err, len(items))
		}
		if len(items) != len(k.ExpectItems) {
			return fmt.Errorf("%d items %v, want %d", len(items), items, len(k.ExpectItems))
		}
		for i, raw := range k.ExpectItems {
			if err := expectValue(raw, items[i]); err != nil {
				return fmt.Errorf("item %d: %v", i, err)
			}
		}
		return nil
	}
	if k.Setup == "" {
		return check(c)
	}
	return c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, k.Setup); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		return check(s)
	})
}

func runRef(ctx context.Context, c *pyexec.Client, k vcase) error {
	return c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, k.Setup); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		v, err := s.Eval(ctx, k.Code)
		if err != nil {
			return err
		}
		ref, ok := v.(pyexec.Ref)
		if !ok || ref.Type != k.Type || ref.ID == "" {
			return fmt.Errorf("eval(%q) = %#v, want a pyexec.Ref of type %s", k.Code, v, k.Type)
		}
		locals := pyexec.WithLocals(map[string]any{"r": ref})
		got, err := s.Eval(ctx, k.Use, locals)
		if err != nil {
			return err
		}
		if err := expectValue(k.Expect, got); err != nil {
			return err
		}
		if n, err := s.Release(ctx, ref); err != nil || n != 1 {
			return fmt.Errorf("Release = %d, %v; want 1", n, err)
		}
		_, err = s.Eval(ctx, k.Use, locals)
		return expectClass(k.AfterRelease, err)
	})
}

// callbackFunc builds the behaviour a case names for function name; sess
// is the case's session, for "reenter".
func callbackFunc(raw json.RawMessage, sess **pyexec.Session) (pyexec.Func, error) {
	var named string
	if json.Unmarshal(raw, &named) == nil {
		switch named {
		case "return_args":
			return func(_ context.Context, args []any, _ map[string]any) (any, error) {
				return args, nil
			}, nil
		case "never":
			return func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			}, nil
		case "reenter":
			return func(ctx context.Context, args []any, _ map[string]any) (any, error) {
				if *sess == nil || len(args) != 1 {
					return nil, fmt.Errorf("reenter needs a session and [n], got %v", args)
				}
				v, err := (*sess).Call(ctx, "__main__", "down", args)
				if err != nil {
					return nil, err
				}
				n, ok := v.(int64)
				if !ok {
					return nil, fmt.Errorf("down returned %T", v)
				}
				return n + 1, nil
			}, nil
		}
		return nil, fmt.Errorf("unknown callback behaviour %q", named)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || len(obj) != 1 {
		return nil, fmt.Errorf("bad callback behaviour %s", raw)
	}
	if v, ok := obj["return"]; ok {
		native, err := tagToNative(v)
		if err != nil {
			return nil, err
		}
		return func(context.Context, []any, map[string]any) (any, error) { return native, nil }, nil
	}
	if v, ok := obj["raise"]; ok {
		var msg string
		if err := json.Unmarshal(v, &msg); err != nil {
			return nil, err
		}
		return func(context.Context, []any, map[string]any) (any, error) {
			return nil, errors.New(msg)
		}, nil
	}
	return nil, fmt.Errorf("unknown callback behaviour %s", raw)
}

// runCallback registers the case's functions on a client of its own.
func runCallback(ctx context.Context, k vcase) error {
	c, err := pyexec.Dial(shared.Addr, pyexec.WithInsecure())
	if err != nil {
		return err
	}
	defer c.Close()
	var sess *pyexec.Session
	if len(k.Functions) == 0 {
		// Python reaches the client's functions only on calls that travel
		// as Run, which this client uses once a function is registered
		// (with none, pyexec.call raises RuntimeError: "the client
		// registered no functions"). The case is about a name the client
		// does not know, so register one its code does not call.
		c.RegisterFunction("conformance_unused", func(context.Context, []any, map[string]any) (any, error) {
			return nil, errors.New("conformance_unused was called")
		})
	}
	for name, raw := range k.Functions {
		fn, err := callbackFunc(raw, &sess)
		if err != nil {
			return err
		}
		c.RegisterFunction(name, fn)
	}
	timeout := 10 * time.Second
	if k.TimeoutSeconds > 0 {
		timeout = time.Duration(k.TimeoutSeconds * float64(time.Second))
	}
	check := func(r runner) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var got any
		var err error
		switch k.Op {
		case "", "eval":
			got, err = r.Eval(cctx, k.Code)
		case "exec_then_eval":
			if err = r.Exec(cctx, k.Code); err == nil {
				got, err = r.Eval(ctx, k.Eval)
			}
		default:
			return fmt.Errorf("unknown op %q", k.Op)
		}
		if k.Expect != nil {
			if err != nil {
				return err
			}
			return expectValue(k.Expect, got)
		}
		var pe *pyexec.PythonError
		if !errors.As(err, &pe) {
			return fmt.Errorf("got %v, %v; want a *pyexec.PythonError", got, err)
		}
		if pe.Type != k.Error.Type || !strings.Contains(pe.Message, k.Error.MessageContains) {
			return fmt.Errorf("got %s: %s, want %s containing %q", pe.Type, pe.Message,
				k.Error.Type, k.Error.MessageContains)
		}
		return nil
	}
	if k.Setup == "" && k.Op != "exec_then_eval" {
		return check(c)
	}
	return c.Session(ctx, func(s *pyexec.Session) error {
		sess = s
		if k.Setup != "" {
			if err := s.Exec(ctx, k.Setup); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
		}
		return check(s)
	})
}

// runLease: the session bound with the default lease is gone within the
// grace (+3 s) once the context it was bound with is cancelled.
func runLease(ctx context.Context, c *pyexec.Client, k vcase) error {
	var class string
	if err := json.Unmarshal(k.Expect, &class); err != nil {
		return fmt.Errorf("lease expect: %v", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Bind(lctx)
	if err != nil {
		return err
	}
	if v, err := s.Eval(ctx, "1"); err != nil || v != int64(1) {
		return fmt.Errorf("eval on the leased session: %v, %v", v, err)
	}
	other := c.Attach(s.Token())
	cancel()
	start := time.Now()
	limit := time.Duration((k.GraceSeconds + 3) * float64(time.Second))
	for {
		_, err := other.Eval(ctx, "1")
		if err != nil {
			if cerr := expectClass(class, err); cerr != nil {
				return cerr
			}
			fmt.Printf("conformance: lease ended %v after its context (grace %vs)\n",
				time.Since(start).Round(time.Millisecond), k.GraceSeconds)
			return nil
		}
		if time.Since(start) > limit {
			return fmt.Errorf("session still usable %v after the lease ended", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runInterruptRace: GoExec then at once Interrupt that very call, rounds
// times: every interrupt must land.
func runInterruptRace(ctx context.Context, c *pyexec.Client, k vcase) error {
	return c.Session(ctx, func(s *pyexec.Session) error {
		lost := 0
		start := time.Now()
		var first error
		for i := 0; i < k.Rounds; i++ {
			r := s.GoExec(ctx, "while True: pass")
			ok, ierr := r.Interrupt(ctx)
			_, err := r.Wait()
			if ierr != nil || !ok || !errors.Is(err, pyexec.ErrCancelled) {
				lost++
				if first == nil {
					first = fmt.Errorf("round %d: interrupted=%v (%v), call ended with %v", i, ok, ierr, err)
				}
			}
		}
		fmt.Printf("conformance: interrupt race: %d rounds, %d lost, %v\n", k.Rounds, lost,
			time.Since(start).Round(time.Millisecond))
		if lost > 0 {
			return fmt.Errorf("%d of %d interrupts lost; first: %v", lost, k.Rounds, first)
		}
		return nil
	})
}

func runScenario(ctx context.Context, c *pyexec.Client, k vcase) error {
	var class string
	if err := json.Unmarshal(k.Expect, &class); err != nil {
		return fmt.Errorf("status expect: %v", err)
	}
	switch k.Scenario {
	case "unbind_then_eval":
		s, err := c.Bind(ctx)
		if err != nil {
			return err
		}
		if err := s.Unbind(ctx); err != nil {
			return err
		}
		_, err = s.Eval(ctx, "1")
		return expectClass(class, err)
	case "unknown_token":
		_, err := c.Attach("0000000000000000deadbeefdeadbeef").Eval(ctx, "1")
		return expectClass(class, err)
	case "deadline_interrupts":
		return c.Session(ctx, func(s *pyexec.Session) error {
			if err := s.Exec(ctx, "import time\nx = 1"); err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, time.Duration(k.TimeoutSeconds*float64(time.Second)))
			_, err := s.Eval(cctx, "time.sleep(30)")
			cancel()
			if err := expectClass(class, err); err != nil {
				return err
			}
			x, err := s.Eval(ctx, "x")
			if err != nil {
				return fmt.Errorf("after the timeout: %w", err)
			}
			if x != int64(1) {
				return fmt.Errorf("x = %v after the timeout, want 1", x)
			}
			return nil
		})
	case "empty_code":
		_, err := c.Eval(ctx, "")
		return expectClass(class, err)
	case "too_deep":
		var l any = []any{}
		for i := 1; i < k.Depth; i++ {
			l = []any{l}
		}
		_, err := c.Eval(ctx, "x", pyexec.WithLocals(map[string]any{"x": l}))
		return expectClass(class, err)
	}
	return fmt.Errorf("unknown scenario %q", k.Scenario)
}

func TestConformance(t *testing.T) {
	path := os.Getenv("PYEXEC_CONFORMANCE")
	if path == "" {
		path = filepath.Join(repoRoot(), "clients", "conformance", "vectors.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Version int     `json:"version"`
		Cases   []vcase `json:"cases"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Cases) == 0 {
		t.Fatal("no cases in", path)
	}
	c := dial(t)
	passed, failed := 0, 0
	var failures []string
	for _, k := range file.Cases {
		k := k
		ok := t.Run(k.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := runCase(ctx, c, k); err != nil {
				t.Errorf("%s (%s): %v", k.Name, k.Kind, err)
			}
		})
		if ok {
			passed++
		} else {
			failed++
			failures = append(failures, k.Name)
		}
	}
	sort.Strings(failures)
	if failed > 0 {
		t.Errorf("failed cases: %s", strings.Join(failures, ", "))
	}
	fmt.Printf("conformance: %d passed, %d failed\n", passed, failed)
}
