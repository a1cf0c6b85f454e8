// Command bench measures the Go client: Eval("1+1") on bound sessions
// against pyexecd, next to the same gRPC stack calling the bare echo server
// (bench/echo_server_main.cc) in the same run, over one connection each.
//
//	bench -pyexecd bazel-bin/server/pyexecd -echo_server bazel-bin/bench/echo_server_main
//
// It starts both servers itself on 127.0.0.1:0 and stops them at the end.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/pyexec/pyexec/clients/go/internal/echopb"
	"github.com/pyexec/pyexec/clients/go/pyexec"
)

var (
	pyexecd    = flag.String("pyexecd", "bazel-bin/server/pyexecd", "pyexecd binary")
	echoServer = flag.String("echo_server", "bazel-bin/bench/echo_server_main", "echo server binary")
	duration   = flag.Duration("duration", 3*time.Second, "length of each phase")
	clients    = flag.Int("clients", 8, "concurrent callers in the throughput phase")
)

func start(bin string, args ...string) (string, func(), error) {
	cmd := exec.Command(bin, append([]string{"--listen=127.0.0.1:0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if a := strings.TrimPrefix(sc.Text(), "listening on "); a != sc.Text() {
			go func() {
				for sc.Scan() {
				}
			}()
			return strings.TrimSpace(a), stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("%s exited before listening", bin)
}

type result struct {
	calls    int
	p50, p99 time.Duration
	elapsed  time.Duration
}

func (r result) rate() float64 { return float64(r.calls) / r.elapsed.Seconds() }

// run calls f from n goroutines for the phase's duration.
func run(n int, f func(i int) error) (result, error) {
	deadline := time.Now().Add(*duration)
	lat := make([][]time.Duration, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := f(i); err != nil {
					errs <- err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	if len(all) == 0 {
		return result{}, fmt.Errorf("no calls completed")
	}
	return result{calls: len(all), p50: all[len(all)/2], p99: all[len(all)*99/100], elapsed: elapsed}, nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }

func main() {
	flag.Parse()
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	ctx := context.Background()
	echoAddr, stopEcho, err := start(*echoServer)
	if err != nil {
		return err
	}
	defer stopEcho()
	pyAddr, stopPy, err := start(*pyexecd, fmt.Sprintf("--workers=%d", *clients), "--max_workers=32")
	if err != nil {
		return err
	}
	defer stopPy()

	conn, err := grpc.Dial(echoAddr, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	echo := echopb.NewEchoClient(conn)
	echoCall := func(int) error {
		_, err := echo.Echo(ctx, &echopb.EchoRequest{Payload: []byte("1+1")})
		return err
	}

	c, err := pyexec.Dial(pyAddr, pyexec.WithInsecure())
	if err != nil {
		return err
	}
	defer c.Close()
	sessions := make([]*pyexec.Session, *clients)
	for i := range sessions {
		if sessions[i], err = c.Bind(ctx); err != nil {
			return err
		}
		defer sessions[i].Unbind(ctx)
	}
	evalCall := func(i int) error {
		v, err := sessions[i].Eval(ctx, "1+1")
		if err == nil && v != int64(2) {
			err = fmt.Errorf("Eval(1+1) = %v", v)
		}
		return err
	}
	// Warm both paths up.
	for i := 0; i < 200; i++ {
		if err := echoCall(0); err != nil {
			return err
		}
		if err := evalCall(0); err != nil {
			return err
		}
	}

	e1, err := run(1, echoCall)
	if err != nil {
		return err
	}
	p1, err := run(1, evalCall)
	if err != nil {
		return err
	}
	en, err := run(*clients, echoCall)
	if err != nil {
		return err
	}
	pn, err := run(*clients, evalCall)
	if err != nil {
		return err
	}
	fmt.Printf("Go client, one connection per server, %v per phase\n", *duration)
	fmt.Printf("%-28s %14s %18s %8s\n", "", "echo", "pyexec Eval(1+1)", "ratio")
	fmt.Printf("%-28s %14s %18s %7.2fx\n", "p50, 1 caller", us(e1.p50), us(p1.p50), float64(p1.p50)/float64(e1.p50))
	fmt.Printf("%-28s %14s %18s %7.2fx\n", "p99, 1 caller", us(e1.p99), us(p1.p99), float64(p1.p99)/float64(e1.p99))
	fmt.Printf("%-28s %12.0f/s %16.0f/s %7.2fx\n", "throughput, 1 caller", e1.rate(), p1.rate(), p1.rate()/e1.rate())
	fmt.Printf("%-28s %12.0f/s %16.0f/s %7.2fx\n", fmt.Sprintf("throughput, %d callers", *clients), en.rate(), pn.rate(), pn.rate()/en.rate())
	fmt.Printf("%-28s %14s %18s\n", fmt.Sprintf("p50, %d callers", *clients), us(en.p50), us(pn.p50))
	return nil
}
