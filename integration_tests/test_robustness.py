"""Fault injection against the real pyexecd (issue 3, item 6).

Deadlines and kill escalation, every way a worker can fail, limits, malformed
requests, client cancellation, backpressure, user child processes and leak
checks. Graceful drain is in test_drain.py and random SIGKILLs under load in
test_chaos.py.
"""

import glob
import os
import re
import shutil
import signal
import threading
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc

SC = grpc.StatusCode

SIGINT_IGNORED_LOOP = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "while True:\n    pass\n")
SIGINT_BLOCKED_SLEEP = ("import signal, time\n"
                        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
                        "time.sleep(1000)\n")


class RobustBase(fx.ServerTestCase):
    # default_timeout applies to calls that carry no deadline.
    SERVER_FLAGS = ("--default_timeout=2s", "--kill_grace=1s")
    WORKERS = 2
    MAX_WORKERS = 6

    def pid_marker_code(self, name):
        """Code that writes the worker's pid to `name` in its HOME (signals that the
        call started)."""
        return ("import os as _os\n_p = _os.path.join(_os.environ['HOME'], %r)\n"
                "_f = open(_p + '.tmp', 'w'); _f.write(str(_os.getpid())); "
                "_f.close(); _os.rename(_p + '.tmp', _p)\n" % name)

    def read_pid(self, name, timeout=10.0):
        path = self.wait_file(name, timeout)
        with open(path) as f:
            return int(f.read())

    def bound_with_state(self):
        s = self.bind()
        self.ex("kept = 'state'", s)
        return s, self.session_pid(s)


class DeadlineTest(RobustBase):

    def test_deadline_interrupts_busy_loop_and_session_keeps_state(self):
        s, pid = self.bound_with_state()
        code = ("interrupted = False\ntry:\n    while True:\n        pass\n"
                "except KeyboardInterrupt:\n    interrupted = True\n    raise\n")
        t0 = time.monotonic()
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.exec, code, s, timeout=1.0)
        self.assertLess(time.monotonic() - t0, 2.0)
        t1 = time.monotonic()
        self.assertEqual(self.ev("kept", s, timeout=5), "state")
        self.assertLess(time.monotonic() - t1, 0.9, "session not usable right after the interrupt")
        self.assertTrue(self.ev("interrupted", s), "Python did not get KeyboardInterrupt")
        self.assertEqual(self.session_pid(s), pid, "the worker was replaced, not interrupted")

    def test_deadline_interrupts_sleep(self):
        s, pid = self.bound_with_state()
        t0 = time.monotonic()
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.exec, "import time\ntime.sleep(100)", s,
                            timeout=1.0)
        self.assertEqual(self.ev("kept", s, timeout=5), "state")
        self.assertLess(time.monotonic() - t0, 1.9)
        self.assertEqual(self.session_pid(s), pid)

    def test_default_timeout_applies_without_deadline(self):
        s, pid = self.bound_with_state()
        t0 = time.monotonic()
        fut = self.stub.Exec.future(pb.ExecRequest(session=s, code="while True:\n    pass\n"))
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                fut.result(timeout=15)
        finally:
            fut.cancel()
        elapsed = time.monotonic() - t0
        self.assertEqual(cm.exception.code(), SC.DEADLINE_EXCEEDED, cm.exception.details())
        self.assertGreater(elapsed, 1.5, "--default_timeout=2s not honoured")
        self.assertLess(elapsed, 5.0, "--default_timeout=2s not honoured")
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid)

    def _assert_escalates_to_kill(self, code):
        s, pid = self.bound_with_state()
        other, other_pid = self.bound_with_state()
        t0 = time.monotonic()
        fut = self.stub.Exec.future(pb.ExecRequest(session=s, code=code))  # default_timeout 2s
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                fut.result(timeout=15)
        finally:
            fut.cancel()
        elapsed = time.monotonic() - t0
        self.assertEqual(cm.exception.code(), SC.ABORTED, cm.exception.details())
        self.assertIn("SIGKILL", cm.exception.details().upper())
        self.assertGreater(elapsed, 2.5, "killed before timeout + kill_grace")
        self.assertLess(elapsed, 7.0, "kill escalation too slow")
        self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
        self.assertFalse(fx.wait_gone({pid: None}, 5.0))
        self.assertEqual(self.ev("kept", other), "state")
        self.assertEqual(self.session_pid(other), other_pid)
        self.server.wait_pool_size()

    def test_sigint_ignored_loop_is_killed_after_grace(self):
        self._assert_escalates_to_kill(SIGINT_IGNORED_LOOP)

    def test_sigint_blocked_c_call_is_killed_after_grace(self):
        self._assert_escalates_to_kill(SIGINT_BLOCKED_SLEEP)

    def test_runaway_with_client_deadline_is_killed_after_grace(self):
        s, pid = self.bound_with_state()
        t0 = time.monotonic()
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.exec, SIGINT_IGNORED_LOOP, s, timeout=1.0)
        self.assertFalse(fx.wait_gone({pid: None}, 6.0), "runaway worker never killed")
        self.assertLess(time.monotonic() - t0, 1.0 + 1.0 + 2.0)
        self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
        self.server.wait_pool_size()

    def test_stateless_runaway_frees_its_slot(self):
        self.server.wait_pool_size()
        paths = [self.marker() for _ in range(2)]
        t0 = time.monotonic()
        futs = [self.stub.Exec.future(pb.ExecRequest(
            code=self.pid_marker_code(p) + SIGINT_IGNORED_LOOP), timeout=1.0) for p in paths]
        pids = [self.read_pid(p, 5.0) for p in paths]
        for f in futs:
            with self.assertRaises(grpc.RpcError) as cm:
                f.result(timeout=10)
            self.assertEqual(cm.exception.code(), SC.DEADLINE_EXCEEDED)
        # deadline (1s) + kill_grace (1s) + slack.
        self.assertFalse(fx.wait_gone({p: None for p in pids}, 1.0 + 1.0 + 2.0 - (time.monotonic() - t0)),
                         "a stateless runaway kept its worker past deadline + grace")
        self.assertEqual(self.ev("1 + 1", timeout=5), 2)
        self.assertLess(time.monotonic() - t0, 1.0 + 1.0 + 3.0)
        self.server.wait_pool_size()

    def test_client_cancel_interrupts_bound_call(self):
        s, pid = self.bound_with_state()
        path = self.marker()
        # The marker is made inside the try: a cancel that lands right after
        # it (the client sees the file at once) must still be caught.
        code = ("try:\n    " + self.touch_code(path) + "    while True:\n        pass\n"
                "except KeyboardInterrupt:\n    cancelled_seen = True\n    raise\n")
        fut = self.stub.Exec.future(pb.ExecRequest(session=s, code=code), timeout=30)
        self.wait_file(path)
        self.assertTrue(fut.cancel())
        fx.wait_until(lambda: self.ev("globals().get('cancelled_seen', False)", s, timeout=5), 5.0,
                      what="the cancelled call to be interrupted")
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid)

    def test_client_cancel_frees_stateless_worker(self):
        self.server.wait_pool_size()
        path = self.marker()
        fut = self.stub.Exec.future(pb.ExecRequest(code=self.touch_code(path) + "while True: pass"),
                                    timeout=30)
        self.wait_file(path)
        self.assertTrue(fut.cancel())
        fx.wait_until(lambda: self.server.stats().busy_workers == 0, 2.0,
                      what="the cancelled stateless call to stop")
        self.server.wait_pool_size(timeout=5)

    def test_client_disconnect_frees_stateless_worker(self):
        self.server.wait_pool_size()
        ch = self.server.new_channel()
        stub = fx.pb_grpc.PyExecStub(ch)
        path = self.marker()
        fut = stub.Exec.future(pb.ExecRequest(code=self.touch_code(path) + "while True: pass"),
                               timeout=30)
        self.wait_file(path)
        ch.close()
        with self.assertRaises(grpc.RpcError):
            fut.result(timeout=5)
        fx.wait_until(lambda: self.server.stats().busy_workers == 0, 2.0,
                      what="the disconnected call to stop")
        self.server.wait_pool_size(timeout=5)


class WorkerFailureTest(RobustBase):
    """Every way a worker can fail: ABORTED with a reason, NOT_FOUND after, pool heals."""

    def _assert_worker_failure(self, code, reason_re, bound=True):
        other, other_pid = self.bound_with_state()
        died_before = self.server.stats().workers_died
        s, pid = self.bound_with_state() if bound else ("", None)
        t0 = time.monotonic()
        err = self.assertRpcError(SC.ABORTED, self.exec, code, s, timeout=20)
        self.assertLess(time.monotonic() - t0, 8.0, "worker failure not noticed promptly")
        self.assertRegex(err.details(), reason_re, "ABORTED message carries no reason")
        # The reason is logged too.
        fx.wait_until(lambda: re.search(reason_re, self.server.log_since(self._log_offset)), 5.0,
                      what="the failure reason in pyexecd's log")
        if bound:
            self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
            self.assertFalse(fx.wait_gone({pid: None}, 5.0), "failed worker still alive")
        self.assertEqual(self.ev("kept", other), "state")
        self.assertEqual(self.session_pid(other), other_pid)
        self.server.wait_pool_size()
        self.assertGreater(self.server.stats().workers_died, died_before)
        self.assertEqual(self.server.health_status(""), fx.SERVING)
        self.assertEqual(self.ev("2 * 21"), 42)
        return err

    def test_segfault(self):
        self._assert_worker_failure("import ctypes\nctypes.string_at(0)", r"SIGSEGV")

    def test_segfault_stateless(self):
        self._assert_worker_failure("import ctypes\nctypes.string_at(0)", r"SIGSEGV", bound=False)

    def test_os_exit(self):
        self._assert_worker_failure("import os\nos._exit(3)", r"(?i)exit\D*\b3\b")

    def test_abort(self):
        self._assert_worker_failure("import os\nos.abort()", r"SIGABRT")

    def test_self_sigkill(self):
        self._assert_worker_failure("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                                    r"SIGKILL", bound=False)

    def test_fd3_is_the_worker_socket(self):
        # Precondition of the garbage/close tests below.
        s = self.bind()
        self.assertTrue(self.ev("__import__('stat').S_ISSOCK(__import__('os').fstat(3).st_mode)", s))

    PROTOCOL_RE = r"(?i)protocol|frame|malformed|invalid|parse|corrupt|garbage"

    def test_garbage_on_socket(self):
        self._assert_worker_failure(
            "import os, time\nos.write(3, b'garbage' * 64)\ntime.sleep(30)", self.PROTOCOL_RE)

    def test_unparseable_frame_on_socket(self):
        self._assert_worker_failure(
            "import os, time\nos.write(3, b'\\x00\\x00\\x00\\x08' + b'\\xff' * 8)\ntime.sleep(30)",
            self.PROTOCOL_RE)

    def test_worker_closes_its_socket(self):
        self._assert_worker_failure(
            "import os, time\nos.close(3)\ntime.sleep(30)",
            r"(?i)clos|eof|hang|disconnect|socket|connection|exit|sig|kill|protocol")

    def test_worker_closes_its_socket_and_returns(self):
        self._assert_worker_failure(
            "import os\nos.close(3)",
            r"(?i)clos|eof|hang|disconnect|socket|connection|exit|sig|kill|protocol")

    def _assert_conversion_failure_is_python_error(self, setup, expr):
        s, pid = self.bound_with_state()
        if setup:
            self.ex(setup, s)
        resp = self.eval(expr, s)
        self.assertTrue(resp.HasField("error"), "expected a PythonError, got %s" % resp)
        self.assertTrue(resp.error.type and resp.error.message, resp.error)
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid, "conversion error took the worker down")
        return resp.error

    def test_repr_raises_during_conversion(self):
        err = self._assert_conversion_failure_is_python_error(
            "class R:\n    def __repr__(self):\n        raise RuntimeError('repr boom')\n", "R()")
        self.assertIn("repr boom", err.message + err.traceback)

    def test_repr_raises_systemexit_during_conversion(self):
        self._assert_conversion_failure_is_python_error(
            "class R:\n    def __repr__(self):\n        raise SystemExit(4)\n", "[R()]")

    def test_unencodable_str_result(self):
        # A lone surrogate has no UTF-8 form: a PythonError, or a str with it escaped.
        s, pid = self.bound_with_state()
        resp = self.eval("'a\\ud800b'", s)
        if not resp.HasField("error"):
            got = self.value_of(resp)
            self.assertIsInstance(got, str)
            self.assertTrue(got.startswith("a") and got.endswith("b"), got)
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid)

    def test_dict_subclass_whose_items_raise(self):
        s, pid = self.bound_with_state()
        self.ex("class D(dict):\n"
                "    def items(self):\n        raise RuntimeError('items boom')\n"
                "    def keys(self):\n        raise RuntimeError('keys boom')\n"
                "    def __iter__(self):\n        raise RuntimeError('iter boom')\n"
                "d = D(a=1)\n"
                "class L(list):\n"
                "    def __len__(self):\n        raise RuntimeError('len boom')\n"
                "    def __iter__(self):\n        raise RuntimeError('iter boom')\n"
                "l = L([1, 2])\n", s)
        for expr, expected in (("d", {"a": 1}), ("l", [1, 2]), ("[d, l]", [{"a": 1}, [1, 2]])):
            resp = self.eval(expr, s)
            if resp.HasField("error"):
                self.assertIn("boom", resp.error.message + resp.error.traceback)
            else:
                self.assertEqual(fx.from_value(resp.value), expected)
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid)

    def test_system_exit_in_user_code(self):
        # Either a PythonError (the worker survives) or ABORTED naming the exit code.
        for code in ("raise SystemExit(5)", "import sys\nsys.exit(5)"):
            s, pid = self.bound_with_state()
            try:
                resp = self.exec(code, s)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), SC.ABORTED, e.details())
                self.assertRegex(e.details(), r"(?i)exit\D*\b5\b")
                self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
            else:
                self.assertEqual(resp.error.type, "SystemExit")
                self.assertEqual(self.ev("kept", s), "state")
            self.server.wait_pool_size()


class ChildProcessTest(RobustBase):
    """Processes started by user code die with their worker (process group)."""

    def _spawn_child(self, s):
        self.ex("import subprocess\nchild = subprocess.Popen(['sleep', '1000'])", s)
        pid = self.ev("child.pid", s)
        st = fx.proc_stat(pid)
        self.assertIsNotNone(st)
        self.addCleanup(fx.kill_if_alive, pid, st[2])
        return {pid: st[2]}

    def test_children_die_on_unbind(self):
        s = self.bind()
        kids = self._spawn_child(s)
        self.ex("import subprocess\nc2 = subprocess.Popen(['sh', '-c', 'sleep 1000; true'])", s)
        c2 = self.ev("c2.pid", s)
        kids[c2] = fx.proc_stat(c2)[2]
        self.addCleanup(fx.kill_if_alive, c2, kids[c2])
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
        self.assertFalse(fx.wait_gone(kids, 5.0), "user child processes outlived Unbind")

    def test_children_die_when_worker_is_killed(self):
        s = self.bind()
        kids = self._spawn_child(s)
        os.kill(self.session_pid(s), signal.SIGKILL)
        self.assertFalse(fx.wait_gone(kids, 5.0), "user child outlived its SIGKILLed worker")
        self.server.wait_pool_size()

    def test_children_die_when_worker_crashes(self):
        s = self.bind()
        kids = self._spawn_child(s)
        self.assertRpcError(SC.ABORTED, self.exec, "import os\nos._exit(1)", s)
        self.assertFalse(fx.wait_gone(kids, 5.0), "user child outlived its crashed worker")

    def test_children_die_when_runaway_is_killed(self):
        s = self.bind()
        kids = self._spawn_child(s)
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.exec, SIGINT_IGNORED_LOOP, s, timeout=1.0)
        self.assertFalse(fx.wait_gone(kids, 6.0), "user child outlived its killed worker")


    def test_a_forked_child_does_not_hide_its_workers_death(self):
        """pyexecd learns of a worker's death from its socket's hang-up: a
        child user code forked (no exec) must not hold that socket open."""
        s = self.bind()
        self.ex("import os, time\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    time.sleep(1000)\n"
                "    os._exit(0)\n"
                "child = pid", s)
        child = self.ev("child", s)
        self.addCleanup(fx.kill_if_alive, child, fx.proc_stat(child)[2])
        worker = self.session_pid(s)
        os.kill(worker, signal.SIGKILL)
        started = time.monotonic()
        fx.wait_until(lambda: self._gone(s), 5, interval=0.02, what="the session to end")
        self.assertLess(time.monotonic() - started, 2, "death noticed late")
        self.assertFalse(fx.wait_gone({child: None}, 5.0), "the forked child outlived its worker")

    def _gone(self, s):
        try:
            self.eval("1", s, timeout=2)
            return False
        except grpc.RpcError as e:
            return e.code() == SC.NOT_FOUND


class DescriptorTest(fx.ServerTestCase):
    """One descriptor per session in pyexecd, and running out of descriptors
    refuses Binds at once (issue 18)."""

    PER_TEST_SERVER = True
    # Workers may not ask for more descriptors than the hard limit below.
    SERVER_FLAGS = ("--worker_max_open_files=64",)
    WORKERS = 1
    MAX_WORKERS = 200

    def test_a_session_costs_pyexecd_one_descriptor(self):
        self.server.wait_pool_size(sessions=0)
        base = fx.fd_count(self.server.pid)
        sessions = [self.bind() for _ in range(20)]
        self.server.wait_pool_size(sessions=20)
        grown = fx.fd_count(self.server.pid) - base
        self.assertLessEqual(grown, 20 + 2, "fds grew by %d for 20 sessions" % grown)
        self.assertGreaterEqual(grown, 20 - 2)
        del sessions

    def make_server(self):
        # A soft and hard limit of 160: pyexecd cannot raise it, and runs out
        # of descriptors well before --max_workers.
        return fx.Server(*self.SERVER_FLAGS, workers=self.WORKERS, max_workers=self.MAX_WORKERS,
                         wrapper=["prlimit", "--nofile=160:160", "--"])

    def test_out_of_descriptors_binds_are_refused_at_once_and_nothing_leaks(self):
        self.assertIn("open-file limit", self.server.log_tail())
        bound = []
        refused = None
        for _ in range(200):
            started = time.monotonic()
            try:
                bound.append(self.stub.Bind(pb.BindRequest(), timeout=20).session)
            except grpc.RpcError as e:
                refused = (e, time.monotonic() - started)
                break
        self.assertIsNotNone(refused, "200 binds under a 160-descriptor limit all succeeded")
        err, took = refused
        self.assertEqual(err.code(), SC.RESOURCE_EXHAUSTED, err.details())
        self.assertLess(took, 5, "the refused Bind waited %.1fs" % took)
        # The sessions bound before work; freeing some lets Binds succeed again.
        self.assertEqual(self.ev("1 + 1", bound[0]), 2)
        for s in bound[:10]:
            self.stub.Unbind(pb.UnbindRequest(session=s), timeout=10)
        fx.wait_until(lambda: self._binds(), 30, interval=0.5, what="Bind to work again")
        for s in bound[10:]:
            self.stub.Unbind(pb.UnbindRequest(session=s), timeout=10)
        self.server.wait_pool_size(sessions=0, timeout=60)
        # No private directory was left behind by the failed starts.
        leftovers = glob.glob("/tmp/pyexecd_tmp_*/pyexecd-%d/w-*" % self.server.pid)
        self.assertLessEqual(len(leftovers), self.WORKERS + 2, leftovers)

    def _binds(self):
        try:
            s = self.stub.Bind(pb.BindRequest(), timeout=10).session
        except grpc.RpcError:
            return False
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=10)
        return True


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"),
                     "needs root and unshare(1) for a PID namespace")
class Pid1Test(unittest.TestCase):
    """pyexecd as PID 1, as in a container: processes that user code started
    and that outlived their worker are re-parented to pyexecd, which must
    reap them rather than collect a zombie per session."""

    def test_orphans_of_ended_workers_are_reaped(self):
        srv = fx.Server(workers=1, max_workers=3,
                        wrapper=["unshare", "--pid", "--mount-proc", "--kill-child=SIGTERM"])
        self.addCleanup(srv.remove_log)
        self.addCleanup(srv.cleanup)
        srv.start()
        (pyexecd,) = fx.children(srv.pid)  # the host's pid of PID 1 inside
        # unshare(1) ignores SIGTERM while it waits: stop pyexecd itself
        # (cleanups run last-in first-out, so this comes before srv.cleanup).
        self.addCleanup(os.kill, pyexecd, signal.SIGTERM)
        for _ in range(3):
            s = srv.stub.Bind(pb.BindRequest(), timeout=10).session
            srv.stub.Exec(pb.ExecRequest(session=s, code=(
                "import subprocess\n"
                "subprocess.Popen(['sleep', '1000'])\n"
                "subprocess.Popen(['sh', '-c', 'sleep 1000; true'])\n")), timeout=10)
            srv.stub.Unbind(pb.UnbindRequest(session=s), timeout=10)

        def zombies():
            out = []
            for pid in os.listdir("/proc/%d/task" % pyexecd):
                with open("/proc/%d/task/%s/children" % (pyexecd, pid)) as f:
                    for child in f.read().split():
                        st = fx.proc_stat(int(child))
                        if st is not None and st[0] == "Z":
                            out.append(int(child))
            return out

        # The user processes die with their workers' groups at once; the
        # orphans among them are reaped on pyexecd's next one-second tick.
        fx.wait_until(lambda: not zombies(), 10.0, what="no zombie children of pyexecd")
        self.assertEqual(srv.stub.Eval(pb.EvalRequest(code="6 * 7"), timeout=10).value.int, 42)


class LimitsTest(RobustBase):
    SERVER_FLAGS = ("--worker_memory_limit_mb=512", "--worker_max_open_files=64",
                    "--max_output_bytes=4096", "--max_message_bytes=1048576",
                    "--max_value_depth=10", "--kill_grace=1s")

    def test_max_value_depth_flag(self):
        s, pid = self.bound_with_state()
        self.assertEqual(fx.nested_depth(self.ev("v", s, locals={"v": fx.nested_list_value(8)})),
                         (8, None))
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "1", s,
                            locals={"v": fx.nested_list_value(12)})
        self.ex("deep = None\nfor _ in range(12):\n    deep = [deep]\n", s)
        resp = self.eval("deep", s)
        self.assertTrue(resp.HasField("error"), "result deeper than --max_value_depth accepted")
        self.assertRegex(resp.error.type + " " + resp.error.message, r"(?i)depth|deep|nest|recurs")
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.session_pid(s), pid)

    def _memory_outcome(self, code, s):
        """Runs code that exceeds the memory limit: MemoryError, or ABORTED with a reason."""
        try:
            resp = self.exec(code, s, timeout=30)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.ABORTED, e.details())
            self.assertRegex(e.details(), r"(?i)memory|limit|oom|SIGKILL|SIGSEGV|SIGABRT|signal")
            if s:
                self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
            return "aborted"
        self.assertEqual(resp.error.type, "MemoryError", resp)
        return "memoryerror"

    def test_memory_limit_single_allocation(self):
        s, pid = self.bound_with_state()
        if self._memory_outcome("big = bytearray(4 * 1024 ** 3)", s) == "memoryerror":
            self.assertEqual(self.ev("kept", s), "state")
            self.assertEqual(self.session_pid(s), pid)
        self.server.wait_pool_size()

    def test_memory_limit_gradual(self):
        s, pid = self.bound_with_state()
        code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
        if self._memory_outcome(code, s) == "memoryerror":
            self.ex("del chunks", s)
            self.assertEqual(self.ev("kept", s), "state")
        self.server.wait_pool_size()

    def test_memory_limit_stateless(self):
        self._memory_outcome("len(bytearray(4 * 1024 ** 3))", "")
        self.server.wait_pool_size()
        self.assertEqual(self.ev("1 + 1"), 2)

    def test_open_files_limit(self):
        s, pid = self.bound_with_state()
        self.ex("fs = []\nerr = None\ntry:\n    while len(fs) < 10000:\n"
                "        fs.append(open('/dev/null'))\nexcept OSError as e:\n    err = e\n", s)
        self.assertEqual(self.ev("err.errno if err else None", s), 24, "no EMFILE")
        self.assertLess(self.ev("len(fs)", s), 64)
        self.ex("for f in fs:\n    f.close()\nfs.clear()", s)
        self.assertEqual(self.ev("kept", s), "state")
        resp = self.eval("len([open('/dev/null') for _ in range(200)])")
        self.assertEqual(resp.error.type, "OSError", resp)
        self.assertIn("Too many open files", resp.error.message)
        self.assertEqual(self.ev("1 + 1"), 2)

    def test_output_flood_truncated(self):
        s, pid = self.bound_with_state()
        t0 = time.monotonic()
        resp = self.ex("import sys\nfor i in range(200000):\n    print('x' * 100)\n"
                       "    print('e' * 100, file=sys.stderr)\n", s, timeout=60)
        self.assertLess(time.monotonic() - t0, 30)
        for out in (resp.stdout, resp.stderr):
            self.assertLessEqual(len(out), 4096 + 512)
            self.assertGreaterEqual(len(out), 2048)
            self.assertIn("truncated", out[-512:])
        self.assertEqual(self.ex("print('after')", s).stdout, "after\n")
        self.assertEqual(self.ev("kept", s), "state")

    def test_request_too_large(self):
        big = b"x" * (2 * 1024 * 1024)
        self.assertRpcError((SC.RESOURCE_EXHAUSTED, SC.INVALID_ARGUMENT),
                            self.eval, "len(v)", locals={"v": big})
        self.assertRpcError((SC.RESOURCE_EXHAUSTED, SC.INVALID_ARGUMENT),
                            self.exec, "#" + "x" * (2 * 1024 * 1024))
        s, pid = self.bound_with_state()
        self.assertRpcError((SC.RESOURCE_EXHAUSTED, SC.INVALID_ARGUMENT),
                            self.eval, "len(v)", s, locals={"v": big})
        self.assertEqual(self.ev("kept", s), "state")
        self.assertEqual(self.ev("len(v)", locals={"v": b"x" * 1000}), 1000)
        self.assertEqual(self.server.health_status(), fx.SERVING)

    def test_response_too_large(self):
        # The contract names no code for a result past --max_message_bytes. Accepted:
        # RESOURCE_EXHAUSTED / INVALID_ARGUMENT, a PythonError, or ABORTED naming the
        # limit (DESIGN.md lists "limit" among the ways a worker dies), never a hang.
        s, pid = self.bound_with_state()
        t0 = time.monotonic()
        try:
            resp = self.eval("'x' * (3 * 1024 * 1024)", s, timeout=20)
        except grpc.RpcError as e:
            self.assertIn(e.code(), (SC.RESOURCE_EXHAUSTED, SC.INVALID_ARGUMENT, SC.ABORTED),
                          e.details())
            if e.code() == SC.ABORTED:
                self.assertRegex(e.details(), r"(?i)limit|too large|exceed")
                self.assertRpcError(SC.NOT_FOUND, self.eval, "kept", s)
        else:
            self.assertTrue(resp.HasField("error"), "oversized response sent anyway")
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(self.server.health_status(), fx.SERVING)
        self.assertEqual(self.ev("1 + 1"), 2)
        self.server.wait_pool_size()


class IdleTimeoutFlagTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--session_idle_timeout=1s",)

    def test_default_idle_timeout_from_flag(self):
        resp = self.stub.Bind(pb.BindRequest(), timeout=10)
        self.addCleanup(self.unbind_quietly, resp.session)
        self.assertEqual(resp.idle_timeout_seconds, 1)
        pid = self.session_pid(resp.session)
        self.assertFalse(fx.wait_gone({pid: None}, 10.0), "idle session's worker not reaped")
        self.assertRpcError(SC.NOT_FOUND, self.eval, "1", resp.session)
        self.server.wait_pool_size(sessions=0)

    def test_running_call_is_not_idle(self):
        s = self.stub.Bind(pb.BindRequest(), timeout=10).session
        self.addCleanup(self.unbind_quietly, s)
        self.ex("import time\ntime.sleep(2.5)\nx = 1", s, timeout=10)
        self.assertEqual(self.ev("x", s), 1)


class MalformedRequestTest(fx.ServerTestCase):
    """Bad requests get INVALID_ARGUMENT and leave the server unharmed (default flags)."""

    def tearDown(self):
        self.assertEqual(self.server.health_status(), fx.SERVING)
        self.assertEqual(self.ev("1 + 1"), 2)
        super().tearDown()

    def raw(self, method, payload, resp_cls, timeout=10):
        fn = self.server.channel.unary_unary("/pyexec.v1.PyExec/" + method,
                                             request_serializer=None,
                                             response_deserializer=resp_cls.FromString)
        return fn(payload, timeout=timeout)

    @staticmethod
    def ld(field, payload):
        """A length-delimited protobuf field."""
        n, out = len(payload), bytearray()
        key = (field << 3) | 2
        out.append(key)
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out) + payload

    def test_empty_code(self):
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "")
        self.assertRpcError(SC.INVALID_ARGUMENT, self.exec, "")
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "")
        s = self.bind()
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "", s)
        self.assertEqual(self.ev("1", s), 1)

    def test_invalid_utf8_in_code(self):
        for method, cls in (("Eval", pb.EvalResponse), ("Exec", pb.ExecResponse)):
            self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, method,
                                self.ld(2, b"1 + \xff\xfe"), cls)
        s = self.bind()
        self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, "Eval",
                            self.ld(1, s.encode()) + self.ld(2, b"'\xc3\x28'"), pb.EvalResponse)
        self.assertEqual(self.ev("1", s), 1)

    def test_invalid_utf8_in_values(self):
        bad_str_value = self.ld(6, b"\xff\xfe")                 # Value.str
        entry = self.ld(1, b"v") + self.ld(2, bad_str_value)    # locals map entry
        self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, "Eval",
                            self.ld(2, b"v") + self.ld(3, entry), pb.EvalResponse)
        call = self.ld(2, b"builtins") + self.ld(3, b"len") + self.ld(4, bad_str_value)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, "Call", call, pb.CallResponse)
        bad_key_entry = self.ld(1, b"\xff") + self.ld(2, self.ld(6, b"ok"))
        self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, "Eval",
                            self.ld(2, b"1") + self.ld(3, bad_key_entry), pb.EvalResponse)

    def test_unparseable_request(self):
        for payload in (b"\xff\xff\xff\xff", b"\x12\x7f" + b"x" * 3, b"\x0b"):
            self.assertRpcError(SC.INVALID_ARGUMENT, self.raw, "Eval", payload, pb.EvalResponse)

    def test_raw_valid_request_works(self):
        # Checks the raw path itself, so that the tests above can fail for the right reason.
        resp = self.raw("Eval", self.ld(2, b"6 * 7"), pb.EvalResponse)
        self.assertEqual(fx.from_value(resp.value), 42)

    def test_bad_values(self):
        v = pb.Value(big_int="12x4")
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "v", locals={"v": v})
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "v", locals={"v": pb.Value(big_int="")})
        unhashable = pb.Value(dict=True)
        unhashable.keys.add().CopyFrom(fx.to_value([1, 2]))
        unhashable.items.add().CopyFrom(fx.to_value(1))
        # A dict whose keys and items differ in number.
        lopsided = fx.to_value({"a": 1, "b": 2})
        del lopsided.keys[1]
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "v", locals={"v": lopsided})
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "v", locals={"v": unhashable})
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "len", [unhashable])
        s = self.bind()
        self.ex("kept = 1", s)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "v", s, locals={"v": v})
        self.assertEqual(self.ev("kept", s), 1)

    def test_value_with_no_kind(self):
        # Not named by the contract: either rejected or read as None, never a crash.
        try:
            resp = self.eval("v is None", locals={"v": pb.Value()})
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.INVALID_ARGUMENT, e.details())
        else:
            self.assertIs(self.value_of(resp), True)

    def test_64_levels_of_nesting_in_requests(self):
        # Only the top level of the expression names `v`: nested scopes do not see call locals.
        depth_fn = ("(lambda f, x: f(f, x))(lambda f, x: 1 + f(f, x[0]) if isinstance(x, (list, tuple))"
                    " else (1 + f(f, x['k']) if isinstance(x, dict) else 0), v)")
        self.assertEqual(self.ev(depth_fn, locals={"v": fx.nested_list_value(64)}), 64)
        # Tuples and dicts nest too.
        tup, dic = None, None
        for _ in range(64):
            tup, dic = (tup,), {"k": dic}
        self.assertEqual(self.ev(depth_fn, locals={"v": fx.to_value(tup)}), 64)
        self.assertEqual(self.ev(depth_fn, locals={"v": fx.to_value(dic)}), 64)
        self.assertEqual(self.value_of(self.call("builtins", "len", [fx.nested_list_value(64)])), 1)

    def test_64_levels_of_nesting_in_results(self):
        s = self.bind()
        self.ex("v = None\nfor _ in range(64):\n    v = [v]\n"
                "t, d = None, None\nfor _ in range(64):\n    t, d = (t,), {'k': d}\n", s)
        self.assertEqual(fx.nested_depth(self.ev("v", s)), (64, None))
        t, d = self.ev("t", s), self.ev("d", s)
        for _ in range(64):
            self.assertIsInstance(t, tuple)
            self.assertIsInstance(d, dict)
            t, d = t[0], d["k"]
        self.assertEqual((t, d), (None, None))
        # Both ways in one call.
        self.assertEqual(fx.nested_depth(self.ev("v", locals={"v": fx.nested_list_value(64, 7)})),
                         (64, 7))

    def test_too_deep_request_is_invalid_argument(self):
        for depth in (150, 5000):
            self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "1",
                                locals={"v": fx.nested_list_value(depth)})
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "len",
                            [fx.nested_list_value(150)])

    def test_too_deep_result_is_python_error(self):
        s = self.bind()
        self.ex("kept = 1\nv = None\nfor _ in range(300):\n    v = [v]\n"
                "loop = []\nloop.append(loop)\n", s)
        for expr in ("v", "loop", "{'a': loop}"):
            resp = self.eval(expr, s)
            self.assertTrue(resp.HasField("error"), "expected a PythonError for %s" % expr)
            self.assertRegex(resp.error.type + " " + resp.error.message,
                             r"(?i)depth|deep|nest|recurs")
        self.assertEqual(self.ev("kept", s), 1)
        resp = self.eval("eval('[' * 150 + ']' * 150)")
        self.assertTrue(resp.HasField("error"))


class BackpressureTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--max_pending=2",)
    WORKERS = 1
    MAX_WORKERS = 1

    def test_full_wait_queue_is_resource_exhausted(self):
        self.server.wait_pool_size()
        n = 12
        results = [None] * n
        max_pending = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    max_pending[0] = max(max_pending[0], self.server.stats(timeout=2).pending_requests)
                except grpc.RpcError:
                    pass
                time.sleep(0.01)

        def one(i):
            t0 = time.monotonic()
            try:
                self.exec("import time\ntime.sleep(1.5)", timeout=30)
                results[i] = ("OK", time.monotonic() - t0)
            except grpc.RpcError as e:
                results[i] = (e.code(), time.monotonic() - t0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        sampler.join(10)
        self.assertTrue(all(r is not None for r in results), "unanswered calls: %s" % results)
        codes = [r[0] for r in results]
        self.assertIn(SC.RESOURCE_EXHAUSTED, codes, results)
        self.assertIn("OK", codes, results)
        self.assertEqual(set(codes), {"OK", SC.RESOURCE_EXHAUSTED}, results)
        for code, elapsed in results:
            if code == SC.RESOURCE_EXHAUSTED:
                self.assertLess(elapsed, 1.4, "a rejected call waited instead of failing fast")
        self.assertLessEqual(max_pending[0], 2, "wait queue grew past --max_pending")
        self.server.wait_pool_size()
        self.assertEqual(self.ev("1"), 1)


class LeakTest(RobustBase):
    SERVER_FLAGS = ("--kill_grace=1s",)

    def _batch(self, n):
        for i in range(n):
            s = self.bind(cleanup=False)
            self.assertEqual(self.ev("1 + %d" % i, s), 1 + i)
            self.ev("%d" % i)  # stateless
            kind = i % 4
            if kind == 0:
                self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
            elif kind == 1:
                pid = self.session_pid(s)
                os.kill(pid, signal.SIGKILL)
                fx.wait_gone({pid: None}, 5.0)
                self.unbind_quietly(s)
            elif kind == 2:
                self.assertRpcError(SC.ABORTED, self.exec, "import os\nos._exit(2)", s)
                self.unbind_quietly(s)
            else:
                self.assertRpcError(SC.DEADLINE_EXCEEDED, self.exec, "while True: pass", s,
                                    timeout=0.3)
                self.assertEqual(self.ev("1", s, timeout=5), 1)
                self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)

    def test_no_fd_or_process_leaks(self):
        srv = self.server
        self._batch(8)  # warm-up: lets gRPC and the pool allocate what they keep
        srv.wait_pool_size(sessions=0)
        fx.wait_until(lambda: len(srv.worker_pids()) == srv.workers, 10.0, what="worker count")
        fds0 = fx.fd_count(srv.pid)
        procs0 = len(fx.descendants(srv.pid))
        self._batch(40)
        srv.wait_pool_size(sessions=0)
        fx.wait_until(lambda: len(fx.descendants(srv.pid)) == procs0, 10.0,
                      what="process count back to %d (now %s)" % (procs0, fx.descendants(srv.pid)))
        try:
            fx.wait_until(lambda: fx.fd_count(srv.pid) <= fds0 + 2, 10.0, what="fd count")
        except AssertionError:
            self.fail("fd leak: %d fds before, %d after: %s" % (
                fds0, fx.fd_count(srv.pid),
                sorted(os.readlink("/proc/%d/fd/%s" % (srv.pid, f))
                       for f in os.listdir("/proc/%d/fd" % srv.pid))))


if __name__ == "__main__":
    unittest.main()
