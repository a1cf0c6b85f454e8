package pyexec_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// The shared pyexecd runs with --lease_grace=1s.
const testGrace = time.Second

// untilGone polls token through a handle that holds no lease until the
// session is gone (ErrSessionNotFound) and returns how long that took from
// since; it fails the test after limit.
func untilGone(t *testing.T, c *pyexec.Client, token string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	h := c.Attach(token)
	for {
		_, err := h.Eval(testCtx(t), "1")
		if errors.Is(err, pyexec.ErrSessionNotFound) {
			return time.Since(since)
		}
		if err != nil {
			t.Fatalf("polling %s: %v", token, err)
		}
		if time.Since(since) > limit {
			t.Fatalf("session %s still there %v after its lease ended", token, limit)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func alive(t *testing.T, c *pyexec.Client, token string) {
	t.Helper()
	if v, err := c.Attach(token).Eval(testCtx(t), "1"); err != nil || v != int64(1) {
		t.Fatalf("session %s: %v, %v; want it alive", token, v, err)
	}
}

func TestLeaseFollowsTheBindContext(t *testing.T) {
	c := dial(t)
	bindCtx, cancelBind := context.WithCancel(context.Background())
	defer cancelBind()
	otherCtx, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()

	leased, err := c.Bind(bindCtx)
	if err != nil {
		t.Fatal(err)
	}
	if !leased.Leased() || leased.LeaseGrace() != testGrace {
		t.Fatalf("Leased() = %v, LeaseGrace() = %v; want true, %v", leased.Leased(), leased.LeaseGrace(), testGrace)
	}
	unleased, err := c.Bind(bindCtx, pyexec.WithoutLease())
	if err != nil {
		t.Fatal(err)
	}
	defer unleased.Unbind(context.Background())
	if unleased.Leased() {
		t.Fatal("WithoutLease: Leased() = true")
	}
	elsewhere, err := c.Bind(bindCtx, pyexec.WithLeaseContext(otherCtx))
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Unbind(context.Background())
	for _, s := range []*pyexec.Session{leased, unleased, elsewhere} {
		mustExec(t, s, "x = 1")
	}

	cancelBind()
	start := time.Now()
	d := untilGone(t, c, leased.Token(), start, testGrace+2*time.Second)
	t.Logf("leased session gone %v after its Bind context was cancelled (grace %v)", d, testGrace)
	if d < testGrace-100*time.Millisecond {
		t.Fatalf("gone after %v, before the grace %v", d, testGrace)
	}
	select {
	case <-leased.LeaseDone():
	case <-time.After(5 * time.Second):
		t.Fatal("LeaseDone not closed")
	}
	if !errors.Is(leased.LeaseErr(), context.Canceled) {
		t.Fatalf("LeaseErr = %v, want context.Canceled", leased.LeaseErr())
	}
	// Well past the grace: the two others live on.
	time.Sleep(testGrace + 500*time.Millisecond - time.Since(start))
	alive(t, c, unleased.Token())
	alive(t, c, elsewhere.Token())
	if !elsewhere.Leased() {
		t.Fatal("WithLeaseContext: the lease ended with the Bind context")
	}
	cancelOther()
	start = time.Now()
	d = untilGone(t, c, elsewhere.Token(), start, testGrace+2*time.Second)
	t.Logf("WithLeaseContext session gone %v after that context was cancelled", d)
	alive(t, c, unleased.Token())
}

func TestCloseEndsTheClientsLeases(t *testing.T) {
	c := dial(t)
	c2, err := pyexec.Dial(shared.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	s, err := c2.Bind(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A numbered context is leased for the client's life too.
	if err := c2.Context(1).Exec(testCtx(t), "y = 2"); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	start := time.Now()
	d := untilGone(t, c, s.Token(), start, testGrace+2*time.Second)
	t.Logf("session gone %v after Client.Close", d)
}

func TestLeaseEndsWhenTheSessionEnds(t *testing.T) {
	c := dial(t)
	s, err := c.Bind(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Attach(s.Token()).Unbind(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.LeaseDone():
	case <-time.After(5 * time.Second):
		t.Fatal("LeaseDone not closed after the session was unbound elsewhere")
	}
	if err := s.LeaseErr(); !errors.Is(err, pyexec.ErrSessionNotFound) || !strings.Contains(err.Error(), "unbound") {
		t.Fatalf("LeaseErr = %v, want ErrSessionNotFound saying unbound", err)
	}

	s, err = c.Bind(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(testCtx(t), "import os; os._exit(3)"); !errors.Is(err, pyexec.ErrWorkerDied) {
		t.Fatalf("os._exit: %v", err)
	}
	select {
	case <-s.LeaseDone():
	case <-time.After(5 * time.Second):
		t.Fatal("LeaseDone not closed after the worker died")
	}
	if !errors.Is(s.LeaseErr(), pyexec.ErrSessionNotFound) {
		t.Fatalf("LeaseErr = %v", s.LeaseErr())
	}
	t.Logf("after the worker died: %v", s.LeaseErr())
}

// TestLeaseTakenAgainAfterTheConnectionBreaks: the connection to the server
// breaks (the server ends the lease stream); the client attaches again
// within the grace, so the session outlives it.
func TestLeaseTakenAgainAfterTheConnectionBreaks(t *testing.T) {
	p := startProxy(t, shared.Addr)
	c, err := pyexec.Dial(p.Addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Bind(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, "x = 7")
	p.Break()
	time.Sleep(testGrace + time.Second)
	if v := mustEval(t, s, "x"); v != int64(7) {
		t.Fatalf("x = %v", v)
	}
	if !s.Leased() || p.accepted.Load() < 2 {
		t.Fatalf("Leased() = %v, %d connections", s.Leased(), p.accepted.Load())
	}
	cancel()
	d := untilGone(t, dial(t), s.Token(), time.Now(), testGrace+2*time.Second)
	t.Logf("re-attached lease held across a broken connection; gone %v after its context ended", d)
}

// leaseChild is the child process of TestLeaseOfASIGKILLedProcess: it binds
// one session with the default lease and one WithoutLease, prints their
// tokens and waits to be killed.
func leaseChild(addr string) {
	c, err := pyexec.Dial(addr, pyexec.WithInsecure())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	leased, err := c.Bind(ctx)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	unleased, err := c.Bind(ctx, pyexec.WithoutLease())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("tokens", leased.Token(), unleased.Token())
	select {}
}

func TestLeaseOfASIGKILLedProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PYEXEC_TEST_LEASE_CHILD="+shared.Addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		line <- sc.Text()
	}()
	var fields []string
	select {
	case l := <-line:
		fields = strings.Fields(l)
	case <-time.After(30 * time.Second):
		t.Fatal("the child printed no tokens")
	}
	if len(fields) != 3 || fields[0] != "tokens" {
		t.Fatalf("child said %q", fields)
	}
	c := dial(t)
	alive(t, c, fields[1])
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d := untilGone(t, c, fields[1], start, testGrace+2*time.Second)
	fmt.Printf("lease: session gone %v after its client process was SIGKILLed (--lease_grace=%v)\n",
		d.Round(time.Millisecond), testGrace)
	alive(t, c, fields[2])
	if err := c.Attach(fields[2]).Unbind(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}
