package pyexec_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

// repoRoot is found from the package directory with symlinks resolved,
// because run_tests.sh builds in a module root made of symlinks to
// clients/go's entries.
func repoRoot() string {
	abs, err := filepath.Abs(".")
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(abs, "..", "..", ".."))
}

func pyexecdPath() string {
	if p := os.Getenv("PYEXECD"); p != "" {
		return p
	}
	return filepath.Join(repoRoot(), "bazel-bin", "server", "pyexecd")
}

// server is a pyexecd started by a test on 127.0.0.1:0.
type server struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer starts `bin` with args, and --listen=127.0.0.1:0 unless they
// have a --listen, and waits
// (up to 60 s) for its "listening on HOST:PORT" line.
func startServer(bin string, args ...string) (*server, error) {
	listen := true
	for _, a := range args {
		if strings.HasPrefix(a, "--listen=") {
			listen = false
		}
	}
	if listen {
		args = append([]string{"--listen=127.0.0.1:0"}, args...)
	}
	cmd := exec.Command(bin, args...)
	// The server's log goes to stderr only with PYEXEC_TEST_LOG=1: it is
	// noisy and the assertions say what failed.
	if os.Getenv("PYEXEC_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && strings.HasPrefix(line, "listening on ") {
				addr <- strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
				sent = true
			}
		}
		if !sent {
			close(addr)
		}
	}()
	go func() { cmd.Wait(); close(s.done) }()
	select {
	case a, ok := <-addr:
		if !ok {
			s.Stop()
			return nil, fmt.Errorf("%s exited before listening", bin)
		}
		s.Addr = a
		return s, nil
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s did not print 'listening on' within 60s", bin)
	}
}

// Stop sends SIGTERM (pyexecd drains and exits) and SIGKILLs after 10 s.
func (s *server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// shared is the pyexecd most tests use, started once by TestMain.
var shared *server

func TestMain(m *testing.M) {
	if addr := os.Getenv("PYEXEC_TEST_LEASE_CHILD"); addr != "" {
		leaseChild(addr) // lease_test.go; never returns
	}
	s, err := startServer(pyexecdPath(), "--workers=2", "--max_workers=12",
		"--drain_timeout=2s", "--kill_grace=1s", "--lease_grace=1s")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		fmt.Fprintln(os.Stderr, "  build it: bazel build //server:pyexecd //worker:pyexec_worker, or set $PYEXECD")
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

func dial(t testing.TB, opts ...pyexec.Option) *pyexec.Client {
	t.Helper()
	c, err := pyexec.Dial(shared.Addr, append([]pyexec.Option{pyexec.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
