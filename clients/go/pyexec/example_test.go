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
