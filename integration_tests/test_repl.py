"""`pyexec repl` driven through a pseudo-terminal against the real pyexecd:
line editing and history, multi-line blocks, Ctrl-C interrupting a running
call with the session kept, Ctrl-C at the prompt, Ctrl-D unbinding and
exiting. The CLI comes from $PYEXEC_CLI, else <repo>/bazel-bin/clients/cpp/pyexec."""

import os
import pty
import re
import select
import shutil
import signal
import tempfile
import termios
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb

EXPECT_TIMEOUT_S = 20.0


def cli_path():
    return os.environ.get("PYEXEC_CLI") or os.path.join(fx.REPO, "bazel-bin", "clients", "cpp",
                                                        "pyexec")


class Terminal:
    """The CLI on the child side of a pty; expect() reads what it printed."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: its controlling terminal is the pty
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.seen = ""
        self.status = None

    def send(self, text, at_prompt=True):
        """Types `text`. At a prompt it first waits until libedit has the pty
        in raw mode (ICANON off, read through the master, which shares the
        slave's termios): keys typed before that go through the kernel's
        cooked line discipline instead, where a line is echoed twice and a
        Ctrl-D can be lost. at_prompt=False types at once (Ctrl-C while a
        call runs, when the pty is cooked on purpose)."""
        if at_prompt:
            deadline = time.monotonic() + EXPECT_TIMEOUT_S
            while termios.tcgetattr(self.fd)[3] & termios.ICANON:
                if time.monotonic() > deadline:
                    raise AssertionError("the line editor never took the terminal; "
                                         "output: %r" % self.seen)
                time.sleep(0.005)
        os.write(self.fd, text.encode())

    def expect(self, pattern, timeout=EXPECT_TIMEOUT_S):
        """Waits for `pattern` (regex) in the output after the last match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.seen)
            if m:
                before = self.seen[:m.start()]
                self.seen = self.seen[m.end():]
                return before
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %r; output so far: %r"
                                     % (pattern, self.seen))
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the pty
                    chunk = b""
                if not chunk:
                    raise AssertionError("CLI ended while waiting for %r; output: %r"
                                         % (pattern, self.seen))
                self.seen += chunk.decode(errors="replace")

    def wait(self, timeout=EXPECT_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # keep reading so the child never blocks on a full pty
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("CLI did not exit; output: %r" % self.seen)

    def exit_with_ctrl_d(self):
        """Sends Ctrl-D at the prompt and returns the exit code."""
        self.send("\x04")
        return self.wait()

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        os.close(self.fd)


class ReplTest(fx.ServerTestCase):
    WORKERS = 2
    MAX_WORKERS = 3

    def start_repl(self, *flags):
        cli = cli_path()
        self.assertTrue(os.access(cli, os.X_OK), "pyexec CLI not found at %s" % cli)
        home = tempfile.mkdtemp(prefix="pyexec_repl_home_")
        self.addCleanup(shutil.rmtree, home, True)
        env = {"HOME": home, "TERM": "xterm", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        term = Terminal([cli, "--addr=127.0.0.1:%d" % self.server.port, "--timeout=60s"]
                        + list(flags) + ["repl"], env)
        self.addCleanup(term.close)
        term.expect(r"session ")
        self.token = term.expect(r"[. ]")
        term.expect(r">>> ")
        return term, home

    def stats(self):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=10)

    def test_session_lines_blocks_and_errors(self):
        term, home = self.start_repl()
        self.assertEqual(self.stats().sessions, 1)
        term.send("x = 41\r")
        term.expect(r">>> ")
        term.send("x + 1\r")
        self.assertIn("42\r\n", term.expect(r">>> "))
        # None prints nothing, as in Python: only the echoed input comes back
        # (twice when the line is typed before libedit has put the pty in raw
        # mode: the kernel echoes it, then libedit redraws it), never a line
        # that is just "None".
        term.send("None  # prints nothing\r")
        out = term.expect(r">>> ")
        self.assertIn("None  # prints nothing", out)
        self.assertNotIn("None", [l.strip() for l in out.split("\r\n")])
        # A compound statement continues until a blank line.
        term.send("def f(n):\r")
        term.expect(r"\.\.\. ")
        term.send("    return n * 2\r")
        term.expect(r"\.\.\. ")
        term.send("\r")
        term.expect(r">>> ")
        term.send("f(21)\r")
        self.assertIn("42\r\n", term.expect(r">>> "))
        # An open bracket continues too, and the block ends once it compiles.
        term.send("(1,\r")
        term.expect(r"\.\.\. ")
        term.send("'a')\r")
        self.assertIn("(1, 'a')\r\n", term.expect(r">>> "))
        term.send("print('out'); b'\\x00'\r")
        out = term.expect(r">>> ")
        self.assertIn("out\r\n", out)
        term.send("1/0\r")
        out = term.expect(r">>> ")
        self.assertIn("Traceback (most recent call last):", out)
        self.assertIn("ZeroDivisionError: division by zero", out)
        term.send("x\r")  # state survives errors
        self.assertIn("41\r\n", term.expect(r">>> "))
        # Keys are read one character at a time, UTF-8 decoded.
        term.send("'é€𝄞' * 2\r")
        self.assertIn("'é€𝄞é€𝄞'\r\n", term.expect(r">>> "))
        # History: up-arrow recalls the previous line.
        term.send("x * 2\r")
        self.assertIn("82\r\n", term.expect(r">>> "))
        term.send("\x1b[A\r")
        term.expect(r"82\r\n")  # (the recall redraws the prompt line first)
        term.expect(r">>> ")
        # Ctrl-D exits 0 and unbinds.
        self.assertEqual(term.exit_with_ctrl_d(), 0)
        self.assertEqual(self.stats().sessions, 0)
        with open(os.path.join(home, ".pyexec_history")) as f:
            self.assertIn("f(21)", f.read())  # libedit stores spaces as \\040

    def test_ctrl_c_interrupts_the_running_call_and_keeps_the_session(self):
        term, _ = self.start_repl()
        term.send("import time; x = 1\r")
        term.expect(r">>> ")
        before = self.stats().calls_total
        term.send("time.sleep(30); x = 99\r")
        # The call has reached a worker once one is busy (a stateless probe
        # call before it is not: it ends before the session call starts).
        def running():
            st = self.stats()  # one snapshot: the probe must be answered
            return st.busy_workers >= 1 and st.calls_total >= before + 1
        fx.wait_until(running, 15, what="call running")
        start = time.monotonic()
        term.send("\x03", at_prompt=False)
        out = term.expect(r">>> ")
        self.assertIn("KeyboardInterrupt", out)
        self.assertLess(time.monotonic() - start, 10)
        term.send("x\r")
        self.assertIn("1\r\n", term.expect(r">>> "))
        self.assertEqual(self.stats().sessions, 1)
        # Ctrl-C at the prompt drops the pending input and keeps the REPL.
        term.send("x = 5")
        term.send("\x03")
        term.expect(r"KeyboardInterrupt")
        term.expect(r">>> ")
        term.send("x\r")
        self.assertIn("1\r\n", term.expect(r">>> "))
        self.assertEqual(term.exit_with_ctrl_d(), 0)
        self.assertEqual(self.stats().sessions, 0)

    def test_lost_session_is_replaced_and_said_so(self):
        term, _ = self.start_repl()
        term.send("x = 1\r")
        term.expect(r">>> ")
        old = self.token
        self.stub.Unbind(pb.UnbindRequest(session=old), timeout=10)
        term.send("x\r")
        out = term.expect(r">>> ")
        self.assertIn("NOT_FOUND", out)
        self.assertIn("session lost; new session", out)
        term.send("x\r")  # the new session starts empty
        self.assertIn("NameError", term.expect(r">>> "))
        self.assertEqual(self.stats().sessions, 1)
        self.assertEqual(term.exit_with_ctrl_d(), 0)
        self.assertEqual(self.stats().sessions, 0)

    def test_attached_session_is_left_bound(self):
        token = self.stub.Bind(pb.BindRequest(), timeout=10).session
        self.addCleanup(self.stub.Unbind, pb.UnbindRequest(session=token), timeout=10)
        self.stub.Exec(pb.ExecRequest(session=token, code="y = 7"), timeout=10)
        term, _ = self.start_repl("--session=" + token)
        self.assertEqual(self.token, token)
        term.send("y\r")
        self.assertIn("7\r\n", term.expect(r">>> "))
        self.assertEqual(term.exit_with_ctrl_d(), 0)
        self.assertEqual(self.stats().sessions, 1)


if __name__ == "__main__":
    unittest.main()
