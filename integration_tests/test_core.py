"""Core API behaviour of the real pyexecd, driven with grpcio (issue 2, item 6)."""

import math
import os
import re
import signal
import subprocess
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc, Opaque

from grpcstd.reflection.v1alpha import reflection_pb2 as refl_a, reflection_pb2_grpc as refl_a_grpc
from grpcstd.reflection.v1 import reflection_pb2 as refl_1, reflection_pb2_grpc as refl_1_grpc
from google.protobuf import descriptor_pb2, descriptor_pool

SC = grpc.StatusCode


class SessionsTest(fx.ServerTestCase):
    WORKERS = 2
    MAX_WORKERS = 4

    def test_state_persists_in_session(self):
        s = self.bind()
        self.ex("x = 41\nimport math", s)
        self.assertEqual(self.ev("x + 1", s), 42)
        self.ex("x += 1\ndef f(a, b=1):\n    return a * b + x", s)
        self.assertEqual(self.ev("x", s), 42)
        self.assertAlmostEqual(self.ev("math.pi", s), math.pi)
        self.assertEqual(self.value_of(self.call("__main__", "f", [2], {"b": 3}, session=s)), 48)
        pid = self.session_pid(s)
        for _ in range(5):
            self.assertEqual(self.session_pid(s), pid, "a session must stay on one interpreter")

    def test_sessions_are_isolated(self):
        a, b = self.bind(), self.bind()
        self.assertNotEqual(a, b)
        self.ex("secret = 'a'", a)
        resp = self.eval("secret", b)
        self.assertTrue(resp.HasField("error"))
        self.assertEqual(resp.error.type, "NameError")
        self.ex("secret = 'b'", b)
        self.assertEqual(self.ev("secret", a), "a")
        self.assertEqual(self.ev("secret", b), "b")
        self.assertNotEqual(self.session_pid(a), self.session_pid(b))
        # Module state is per interpreter too.
        self.ex("import sys\nsys.pyexec_marker = 1", a)
        self.assertFalse(self.ev("hasattr(__import__('sys'), 'pyexec_marker')", b))

    def test_lifecycle_is_logged_and_stdout_has_one_line(self):
        s = self.bind(cleanup=False)
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
        fx.wait_until(lambda: re.search(r"(?i)\bbind\b.*\n(.*\n)*.*\bunbind\b",
                                        self.server.log_since(self._log_offset)), 5.0,
                      what="bind and unbind lines in the log")
        self.assertEqual(self.server.extra_stdout, b"", "pyexecd printed more than one stdout line")

    def test_session_tokens_are_long_and_distinct(self):
        tokens = {self.bind() for _ in range(3)}
        self.assertEqual(len(tokens), 3)
        for t in tokens:
            self.assertGreaterEqual(len(t), 16, "token too short for 128 bits: %r" % t)

    def test_stateless_calls_use_fresh_namespace(self):
        self.assertEqual(self.ev("6 * 7"), 42)
        # Run more times than there are workers so that every worker is hit.
        for i in range(6):
            self.ex("leak_%d = %d" % (i, i))
            resp = self.eval("leak_%d" % i)
            self.assertTrue(resp.HasField("error"), "stateless state leaked: %s" % resp)
            self.assertEqual(resp.error.type, "NameError")
        resp = self.exec("y = 1")
        self.assertFalse(resp.HasField("error"))
        self.assertEqual(self.value_of(self.call("builtins", "len", ["abc"])), 3)

    def test_eval_locals(self):
        self.assertEqual(self.ev("a + b", locals={"a": 1, "b": 2}), 3)
        self.assertEqual(self.ev("s.upper() * n", locals={"s": "ab", "n": 2}), "ABAB")
        s = self.bind()
        self.ex("base = 10", s)
        self.assertEqual(self.ev("base + z", s, locals={"z": 5}), 15)
        # Locals are visible to that call only.
        resp = self.eval("z", s)
        self.assertTrue(resp.HasField("error"), "locals leaked into the session: %s" % resp)
        self.assertEqual(resp.error.type, "NameError")

    def test_exec_locals(self):
        s = self.bind()
        resp = self.ex("print(greeting + ', ' + name)", s, locals={"greeting": "hi", "name": "bob"})
        self.assertEqual(resp.stdout, "hi, bob\n")
        resp = self.eval("greeting", s)
        self.assertTrue(resp.HasField("error"), "exec locals leaked into the session: %s" % resp)
        self.assertEqual(resp.error.type, "NameError")

    def test_call_args_kwargs_and_dotted_paths(self):
        self.assertEqual(self.value_of(self.call("builtins", "sorted", [[3, 1, 2]], {"reverse": True})),
                         [3, 2, 1])
        self.assertEqual(self.value_of(self.call("math", "pow", [2.0, 10])), 1024.0)
        self.assertEqual(self.value_of(self.call("os", "path.join", ["a", "b", "c"])), "a/b/c")
        self.assertEqual(self.value_of(self.call("builtins", "dict", [], {"x": 1, "y": [2]})),
                         {"x": 1, "y": [2]})
        self.assertEqual(self.value_of(self.call("builtins", "str.upper", ["abc"])), "ABC")
        s = self.bind()
        self.ex("class K:\n    @staticmethod\n    def inc(x, by=1):\n        return x + by\n", s)
        self.assertEqual(self.value_of(self.call("__main__", "K.inc", [1], {"by": 5}, session=s)), 6)

    def test_call_errors_are_python_errors(self):
        resp = self.call("no_such_module_xyz", "f")
        self.assertEqual(resp.error.type, "ModuleNotFoundError")
        resp = self.call("math", "no_such_function")
        self.assertEqual(resp.error.type, "AttributeError")
        resp = self.call("builtins", "int", ["notanumber"])
        self.assertEqual(resp.error.type, "ValueError")
        self.assertIn("notanumber", resp.error.message)

    def test_exception_is_a_result(self):
        resp = self.eval("1 / 0")
        self.assertTrue(resp.HasField("error"))
        self.assertFalse(resp.HasField("value"))
        self.assertEqual(resp.error.type, "ZeroDivisionError")
        self.assertEqual(resp.error.message, "division by zero")
        self.assertIn("Traceback", resp.error.traceback)
        self.assertIn("ZeroDivisionError", resp.error.traceback)
        s = self.bind()
        self.ex("class MyError(Exception):\n    pass\n"
                "def inner():\n    raise MyError('custom text')\n"
                "def outer():\n    inner()\n", s)
        resp = self.exec("outer()", s)
        self.assertEqual(resp.error.type, "MyError")
        self.assertEqual(resp.error.message, "custom text")
        self.assertIn("inner", resp.error.traceback)
        self.assertIn("outer", resp.error.traceback)
        resp = self.call("__main__", "outer", session=s)
        self.assertEqual(resp.error.type, "MyError")
        self.assertFalse(resp.HasField("value"))
        # The session survives its exceptions.
        self.assertEqual(self.ev("1 + 1", s), 2)

    def test_syntax_error(self):
        resp = self.exec("def (:")
        self.assertEqual(resp.error.type, "SyntaxError")
        self.assertTrue(resp.error.message)
        resp = self.eval("x = 1")  # a statement is not an expression
        self.assertEqual(resp.error.type, "SyntaxError")
        s = self.bind()
        self.ex("kept = 3", s)
        self.assertEqual(self.exec("if True print(1)", s).error.type, "SyntaxError")
        self.assertEqual(self.ev("kept", s), 3)

    def test_stdout_stderr_capture(self):
        resp = self.ex("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"
                       "sys.stdout.write('more')")
        self.assertEqual(resp.stdout, "hello\nmore")
        self.assertEqual(resp.stderr, "oops\n")
        resp = self.eval("print('side effect') or 5")
        self.assertEqual(self.value_of(resp), 5)
        self.assertEqual(resp.stdout, "side effect\n")
        s = self.bind()
        self.assertEqual(self.ex("print('first')", s).stdout, "first\n")
        resp = self.ex("pass", s)
        self.assertEqual((resp.stdout, resp.stderr), ("", ""), "output leaked between calls")
        resp = self.call("builtins", "print", ["via", "call"], {"sep": "-"}, session=s)
        self.assertEqual(resp.stdout, "via-call\n")
        # Output written before an exception is kept.
        resp = self.exec("print('before')\nraise ValueError('after')", s)
        self.assertEqual(resp.error.type, "ValueError")
        self.assertEqual(resp.stdout, "before\n")
        # Non-ASCII output.
        self.assertEqual(self.ex("print('h\u00e9llo \u2603')").stdout, "h\u00e9llo \u2603\n")

    def test_stdout_truncated_at_default_limit(self):
        limit = 1024 * 1024
        s = self.bind()
        resp = self.ex("import sys\nsys.stdout.write('x' * (3 * %d))\n"
                       "sys.stderr.write('e' * (2 * %d))\nkept = 1" % (limit, limit), s, timeout=30)
        for name, out in (("stdout", resp.stdout), ("stderr", resp.stderr)):
            self.assertLessEqual(len(out), limit + 1024, "%s not bounded" % name)
            self.assertGreaterEqual(len(out), limit // 2, "%s cut far below the limit" % name)
            self.assertIn("truncated", out[-1024:], "%s has no truncation marker" % name)
        self.assertEqual(self.ev("kept", s), 1)

    def test_unbind_is_idempotent(self):
        s = self.bind(cleanup=False)
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
        self.stub.Unbind(pb.UnbindRequest(session="no-such-session-token"), timeout=5)

    def test_calls_after_unbind_are_not_found(self):
        s = self.bind(cleanup=False)
        self.ex("x = 1", s)
        pid = self.session_pid(s)
        self.stub.Unbind(pb.UnbindRequest(session=s), timeout=5)
        self.assertRpcError(SC.NOT_FOUND, self.eval, "x", s)
        self.assertRpcError(SC.NOT_FOUND, self.exec, "x = 2", s)
        self.assertRpcError(SC.NOT_FOUND, self.call, "builtins", "len", ["a"], session=s)
        self.assertRpcError(SC.NOT_FOUND, self.eval, "1", "definitely-not-a-token")
        # Unbind discards the worker process.
        self.assertFalse(fx.wait_gone({pid: None}, 5.0), "worker %d survived Unbind" % pid)
        self.server.wait_pool_size()

    def test_new_session_has_no_old_state(self):
        for _ in range(3):
            s = self.bind()
            resp = self.eval("left_behind", s)
            self.assertEqual(resp.error.type, "NameError", "state leaked between sessions")
            self.ex("left_behind = 1", s)
            self.unbind_quietly(s)

    def test_bind_idle_timeout(self):
        resp = self.stub.Bind(pb.BindRequest(idle_timeout_seconds=1), timeout=10)
        self.addCleanup(self.unbind_quietly, resp.session)
        self.assertEqual(resp.idle_timeout_seconds, 1)
        self.ex("x = 1", resp.session)
        pid = self.session_pid(resp.session)
        t0 = time.monotonic()
        # Any call would reset the idle timer, so watch the worker process instead.
        self.assertFalse(fx.wait_gone({pid: None}, 10.0), "idle session's worker not reaped")
        self.assertGreaterEqual(time.monotonic() - t0, 0.5, "session reaped long before its timeout")
        self.assertRpcError(SC.NOT_FOUND, self.eval, "x", resp.session)
        default = self.stub.Bind(pb.BindRequest(), timeout=10)
        self.addCleanup(self.unbind_quietly, default.session)
        self.assertEqual(default.idle_timeout_seconds, 600)
        # A session in use does not expire.
        busy = self.stub.Bind(pb.BindRequest(idle_timeout_seconds=2), timeout=10).session
        self.addCleanup(self.unbind_quietly, busy)
        self.ex("y = 2", busy)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            self.assertEqual(self.ev("y", busy), 2)
            time.sleep(0.25)

    def test_idle_server_with_sessions_sleeps(self):
        # A session that can expire puts an entry in the expiry job's queue.
        # The job once took the table's CLOCK_MONOTONIC due time for a
        # wall-clock one, decades past, and ran back to back: a whole core
        # while any such session lived. Idle, pyexecd must sleep.
        s = self.stub.Bind(pb.BindRequest(idle_timeout_seconds=600), timeout=10).session
        self.addCleanup(self.unbind_quietly, s)
        self.assertEqual(self.ev("1 + 1", s), 2)
        # The warm worker that Bind took is replaced first: spawning is work.
        self.server.wait_pool_size(sessions=1)
        time.sleep(0.2)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu_seconds():
            with open("/proc/%d/stat" % self.server.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

        before, t0 = cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        used, wall = cpu_seconds() - before, time.monotonic() - t0
        self.assertLess(used / wall, 0.1,
                        "idle pyexecd used %.0f%% of a core" % (100 * used / wall))

    def test_stats_fields(self):
        st = self.server.stats()
        self.assertEqual(st.max_workers, 4)
        self.server.wait_pool_size(sessions=0)
        st = self.server.stats()
        self.assertEqual(st.num_workers, st.available_workers + st.checked_out)
        before = st.calls_total
        s = self.bind()
        self.ev("1", s)
        self.ev("1")
        st = self.server.stats()
        self.assertEqual(st.sessions, 1)
        self.assertEqual(st.checked_out, 1)
        self.assertEqual(st.bindable_workers, 3)
        self.assertGreaterEqual(st.calls_total, before + 2)
        self.assertGreaterEqual(st.workers_spawned, 3)
        self.server.wait_pool_size(sessions=1)

    def test_pool_exhaustion(self):
        self.server.wait_pool_size(sessions=0)
        sessions = [self.bind() for _ in range(4)]
        err = self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.bind)
        self.assertIn("no_workers_available", err.details())
        # Warm idle workers may remain, but none can be bound.
        self.assertEqual(self.server.stats().bindable_workers, 0)
        # Stateless calls still work while binds are exhausted.
        for _ in range(4):
            self.assertEqual(self.ev("2 + 2"), 4)
        for s in sessions:
            self.assertEqual(self.ev("1", s), 1)
        self.unbind_quietly(sessions[0])
        s = self.bind()
        self.assertEqual(self.ev("3", s), 3)

    def test_worker_sigkilled_mid_call(self):
        a, b = self.bind(), self.bind()
        self.ex("state = 'b-state'", b)
        pid_a, pid_b = self.session_pid(a), self.session_pid(b)
        died_before = self.server.stats().workers_died
        path = self.marker()
        fut = self.stub.Exec.future(pb.ExecRequest(
            session=a, code=self.touch_code(path) + "import time\ntime.sleep(60)"), timeout=30)
        self.wait_file(path)
        os.kill(pid_a, signal.SIGKILL)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result(timeout=20)
        self.assertEqual(cm.exception.code(), SC.ABORTED, cm.exception.details())
        self.assertIn("SIGKILL", cm.exception.details())
        self.assertRpcError(SC.NOT_FOUND, self.eval, "1", a)
        self.assertEqual(self.ev("state", b), "b-state")
        self.assertEqual(self.session_pid(b), pid_b)
        self.server.wait_pool_size(sessions=1)
        self.assertGreaterEqual(self.server.stats().workers_died, died_before + 1)
        self.assertNotIn(pid_a, self.server.worker_pids())

    def test_idle_worker_sigkilled(self):
        s = self.bind()
        pid = self.session_pid(s)
        died_before = self.server.stats().workers_died
        os.kill(pid, signal.SIGKILL)
        fx.wait_until(lambda: self.server.stats().workers_died > died_before, 5.0,
                      what="the death to be noticed")
        self.assertRpcError(SC.NOT_FOUND, self.eval, "1", s)
        self.server.wait_pool_size(sessions=0)
        # An idle pooled worker killed is replaced too.
        victim = sorted(self.server.worker_pids())[0]
        died_before = self.server.stats().workers_died
        os.kill(victim, signal.SIGKILL)
        # The pool must have noticed (not only the kernel), or the next call
        # could still be handed to the dead worker.
        fx.wait_until(lambda: self.server.stats().workers_died > died_before, 5.0,
                      what="the pool to notice the victim's death")
        self.server.wait_pool_size(sessions=0)
        self.assertEqual(self.ev("1 + 1"), 2)


class PythonSubprocessTest(fx.ServerTestCase):
    """sys.executable is a real interpreter of the worker's Python version, so
    that user code can start Python the usual way."""

    def test_sys_executable_runs_the_same_python(self):
        s = self.bind()
        self.assertEqual(self.ev("__import__('sys').executable", s), "/usr/bin/python3.11")
        self.ex("import subprocess, sys\n"
                "out = subprocess.run([sys.executable, '-c', "
                "'import sys; print(sys.version_info[:2])'], capture_output=True, "
                "text=True, timeout=30)", s)
        self.assertEqual(self.ev("out.returncode", s), 0, self.ev("out.stderr", s))
        self.assertEqual(self.ev("out.stdout", s), "(3, 11)\n")

    def test_multiprocessing_spawn_works(self):
        s = self.bind()
        self.ex("import multiprocessing as mp\n"
                "ctx = mp.get_context('spawn')\n"
                "with ctx.Pool(1) as pool:\n"
                "    squares = pool.map(abs, [-1, -2, 3])\n", s, timeout=60)
        self.assertEqual(self.ev("squares", s), [1, 2, 3])


class ValuesTest(fx.ServerTestCase):
    """Round trips of every Value kind, in both directions."""

    def roundtrip(self, x):
        """Sends x as a local and returns what comes back from Eval('v')."""
        return self.value_of(self.eval("v", locals={"v": fx.to_value(x)}))

    def kind_of(self, code, **locals):
        resp = self.eval(code, locals=locals)
        self.assertFalse(resp.HasField("error"), resp.error)
        return resp.value.WhichOneof("kind"), resp.value

    def test_scalars(self):
        for x in (None, True, False, 0, 1, -1, 2 ** 63 - 1, -2 ** 63, 0.0, -0.5, 1e300,
                  "", "plain", "h\u00e9llo \u2603 \U0001F600", b"", b"\x00\xff\xfe", 3.25):
            got = self.roundtrip(x)
            self.assertEqual(got, x)
            self.assertIs(type(got), type(x))
        self.assertEqual(self.kind_of("True")[0], "bool")
        self.assertEqual(self.kind_of("1")[0], "int")
        self.assertEqual(self.kind_of("None")[0], "none")
        # Python sees the right types.
        for x, tname in ((True, "bool"), (5, "int"), (2.5, "float"), ("s", "str"), (b"b", "bytes"),
                         (None, "NoneType"), ([1], "list"), ((1,), "tuple"), ({1}, "set"),
                         ({1: 2}, "dict"), (2 ** 70, "int")):
            self.assertEqual(self.ev("type(v).__name__", locals={"v": x}), tname, x)

    def test_big_ints(self):
        for x in (2 ** 63, -2 ** 63 - 1, 2 ** 100, -2 ** 100, 10 ** 50 + 7, -(10 ** 80) - 3):
            self.assertEqual(self.roundtrip(x), x)
            self.assertTrue(self.ev("v == %d" % x, locals={"v": x}))
        kind, v = self.kind_of("2 ** 100")
        self.assertEqual(kind, "big_int")
        self.assertEqual(v.big_int, str(2 ** 100))
        kind, v = self.kind_of("-(2 ** 64) - 1")
        self.assertEqual((kind, v.big_int), ("big_int", str(-(2 ** 64) - 1)))
        self.assertEqual(self.kind_of("2 ** 63 - 1"), ("int", fx.to_value(2 ** 63 - 1)))
        self.assertEqual(self.kind_of("-2 ** 63")[1].int, -2 ** 63)
        self.assertEqual(self.kind_of("2 ** 63")[0], "big_int")
        self.assertEqual(self.kind_of("-2 ** 63 - 1")[0], "big_int")
        # A huge int keeps every digit.
        kind, v = self.kind_of("3 ** 2000")
        self.assertEqual((kind, v.big_int), ("big_int", str(3 ** 2000)))

    def test_special_floats(self):
        got = self.roundtrip(float("nan"))
        self.assertTrue(isinstance(got, float) and math.isnan(got))
        self.assertEqual(self.roundtrip(float("inf")), float("inf"))
        self.assertEqual(self.roundtrip(float("-inf")), float("-inf"))
        self.assertTrue(self.ev("v != v", locals={"v": float("nan")}))
        self.assertTrue(self.ev("v == float('-inf')", locals={"v": float("-inf")}))
        self.assertTrue(math.isnan(self.ev("float('nan')")))
        self.assertEqual(self.ev("float('inf')"), float("inf"))
        self.assertEqual(self.ev("-float('inf')"), float("-inf"))
        self.assertEqual(self.kind_of("1.0")[0], "float")
        neg_zero = self.ev("-0.0")
        self.assertEqual(math.copysign(1, neg_zero), -1.0)

    def test_bytes_and_str_stay_distinct(self):
        self.assertEqual(self.kind_of("b'abc'")[0], "bytes")
        self.assertEqual(self.kind_of("'abc'")[0], "str")
        kind, v = self.kind_of("bytearray(b'\\x00\\x01')")
        self.assertEqual((kind, v.bytes), ("bytes", b"\x00\x01"))
        self.assertEqual(self.ev("isinstance(v, bytes) and v == b'\\xff'", locals={"v": b"\xff"}), True)
        self.assertEqual(self.ev("isinstance(v, str)", locals={"v": "\xff"}), True)
        self.assertEqual(self.ev("len(v)", locals={"v": "\U0001F600"}), 1)

    def test_containers(self):
        cases = [
            [], [1, "a", None, 2.5, b"x"], (), (1,), (1, (2, (3,))), [[], [[]], ((),)],
            {"a": 1, "b": [1, 2, {"c": (3, 4)}]}, {}, frozenset(), frozenset({1, "x", (1, 2)}),
            {1: "int key", (1, 2): "tuple key", "s": "str key", b"b": "bytes key", None: 0,
             2.5: "float key", True: "bool key", 2 ** 70: "big"},
            [{"k": [(1, frozenset({2}))]}],
        ]
        for x in cases:
            self.assertEqual(self.roundtrip(x), x)
        self.assertEqual(self.ev("type(v[0]).__name__", locals={"v": ((1,),)}), "tuple")
        self.assertTrue(self.ev("v[(1, 2)] == 'tk' and v[7] == 'ik'",
                                locals={"v": {(1, 2): "tk", 7: "ik"}}))

    def test_sets_as_keys_and_elements(self):
        # A set Value in a hashable position must become a frozenset in Python.
        for x in ({frozenset({1}): "frozenset key"}, frozenset({frozenset({1, 2}), 3}),
                  {(1, frozenset()): 0}):
            self.assertEqual(self.roundtrip(x), x)
        self.assertEqual(self.ev("{frozenset({1}): 2}"), {frozenset({1}): 2})

    def test_containers_from_python(self):
        kind, v = self.kind_of("(1, [2], {3: 4})")
        self.assertEqual(kind, "tuple")
        self.assertEqual(fx.from_value(v), (1, [2], {3: 4}))
        self.assertEqual(self.kind_of("{1, 2}")[0], "set")
        kind, v = self.kind_of("frozenset({'a'})")
        self.assertEqual((kind, fx.from_value(v)), ("set", frozenset({"a"})))
        d = self.ev("{1: 'a', (2, 3): 'b', 'k': None, b'x': 1.5, None: [1]}")
        self.assertEqual(d, {1: "a", (2, 3): "b", "k": None, b"x": 1.5, None: [1]})
        kind, v = self.kind_of("{(1, 2): {3: (4,)}}")
        self.assertEqual(kind, "dict")
        self.assertEqual((len(v.keys), len(v.items)), (1, 1))
        self.assertEqual(v.keys[0].WhichOneof("kind"), "tuple")
        self.assertEqual(v.items[0].keys[0].WhichOneof("kind"), "int")
        self.assertEqual(v.items[0].items[0].WhichOneof("kind"), "tuple")
        # Dict order is preserved.
        kind, v = self.kind_of("{3: 0, 1: 0, 2: 0}")
        self.assertEqual([k.int for k in v.keys], [3, 1, 2])
        # Scalars carry no elements.
        for expr in ("1", "'s'", "None", "2 ** 100", "1.5", "b'x'", "object()"):
            kind, v = self.kind_of(expr)
            self.assertEqual((len(v.items), len(v.keys)), (0, 0), expr)

    def test_opaque(self):
        got = self.ev("__import__('datetime').datetime(2020, 1, 2, 3, 4, 5)")
        self.assertIsInstance(got, Opaque)
        self.assertEqual(got.type, "datetime.datetime")
        self.assertEqual(got.repr, "datetime.datetime(2020, 1, 2, 3, 4, 5)")
        got = self.ev("object()")
        self.assertIsInstance(got, Opaque)
        self.assertIn(got.type, ("object", "builtins.object"))
        self.assertTrue(got.repr.startswith("<object object at 0x"), got.repr)
        s = self.bind()
        self.ex("class Point:\n    def __repr__(self):\n        return 'Point(1, 2)'\n", s)
        # On a bound session such an object comes back as a ref
        # (test_streams_refs covers refs).
        got = self.ev("Point()", s)
        self.assertIsInstance(got, fx.Ref)
        self.assertIn(got.type, ("__main__.Point", "Point"))
        self.assertEqual(got.repr, "Point(1, 2)")
        got = self.ev("[1, __import__('decimal').Decimal('1.5')]")
        self.assertEqual(got[0], 1)
        self.assertEqual(got[1], Opaque("decimal.Decimal", "Decimal('1.5')"))
        got = self.ev("len")
        self.assertIsInstance(got, Opaque)
        self.assertIn("len", got.repr)
        # A complex number is not a float.
        got = self.ev("1+2j")
        self.assertIsInstance(got, Opaque)
        self.assertEqual(got.repr, "(1+2j)")


class HealthAndReflectionTest(fx.ServerTestCase):

    def test_health_serving(self):
        self.assertEqual(self.server.health_status(""), fx.SERVING)
        self.assertEqual(self.server.health_status(fx.SERVICE), fx.SERVING)
        self.assertEqual(self.server.health_status("no.such.Service"), SC.NOT_FOUND)

    def _reflection_stream(self, mod, stub_cls):
        stub = stub_cls(self.server.channel)
        reqs = [
            mod.ServerReflectionRequest(list_services=""),
            mod.ServerReflectionRequest(file_containing_symbol=fx.SERVICE),
            mod.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
            mod.ServerReflectionRequest(file_by_filename="pyexec/v1/pyexec.proto"),
            mod.ServerReflectionRequest(file_containing_symbol="pyexec.v1.EvalRequest"),
            mod.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
            mod.ServerReflectionRequest(list_services=""),
        ]
        resps = list(stub.ServerReflectionInfo(iter(reqs), timeout=10))
        self.assertEqual(len(resps), len(reqs))
        for req, resp in zip(reqs, resps):
            self.assertEqual(resp.original_request, req)

        def files(resp):
            self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", resp)
            out = []
            for raw in resp.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto()
                fd.ParseFromString(raw)
                out.append(fd)
            return out

        for i in (0, 6):
            self.assertEqual(resps[i].WhichOneof("message_response"), "list_services_response")
            names = [s.name for s in resps[i].list_services_response.service]
            self.assertIn(fx.SERVICE, names)
            self.assertIn("grpc.health.v1.Health", names)
            self.assertEqual(len(names), len(set(names)), names)
            self.assertFalse(resps[i].HasField("file_descriptor_response"))

        for i in (1, 3, 4):
            fds = files(resps[i])
            self.assertEqual([f.name for f in fds], ["pyexec/v1/pyexec.proto"],
                             "response %d carries extra files" % i)
            self.assertEqual(fds[0].package, "pyexec.v1")
            self.assertEqual([s.name for s in fds[0].service], ["PyExec"])
            # The descriptor is complete enough to build a pool from.
            pool = descriptor_pool.DescriptorPool()
            pool.Add(fds[0])
            svc = pool.FindServiceByName(fx.SERVICE)
            self.assertEqual({m.name for m in svc.methods},
                             {"Bind", "Unbind", "Eval", "Exec", "Call", "GetStats",
                              "ExecStream", "CallStream", "Release", "Interrupt", "Attach",
                              "Run", "Snapshot"})
            self.assertEqual(pool.FindMessageTypeByName("pyexec.v1.Value").oneofs[0].name, "kind")

        fds = files(resps[2])
        self.assertEqual([f.name for f in fds], ["grpc/health/v1/health.proto"])
        self.assertEqual(fds[0].package, "grpc.health.v1")

        self.assertEqual(resps[5].WhichOneof("message_response"), "error_response")
        self.assertEqual(resps[5].error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

    def test_reflection_v1alpha_stream(self):
        self._reflection_stream(refl_a, refl_a_grpc.ServerReflectionStub)

    def test_reflection_v1_stream(self):
        self._reflection_stream(refl_1, refl_1_grpc.ServerReflectionStub)

    @unittest.skipUnless(os.path.exists("/usr/bin/grpcurl") or os.environ.get("GRPCURL"),
                         "grpcurl not installed")
    def test_grpcurl(self):
        grpcurl = os.environ.get("GRPCURL", "/usr/bin/grpcurl")
        run = lambda *a: subprocess.run([grpcurl, "-plaintext", *a], capture_output=True,
                                        text=True, timeout=20)
        out = run(self.server.address, "list")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(fx.SERVICE, out.stdout)
        out = run(self.server.address, "describe")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("rpc Eval", out.stdout)
        out = run("-d", '{"code":"6*7"}', self.server.address, "pyexec.v1.PyExec/Eval")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("42", out.stdout)
        # A server stream (issue 10): every event, then the end.
        out = run("-d", '{"code":"for i in range(3): print(i)"}', self.server.address,
                  "pyexec.v1.PyExec/ExecStream")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('"end"', out.stdout)
        self.assertIn('0\\n', out.stdout)
        out = run("-d", '{"module":"builtins","function":"iter","args":[{"list":true,'
                  '"items":[{"int":"1"},{"int":"2"}]}]}', self.server.address,
                  "pyexec.v1.PyExec/CallStream")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.count('"value"'), 2, out.stdout)


class OrphanTest(fx.ServerTestCase):
    PER_TEST_SERVER = True

    def _kill_server_with_load(self):
        """Binds sessions (one busy, one with a `sleep` child) and SIGKILLs pyexecd.

        Returns (worker pids -> starttime, grandchild pid -> starttime)."""
        srv = self.server
        s = self.bind(cleanup=False)
        self.ex("import subprocess\nchild = subprocess.Popen(['sleep', '1000'])", s)
        grandchild = self.ev("child.pid", s)
        busy = self.bind(cleanup=False)
        path = self.marker()
        fut = self.stub.Exec.future(pb.ExecRequest(
            session=busy, code=self.touch_code(path) + "while True: pass"), timeout=30)
        self.wait_file(path)
        # 2 bound workers, and the pool refills to 2 idle ones.
        srv.wait_pool_size(sessions=2)
        fx.wait_until(lambda: len(srv.worker_pids()) >= 4, 10.0, what="4 worker processes")
        workers = {p: fx.proc_stat(p)[2] for p in srv.worker_pids()}
        self.assertNotIn(grandchild, workers)
        gc = {grandchild: fx.proc_stat(grandchild)[2]}
        for pid, st in list(workers.items()) + list(gc.items()):
            self.addCleanup(fx.kill_if_alive, pid, st)
        srv.proc.kill()
        srv.proc.wait(10)
        with self.assertRaises(grpc.RpcError):
            fut.result(timeout=20)
        return workers, gc

    @staticmethod
    def _describe(pids):
        out = {}
        for p in pids:
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    out[p] = f.read()
            except OSError:
                out[p] = None
        return out

    def test_no_orphan_workers_after_sigkill(self):
        workers, _ = self._kill_server_with_load()
        survivors = fx.wait_gone(workers, 5.0)
        self.assertFalse(survivors, "workers outlived a SIGKILLed pyexecd: %s"
                         % self._describe(survivors))

    def test_user_children_die_when_pyexecd_sigkilled(self):
        # Child processes of user code die with their worker, which dies with pyexecd.
        _, grandchild = self._kill_server_with_load()
        survivors = fx.wait_gone(grandchild, 5.0)
        for p in survivors:
            os.kill(p, signal.SIGKILL)
        self.assertFalse(survivors, "user child process outlived its dead worker: %s"
                         % self._describe(survivors))


if __name__ == "__main__":
    unittest.main()
