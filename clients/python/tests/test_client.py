"""The sync and asyncio clients against a real pyexecd."""

import asyncio
import contextlib
import io
import json
import os
import socket
import tempfile
import threading
import time
import unittest

import conformance
import server
import pyexec_client
import pyexec_client.aio
from pyexec_client import (Client, InvalidArgument, PoolExhausted, PyExecError, PythonError,
                           SessionNotFound, Timeout, Unavailable, ValueConversionError)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SyncClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        # max_workers=2: one shared context plus one session fill the pool.
        cls.server = server.Pyexecd(workers=1, max_workers=2).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.client = Client(self.server.address, timeout=30, num_contexts=2)
        self.addCleanup(self.client.close)

    def test_stateless_calls_and_output(self) -> None:
        self.assertEqual(self.client.eval("6*7"), 42)
        self.assertIsNone(self.client.exec("y = 1"))
        self.assertEqual(self.client.call("math", "gcd", [12, 18]), 6)
        self.assertEqual(self.client.call("builtins", "int", ["ff"], {"base": 16}), 255)
        r = self.client.exec_result("print('hi'); import sys; print('err', file=sys.stderr)")
        self.assertEqual((r.value, r.stdout, r.stderr), (None, "hi\n", "err\n"))
        r = self.client.eval_result("len(s)", {"s": "abc"})
        self.assertEqual(r.value, 3)

    def test_python_error_is_typed_and_keeps_output(self) -> None:
        with self.assertRaises(PythonError) as cm:
            self.client.exec("print('before')\nraise KeyError('k')")
        self.assertEqual(cm.exception.type, "KeyError")
        self.assertIn("'k'", cm.exception.message)
        self.assertIn("raise KeyError", cm.exception.traceback)
        self.assertEqual(cm.exception.stdout, "before\n")
        self.assertIsInstance(cm.exception, PyExecError)

    def test_session_binds_and_unbinds(self) -> None:
        with self.client.session() as s:
            token = s.token
            self.assertTrue(token)
            self.assertGreater(s.idle_timeout, 0)
            s.exec("x = 41")
            self.assertEqual(s.eval("x + 1"), 42)
            self.assertEqual(self.client.stats().sessions, 1)
        self.assertIsNone(s.token)
        self.assertEqual(self.client.stats().sessions, 0)
        with self.assertRaises(SessionNotFound):
            self.client.attach(token).eval("1")

    def test_session_unbinds_when_the_block_raises(self) -> None:
        with self.assertRaises(PythonError):
            with self.client.session() as s:
                token = s.token
                s.eval("1/0")
        self.assertEqual(self.client.stats().sessions, 0)
        with self.assertRaises(SessionNotFound):
            self.client.attach(token).eval("1")
        with self.assertRaises(RuntimeError):
            with self.client.session():
                raise RuntimeError("user error")
        self.assertEqual(self.client.stats().sessions, 0)

    def test_contexts_are_shared_lazy_and_rebind_after_loss(self) -> None:
        self.assertIs(self.client.context(1), self.client.context(1))
        self.assertIsNot(self.client.context(1), self.client.context(2))
        self.assertEqual(self.client.stats().sessions, 0)  # nothing bound yet
        ctx = self.client.context(1)
        ctx.exec("counter = 0")
        results = []

        def bump() -> None:
            results.append(self.client.context(1).eval("globals().__setitem__('counter', "
                                                       "counter + 1) or counter"))
        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [1, 2, 3, 4])
        self.assertEqual(self.client.stats().sessions, 1)
        # The server loses the session: that call fails, the next rebinds afresh.
        old = ctx.token
        self.client.attach(old).unbind()
        with self.assertRaises(SessionNotFound):
            ctx.eval("counter")
        with self.assertRaises(PythonError) as cm:
            ctx.eval("counter")
        self.assertEqual(cm.exception.type, "NameError")
        self.assertNotEqual(ctx.token, old)
        for bad in (0, 3, "1", True):
            with self.assertRaises(InvalidArgument):
                self.client.context(bad)
        self.client.close()
        self.assertEqual(Client(self.server.address).stats().sessions, 0)

    def test_pool_exhausted(self) -> None:
        with self.client.session(), self.client.session():
            with self.assertRaises(PoolExhausted):
                self.client.session().bind()

    def test_timeout_interrupts_and_keeps_the_session(self) -> None:
        with self.client.session() as s:
            s.exec("import time; x = 7")
            start = time.monotonic()
            with self.assertRaises(Timeout):
                s.eval("time.sleep(30)", timeout=0.3)
            self.assertLess(time.monotonic() - start, 10)
            self.assertEqual(s.eval("x"), 7)
        # The client-wide default applies when a call gives none.
        with Client(self.server.address, timeout=0.3) as short:
            with self.assertRaises(Timeout):
                short.eval("__import__('time').sleep(30)")

    def test_invalid_argument_and_conversion_errors(self) -> None:
        with self.assertRaises(InvalidArgument):
            self.client.eval("")
        with self.assertRaises(ValueConversionError):
            self.client.eval("x", {"x": object()})
        with self.assertRaises(TypeError):  # ValueConversionError is a TypeError too
            self.client.call("builtins", "len", [object()])

    def test_unavailable(self) -> None:
        with Client("127.0.0.1:%d" % _closed_port(), timeout=5) as dead:
            with self.assertRaises(Unavailable):
                dead.eval("1")

    def test_values_round_trip_natively(self) -> None:
        value = {(1, "a"): frozenset({b"x"}), 3: [None, True, 2**100, -2**70, 1.5, "s"],
                 "set": {1, 2}, b"k": (), frozenset({1}): {}}
        got = self.client.eval("x", {"x": value})
        self.assertEqual(got, value)
        self.assertIs(type(got[3]), list)
        self.assertIs(type(got[(1, "a")]), set)  # a set where it need not be hashable
        self.assertIn(frozenset({1}), got)
        self.assertIs(type(got["set"]), set)
        self.assertEqual(self.client.eval("type(x[3][2]).__name__", {"x": value}), "int")
        o = self.client.eval("object()")
        self.assertIsInstance(o, pyexec_client.Opaque)
        self.assertEqual(o.type, "object")


class AsyncClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=1, max_workers=2).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def run_async(self, body) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client(self.server.address, timeout=30,
                                                num_contexts=2) as client:
                await asyncio.wait_for(body(client), 60)
        asyncio.run(main())

    def test_same_api_awaited(self) -> None:
        async def body(c) -> None:
            self.assertEqual(await c.eval("6*7"), 42)
            self.assertEqual(await c.call("math", "gcd", [12, 18]), 6)
            r = await c.exec_result("print('hi')")
            self.assertEqual(r.stdout, "hi\n")
            async with c.session() as s:
                token = s.token
                await s.exec("x = 41")
                self.assertEqual(await s.eval("x + 1"), 42)
            with self.assertRaises(SessionNotFound):
                await c.attach(token).eval("1")
            with self.assertRaises(PythonError) as cm:
                async with c.session() as s:
                    token = s.token
                    await s.eval("1/0")
            self.assertEqual(cm.exception.type, "ZeroDivisionError")
            self.assertEqual((await c.stats()).sessions, 0)
            ctx = c.context(2)
            self.assertIs(ctx, c.context(2))
            await ctx.exec("n = 5")
            self.assertEqual(await c.context(2).eval("n"), 5)
            async with c.session():
                with self.assertRaises(PoolExhausted):
                    await c.session().bind()
            with self.assertRaises(InvalidArgument):
                await c.eval("")
        self.run_async(body)

    def test_timeout_and_cancel_interrupt_and_keep_the_session(self) -> None:
        async def body(c) -> None:
            async with c.session() as s:
                await s.exec("import time; x = 3")
                with self.assertRaises(Timeout):
                    await s.eval("time.sleep(30)", timeout=0.3)
                self.assertEqual(await s.eval("x"), 3)
                # Cancelling the awaiting task cancels the RPC, which interrupts Python.
                task = asyncio.ensure_future(s.exec("time.sleep(30); x = 99"))
                await asyncio.sleep(0.5)  # let the call reach the worker (no signal exists)
                start = time.monotonic()
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                self.assertEqual(await s.eval("x"), 3)
                self.assertLess(time.monotonic() - start, 10)
        self.run_async(body)

    def test_unavailable(self) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client("127.0.0.1:%d" % _closed_port(),
                                                timeout=5) as dead:
                with self.assertRaises(Unavailable):
                    await dead.eval("1")
        asyncio.run(main())


class ConformanceRunnerCanFailTest(unittest.TestCase):
    """The runner counts wrong expectations and unknown kinds as failures."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=1, max_workers=2).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_failures_are_reported(self) -> None:
        cases = [
            {"name": "ok", "kind": "eval", "code": "1", "expect": {"int": "1"}},
            {"name": "tuple_is_not_list", "kind": "eval", "code": "(1,)",
             "expect": {"list": [{"int": "1"}]}},
            {"name": "float_is_not_int", "kind": "eval", "code": "3.0", "expect": {"int": "3"}},
            {"name": "wrong_error", "kind": "status", "scenario": "empty_code",
             "expect": "timeout"},
            {"name": "new_kind", "kind": "stream", "code": "1"},
            {"name": "new_scenario", "kind": "status", "scenario": "interrupt",
             "expect": "timeout"},
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"version": 1, "cases": cases}, f)
        self.addCleanup(os.unlink, f.name)
        old = conformance.VECTORS
        conformance.VECTORS = f.name
        self.addCleanup(setattr, conformance, "VECTORS", old)
        # Its summary line is kept out of the log: CI reads "N passed, M
        # failed" lines as test results, and these failures are the point.
        with Client(self.server.address, timeout=30) as client, \
                contextlib.redirect_stdout(io.StringIO()) as summary:
            passed, failures = asyncio.run(conformance.run_all(conformance.SyncApi(client)))
        self.assertIn("conformance: 1 passed, 5 failed", summary.getvalue())
        self.assertEqual(passed, 1)
        self.assertEqual([x.split(":")[0] for x in failures],
                         ["tuple_is_not_list", "float_is_not_int", "wrong_error", "new_kind",
                          "new_scenario"])


if __name__ == "__main__":
    unittest.main()
