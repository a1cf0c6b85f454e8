// Command scratch is the program that run_tests.sh builds in a module of its
// own, outside the repository, which requires the client module through a
// replace directive, as a user's program would. It evaluates one expression
// that calls back into a Go function on the pyexecd at HOST:PORT and prints
// the result and its Go type.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

func run(addr string) error {
	c, err := pyexec.Dial(addr, pyexec.WithInsecure())
	if err != nil {
		return err
	}
	defer c.Close()
	c.RegisterFunction("add", func(_ context.Context, args []any, _ map[string]any) (any, error) {
		var sum int64
		for _, a := range args {
			sum += a.(int64)
		}
		return sum, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := c.Eval(ctx, "pyexec.call('add', *x) * 2", pyexec.WithLocals(map[string]any{"x": []any{1, 2, 18}}))
	if err != nil {
		return err
	}
	fmt.Printf("%T %v\n", v, v)
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: scratch HOST:PORT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "scratch:", err)
		os.Exit(1)
	}
}
