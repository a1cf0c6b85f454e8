"""`pyexec repl` driven through a pseudo-terminal against the real pyexecd:
line editing and history, multi-line blocks, output streamed while a
statement runs, expression statements printed as python3 -i prints them,
Tab completion from the session, input()'s message, Ctrl-C interrupting a
running call with the session kept, Ctrl-C at the prompt, Ctrl-D and
SystemExit unbinding and exiting. The CLI comes from $PYEXEC_CLI, else
<repo>/bazel-bin/clients/cpp/pyexec."""

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
        # A test that fails leaves its REPL killed, not exited: unbind its
        # session so that the next tests still find free workers.
        self.addCleanup(self.unbind_quietly, self.token)
        term.expect(r">>> ")
        return term, home

    def unbind_quietly(self, token):
        try:
            self.stub.Unbind(pb.UnbindRequest(session=token), timeout=10)
        except Exception:  # the server may be gone already
            pass

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
        self.assertIn("out\r\nb'\\x00'\r\n", out)
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

    def test_output_appears_while_the_statement_runs(self):
        term, _ = self.start_repl()
        term.send("import time\r")
        term.expect(r">>> ")
        # The statement prints, then sleeps far longer than expect() waits:
        # "first" can only be seen if it is streamed before the end.
        term.send("print('first'); time.sleep(60)\r")
        term.expect(r"first\r\n", timeout=15)
        self.assertNotIn(">>> ", term.seen)
        self.assertGreaterEqual(self.stats().busy_workers, 1)  # still running
        term.send("\x03", at_prompt=False)
        term.expect(r"KeyboardInterrupt")
        term.expect(r">>> ")
        # The brief's loop: 0, 1 and 2 arrive about 0.5 s apart.
        term.send("for i in range(3): print(i); time.sleep(0.5)\r")
        term.expect(r"\.\.\. ")
        term.send("\r")
        arrivals = []
        for n in range(3):
            term.expect(r"%d\r\n" % n)
            arrivals.append(time.monotonic())
        term.expect(r">>> ")
        self.assertGreater(arrivals[2] - arrivals[0], 0.6)
        self.assertEqual(term.exit_with_ctrl_d(), 0)

    def test_expression_statements_print_as_python_does(self):
        term, _ = self.start_repl()
        term.send("x = 1; x\r")
        self.assertIn("x = 1; x\r\n1\r\n", term.expect(r">>> "))
        term.send("1; 2\r")
        self.assertIn("1; 2\r\n1\r\n2\r\n", term.expect(r">>> "))
        term.send("'a' + 'b'\r")
        self.assertIn("'ab'\r\n", term.expect(r">>> "))
        term.send("_ * 2\r")  # _ is the last value shown
        self.assertIn("'abab'\r\n", term.expect(r">>> "))
        term.send("for i in range(2): i\r")
        term.expect(r"\.\.\. ")
        term.send("\r")
        self.assertIn("0\r\n1\r\n", term.expect(r">>> "))
        term.send("None; x = 2\r")
        out = term.expect(r">>> ")
        self.assertEqual(out.replace("None; x = 2", "").strip(), "")
        # The REPL's machinery leaves no names behind in the session (the
        # `pyexec` module, there from the start for pyexec.call, aside).
        term.send("sorted(k for k in globals() if k in ('x', 'i') or 'pyexec' in k and k != 'pyexec')\r")
        self.assertIn("['i', 'x']\r\n", term.expect(r">>> "))
        term.send("def g():\r")
        term.expect(r"\.\.\. ")
        term.send("    return 1/0\r")
        term.expect(r"\.\.\. ")
        term.send("\r")
        term.expect(r">>> ")
        term.send("g()\r")
        out = term.expect(r">>> ")
        self.assertIn('Traceback (most recent call last):\r\n'
                      '  File "<stdin>", line 1, in <module>\r\n'
                      '  File "<stdin>", line 2, in g\r\n'
                      'ZeroDivisionError: division by zero\r\n', out)
        self.assertNotIn("pyexec-", out)
        term.send("1 +* 2\r")
        out = term.expect(r">>> ")
        self.assertIn('  File "<stdin>", line 1\r\n    1 +* 2\r\n', out)
        self.assertIn("SyntaxError: invalid syntax\r\n", out)
        self.assertEqual(term.exit_with_ctrl_d(), 0)

    def test_tab_completes_from_the_session(self):
        term, _ = self.start_repl()
        term.send("import math; value_of_x = 3\r")
        term.expect(r">>> ")
        # A unique completion is inserted: the line then runs as completed.
        term.send("math.fact\t")
        term.expect(r"orial\(")
        term.send("5)\r")
        self.assertIn("120\r\n", term.expect(r">>> "))
        term.send("value_o\t")
        term.expect(r"f_x")
        term.send("\r")
        self.assertIn("3\r\n", term.expect(r">>> "))
        # Several: the second Tab lists them.
        term.send("math.p\t")
        term.send("\t")
        listing = term.expect(r"math\.prod\(")
        for name in ("math.pi", "math.pow(", "math.perm("):
            self.assertIn(name, listing)
        term.send("\x15")  # Ctrl-U: clear the line
        # A Tab on an empty word indents, inside a block.
        term.send("if True:\r")
        term.expect(r"\.\.\. ")
        term.send("\t")
        term.send("value_of_x\r")
        term.expect(r"\.\.\. ")
        term.send("\r")
        self.assertIn("3\r\n", term.expect(r">>> "))
        self.assertEqual(term.exit_with_ctrl_d(), 0)

    def test_input_says_why_it_is_not_available(self):
        term, _ = self.start_repl()
        term.send("input('name? ')\r")
        out = term.expect(r">>> ")
        self.assertIn("EOFError: input() is not available in pyexec repl: the code runs in a "
                      "remote interpreter whose stdin is not connected to this terminal", out)
        # The session's own input() is back for other clients.
        st = self.stub.Eval(pb.EvalRequest(session=self.token, code="input.__module__"),
                            timeout=10)
        self.assertEqual(st.value.str, "builtins")
        self.assertEqual(term.exit_with_ctrl_d(), 0)

    def test_system_exit_ends_the_repl_with_its_code(self):
        term, _ = self.start_repl()
        term.send("x = 5\r")
        term.expect(r">>> ")
        term.send("raise SystemExit(3)\r")
        self.assertEqual(term.wait(), 3)
        self.assertEqual(self.stats().sessions, 0)

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
