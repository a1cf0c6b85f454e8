package pyexec_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// Compiled by go test (no Output line, so not run: it needs a server).
func Example() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	v, err := c.Eval(ctx, "6*7")
	fmt.Println(v, err) // 42 <nil>

	err = c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, "import math; r = 2"); err != nil {
			return err
		}
		area, err := s.Eval(ctx, "math.pi * r**2")
		fmt.Println(area) // 12.566370614359172
		return err
	})

	var pe *pyexec.PythonError
	switch {
	case errors.As(err, &pe):
		fmt.Println(pe.Type, pe.Message)
	case errors.Is(err, pyexec.ErrTimeout):
		fmt.Println("timed out")
	case err != nil:
		log.Fatal(err)
	}
}

func ExampleClient_Context() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure(), pyexec.WithContexts(4))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // unbinds the contexts that were used
	ctx := context.Background()
	// Every caller that picks context 1 shares its session.
	if err := c.Context(1).Exec(ctx, "import json"); err != nil {
		log.Fatal(err)
	}
	s, err := c.Context(1).Eval(ctx, "json.dumps([1, 2])")
	fmt.Println(s, err)
}

func ExampleSession_CallStream() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	err = c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, "def squares(n):\n    for i in range(n):\n        print('at', i)\n        yield i * i"); err != nil {
			return err
		}
		st, err := s.CallStream(ctx, "__main__", "squares", []any{3})
		if err != nil {
			return err
		}
		defer st.Close() // cancels the call if we stop early
		for st.Next() {
			switch ev := st.Event(); ev.Kind {
			case pyexec.EventStdout:
				fmt.Print(ev.Text) // at 0
			case pyexec.EventValue:
				fmt.Println(ev.Value) // 0
			}
		}
		return st.Err() // a *PythonError if squares raised
	})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleSession_CallMethod() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	err = c.Session(ctx, func(s *pyexec.Session) error {
		v, err := s.Eval(ctx, "__import__('collections').Counter('abracadabra')", pyexec.WithResultAsRef())
		if err != nil {
			return err
		}
		counter := v.(pyexec.Ref) // the Counter stays in the session
		top, err := s.CallMethod(ctx, counter, "most_common", []any{1})
		fmt.Println(top, err) // [(a 5)] <nil>
		n, err := s.Release(ctx, counter)
		fmt.Println(n, err) // 1 <nil>
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_Bind_lease() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // ends the leases of the sessions this client bound
	// The session is leased to ctx: once ctx is done (or this process dies),
	// the server unbinds it after its --lease_grace.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Bind(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Leased(), s.LeaseGrace()) // true 5s
	// A session that outlives this program: no lease.
	kept, err := c.Bind(ctx, pyexec.WithoutLease())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(kept.Token())
}

func ExampleClient_RegisterFunction() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	users := map[string]string{"u1": "Ada"}
	c.RegisterFunction("user_name", func(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
		id, _ := args[0].(string)
		name, ok := users[id]
		if !ok {
			return nil, &pyexec.PythonError{Type: "KeyError", Message: id}
		}
		return name, nil
	})
	ctx := context.Background()
	v, err := c.Eval(ctx, "pyexec.call('user_name', 'u1').upper()")
	fmt.Println(v, err) // ADA <nil>
}

func ExampleSession_GoExec() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	err = c.Session(ctx, func(s *pyexec.Session) error {
		r := s.GoExec(ctx, "while True: pass")
		// Names that very call: never lost, even if sent before the call.
		interrupted, err := r.Interrupt(ctx)
		fmt.Println(interrupted, err) // true <nil>
		_, err = r.Wait()
		fmt.Println(errors.Is(err, pyexec.ErrCancelled)) // true
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleSession_Snapshot() {
	c, err := pyexec.Dial("127.0.0.1:50051", pyexec.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := c.Bind(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Exec(ctx, "model = {'w': [1, 2]}"); err != nil {
		log.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		log.Fatal(err)
	}
	restored, err := c.Bind(ctx, pyexec.WithRestore(snap.Blob))
	if err != nil {
		log.Fatal(err)
	}
	v, err := restored.Eval(ctx, "model['w']")
	fmt.Println(v, err, snap.Lost) // [1 2] <nil> []
}
