package pyexec_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// TestInterruptRaceNeverLost is the README's racy pattern: start a call
// and interrupt it at once, before it may have left the client. The
// interrupt names the call, so it is never lost: 1000 plain rounds, and
// 200 more with a function registered (the call travels as Run).
func TestInterruptRaceNeverLost(t *testing.T) {
	for _, k := range []struct {
		name   string
		rounds int
		funcs  bool
	}{{"Exec", 1000, false}, {"Exec as Run", 200, true}} {
		c := dial(t)
		if k.funcs {
			c.RegisterFunction("f", func(context.Context, []any, map[string]any) (any, error) { return nil, nil })
		}
		ctx := testCtx(t)
		s, err := c.Bind(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s, "x = 5")
		lost := 0
		start := time.Now()
		for i := 0; i < k.rounds; i++ {
			r := s.GoExec(ctx, "while True: pass")
			ok, ierr := r.Interrupt(ctx)
			_, err := r.Wait()
			if ierr != nil || !ok || !errors.Is(err, pyexec.ErrCancelled) {
				if lost++; lost == 1 {
					t.Errorf("%s round %d: interrupted=%v (%v), the call ended with %v", k.name, i, ok, ierr, err)
				}
			}
		}
		fmt.Printf("interrupt race (%s): %d rounds, %d lost, %v\n", k.name, k.rounds, lost,
			time.Since(start).Round(time.Millisecond))
		if lost > 0 {
			t.Fatalf("%s: %d of %d interrupts lost", k.name, lost, k.rounds)
		}
		if v := mustEval(t, s, "x"); v != int64(5) {
			t.Fatalf("x = %v after the interrupts", v)
		}
		s.Unbind(ctx)
	}
}

func TestInterruptCallByName(t *testing.T) {
	c := dial(t)
	s := bound(t, c)
	ctx := testCtx(t)
	mustExec(t, s, "x = 5")
	// An interrupt that comes before its call: the call ends CANCELLED as
	// soon as it arrives, without running.
	id := pyexec.NewCallID()
	if ok, err := s.InterruptCall(ctx, id); err != nil || !ok {
		t.Fatalf("InterruptCall before the call = %v, %v", ok, err)
	}
	start := time.Now()
	err := s.Exec(pyexec.WithCallID(ctx, id), "x = 6\nwhile True: pass")
	if !errors.Is(err, pyexec.ErrCancelled) || time.Since(start) > 2*time.Second {
		t.Fatalf("the named call: %v after %v", err, time.Since(start))
	}
	if v := mustEval(t, s, "x"); v != int64(5) {
		t.Fatalf("x = %v: the interrupted call ran", v)
	}
	// A named stream.
	id2 := pyexec.NewCallID()
	st, err := s.ExecStream(pyexec.WithCallID(ctx, id2), "print('on', flush=True)\nwhile True: pass")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Next() || st.Event().Text != "on\n" {
		t.Fatalf("first event %v, %v", st.Event(), st.Err())
	}
	if ok, err := s.InterruptCall(ctx, id2); err != nil || !ok {
		t.Fatalf("InterruptCall of the stream = %v, %v", ok, err)
	}
	for st.Next() {
	}
	if !errors.Is(st.Err(), pyexec.ErrCancelled) {
		t.Fatalf("interrupted stream: %v", st.Err())
	}
	// Interrupting another call id leaves a running call alone.
	r := s.GoEval(ctx, "sum(range(3000000))")
	if ok, err := s.InterruptCall(ctx, pyexec.NewCallID()); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("an interrupt for an unknown call: interrupted=%v", ok)
	}
	if v, err := r.Wait(); err != nil || v != int64(4499998500000) {
		t.Fatalf("the other call: %v, %v", v, err)
	}
	// After the end, Interrupt says false; Done is closed.
	select {
	case <-r.Done():
	default:
		t.Fatal("Done open after Wait")
	}
	if ok, err := r.Interrupt(ctx); err != nil || ok {
		t.Fatalf("Interrupt after the end = %v, %v", ok, err)
	}
	if r.ID() == "" || r.ID() == id {
		t.Fatalf("ID %q", r.ID())
	}
}
