"""Callbacks (issue 19): Python code calls functions the client registered,
with pyexec.call(name, *args, **kwargs) (erlang.call is an alias), through
the sync and the asyncio client against a real pyexecd.

Covered: values of every kind both ways, errors both ways (the client's
function raising is pyexec.CallbackError in Python; Python raising after a
callback is PythonError in the client), re-entry six levels deep (Python ->
client -> the same session -> Python -> ...), concurrent callers whose
callbacks overlap in the client (sessions and stateless), an unknown name,
per-call functions and the decorator forms, coroutine functions, a function
that never answers (TimeoutError in Python before the deadline; the session
keeps working), an interrupt of a call that waits for its callback, and
stateless calls. Measured and printed: a callback's round trip against a
plain Eval, and a Run (no callback) against an Eval.

Not covered: several Python threads of ONE call waiting in pyexec.call at
once. pyexecd's worker loses answers then (each waiting thread reads the
worker socket and drops an answer of another seq: worker/python_runner.cc),
so such a call ends with TimeoutError in Python; reported to the server side.
"""

import asyncio
import math
import statistics
import threading
import time
import unittest
from typing import Any, Callable, List

import server
import pyexec_client.aio
from pyexec_client import Cancelled, Client, PythonError

ALL_KINDS = (None, True, -(2 ** 80), 2 ** 63, -7, 2.5, "héllo", b"\x00\xff", [1, [2]], (1, "a"),
             {1, "x"}, {"k": [None], (1, 2): b"v", 3: {4}}, frozenset({(1, 2)}))
DOWN = "def down(n):\n    return 0 if n == 0 else pyexec.call('down', n - 1) + 1\n"


def same(a: Any, b: Any) -> bool:
    """Kind-exact equality (1 is not True, a tuple is not a list)."""
    if type(a) is not type(b):
        return isinstance(a, (set, frozenset)) and isinstance(b, (set, frozenset)) and a == b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def median_seconds(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class SyncCallbackTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=6).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.client = Client(self.server.address, timeout=30)
        self.addCleanup(self.client.close)

    def test_values_both_ways(self) -> None:
        got: List[Any] = []

        def echo(*args: Any, **kwargs: Any) -> Any:
            got.append((args, kwargs))
            return args[0]
        self.client.register_function("echo", echo)
        with self.client.session() as s:
            for value in ALL_KINDS:
                with self.subTest(value=value):
                    got.clear()
                    back = s.eval("pyexec.call('echo', v, k=v)", {"v": value})
                    self.assertTrue(same(back, value), "%r came back as %r" % (value, back))
                    ((args, kwargs),) = got
                    self.assertTrue(same(args[0], value), "the function got %r" % (args[0],))
                    self.assertTrue(same(kwargs["k"], value))
                    # Python sees the value's own type.
                    # (a frozenset is a set in Python: one Value kind, set).
                    self.assertEqual(s.eval("type(pyexec.call('echo', v)).__name__",
                                            {"v": value}),
                                     "set" if isinstance(value, frozenset)
                                     else type(value).__name__)
            self.assertTrue(math.isnan(s.eval("pyexec.call('echo', float('nan'))")))
            self.assertEqual(s.eval("erlang.call('echo', 5)"), 5)

    def test_errors_both_ways(self) -> None:
        @self.client.register_function
        def refuse(user: str) -> None:
            raise PermissionError("no access for " + user)
        with self.client.session() as s:
            s.exec("try:\n    pyexec.call('refuse', 'bob')\nexcept pyexec.CallbackError as e:\n"
                   "    caught = (type(e).__name__, e.type, e.message)\n")
            self.assertEqual(s.eval("caught"),
                             ("CallbackError", "PermissionError", "no access for bob"))
            with self.assertRaises(PythonError) as cm:
                s.eval("pyexec.call('refuse', 'eve')")
            self.assertEqual(cm.exception.type, "CallbackError")
            self.assertIn("no access for eve", cm.exception.message)
            # Python's own error after a callback returned.
            self.client.register_function("one", lambda: 1)
            with self.assertRaises(PythonError) as cm:
                s.eval("pyexec.call('one') / 0")
            self.assertEqual(cm.exception.type, "ZeroDivisionError")
            # A value with no Value kind cannot go back: an error in Python.
            self.client.register_function("odd", lambda: object())
            with self.assertRaises(PythonError) as cm:
                s.eval("pyexec.call('odd')")
            self.assertIn("no pyexec Value kind", cm.exception.message)
            # An unknown name; the session is fine afterwards.
            with self.assertRaises(PythonError) as cm:
                s.eval("pyexec.call('nope')")
            self.assertEqual(cm.exception.type, "CallbackError")
            self.assertIn("nope", cm.exception.message)
            self.assertEqual(s.eval("1 + 1"), 2)

    def test_reentry_six_levels(self) -> None:
        with self.client.session() as s:
            s.exec(DOWN)
            depth = []

            def down(n: int) -> int:
                depth.append(n)
                return int(s.call("__main__", "down", [n])) + 1
            self.client.register_function("down", down)
            self.assertEqual(s.eval("down(6)"), 12)
            self.assertEqual(depth, [5, 4, 3, 2, 1, 0])

    def test_concurrent_callers_and_callbacks(self) -> None:
        # Calls at once, four on four sessions, then two stateless (the
        # server's two warm workers): their callbacks run at the same time
        # in the client (a barrier passes only if all wait in it together)
        # and each call gets its own answers.
        for bound, n_calls in ((True, 4), (False, 2)):
            with self.subTest(bound=bound):
                barrier = threading.Barrier(n_calls, timeout=15)

                def meet(tag: str, i: int) -> str:
                    barrier.wait()
                    return "%s-%d" % (tag, i)
                self.client.register_function("meet", meet)
                self.client.register_function("tag", lambda t, i: "%s-%d" % (t, i))
                errors: List[BaseException] = []

                def caller(n: int) -> None:
                    try:
                        tag = "c%d" % n
                        if bound:
                            with self.client.session() as s:
                                self.assertEqual(s.eval("pyexec.call('meet', t, 0)", {"t": tag}),
                                                 tag + "-0")
                                for i in range(1, 5):
                                    self.assertEqual(s.eval("pyexec.call('tag', t, i)",
                                                            {"t": tag, "i": i}),
                                                     "%s-%d" % (tag, i))
                        else:
                            self.assertEqual(self.client.eval("pyexec.call('meet', t, 7)",
                                                              {"t": tag}), tag + "-7")
                    except BaseException as e:  # noqa: BLE001 (checked below)
                        errors.append(e)
                threads = [threading.Thread(target=caller, args=(n,)) for n in range(n_calls)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                self.assertEqual(errors, [])
                self.assertFalse(barrier.broken)

    def test_registration_forms_and_per_call_functions(self) -> None:
        @self.client.register_function("renamed")
        def f() -> str:
            return "renamed"
        self.assertEqual(self.client.functions, ("renamed",))
        self.assertEqual(self.client.eval("pyexec.call('renamed')"), "renamed")
        # Per call: more functions, and they win over registered ones.
        self.assertEqual(self.client.eval("pyexec.call('renamed') + pyexec.call('x')",
                                          functions={"x": lambda: "!"}), "renamed!")
        self.assertEqual(self.client.call("pyexec", "call", ["renamed"],
                                          functions={"renamed": lambda: "mine"}), "mine")
        # A coroutine function runs in the sync client too.

        async def later(x: int) -> int:
            await asyncio.sleep(0.01)
            return x + 1
        self.assertEqual(self.client.eval("pyexec.call('later', 1)",
                                          functions={"later": later}), 2)
        # exec with per-call functions (output delivered when it returns).
        out: List[str] = []
        self.client.exec("print(pyexec.call('renamed'))", on_stdout=out.append)
        self.assertEqual(out, ["renamed\n"])
        self.assertTrue(self.client.unregister_function("renamed"))
        self.assertFalse(self.client.unregister_function("renamed"))
        # With none registered, calls are plain again: Python is told so.
        with self.assertRaises(PythonError) as cm:
            self.client.eval("pyexec.call('renamed')")
        self.assertIn("registered no functions", cm.exception.message)

    def test_a_function_that_never_answers(self) -> None:
        release = threading.Event()
        self.addCleanup(release.set)
        self.client.register_function("hang", lambda: release.wait(30))
        with self.client.session() as s:
            start = time.monotonic()
            s.exec("try:\n    pyexec.call('hang')\nexcept TimeoutError as e:\n"
                   "    r = str(e)\n", timeout=2)
            self.assertLess(time.monotonic() - start, 2.0)
            self.assertIn("did not answer", s.eval("r"))
            self.assertEqual(s.eval("1"), 1)  # the session does not hang
            # A call waiting for its callback is interrupted like any other.
            running = s.start_exec("pyexec.call('hang')", timeout=20)
            time.sleep(0.2)
            self.assertTrue(running.interrupt())
            with self.assertRaises(Cancelled):
                running.result(10)
            self.assertEqual(s.eval("2"), 2)

    def test_round_trip_figures(self) -> None:
        with self.client.session() as s:
            plain = median_seconds(lambda: s.eval("1"), 200)
            self.client.register_function("f", lambda: 1)
            run = median_seconds(lambda: s.eval("1"), 200)
            callback = median_seconds(lambda: s.eval("pyexec.call('f')"), 200)
        print("sync: Eval %.0f us, Run (no callback) %.0f us (%.2fx), Eval with one callback "
              "%.0f us (%.2fx Eval; the callback's round trip %.0f us)"
              % (plain * 1e6, run * 1e6, run / plain, callback * 1e6, callback / plain,
                 (callback - run) * 1e6))
        self.assertLess(callback, plain * 20)


class AsyncCallbackTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=6).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def run_async(self, body: Callable[[Any], Any]) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client(self.server.address, timeout=30) as c:
                await asyncio.wait_for(body(c), 120)
        asyncio.run(main())

    def test_values_errors_and_reentry(self) -> None:
        async def body(c: Any) -> None:
            @c.register_function
            async def echo(*args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(0)
                return [args, kwargs]
            c.register_function("plain", lambda x: x * 2)  # a plain function works too

            @c.register_function("boom")
            async def boom() -> None:
                raise KeyError("missing")
            async with c.session() as s:
                for value in ALL_KINDS:
                    back = await s.eval("pyexec.call('echo', v, k=v)", {"v": value})
                    self.assertTrue(same(back, [(value,), {"k": value}]), repr(back))
                self.assertEqual(await s.eval("pyexec.call('plain', 21)"), 42)
                with self.assertRaises(PythonError) as cm:
                    await s.eval("pyexec.call('boom')")
                self.assertEqual(cm.exception.type, "CallbackError")
                self.assertIn("missing", cm.exception.message)
                with self.assertRaises(PythonError) as cm:
                    await s.eval("pyexec.call('nope')")
                self.assertIn("nope", cm.exception.message)
                await s.exec(DOWN)

                async def down(n: int) -> int:
                    return int(await s.call("__main__", "down", [n])) + 1
                c.register_function("down", down)
                self.assertEqual(await s.eval("down(6)"), 12)
        self.run_async(body)

    def test_concurrency_never_and_interrupt(self) -> None:
        async def body(c: Any) -> None:
            # Calls at once (four on sessions, then two stateless, as many as
            # warm workers): their coroutine callbacks overlap (an
            # asyncio.Barrier) and each call gets its own answers.
            for bound, n_calls in ((True, 4), (False, 2)):
                barrier = asyncio.Barrier(n_calls)

                async def meet(x: int) -> int:
                    await asyncio.wait_for(barrier.wait(), 15)
                    return x * 2
                c.register_function("meet", meet)
                c.register_function("double", lambda x: x * 2)

                async def caller(n: int) -> None:
                    if not bound:
                        self.assertEqual(await c.eval("pyexec.call('meet', n)", {"n": n}), 2 * n)
                        return
                    async with c.session() as s:
                        self.assertEqual(await s.eval("pyexec.call('meet', n)", {"n": n}), 2 * n)
                        for i in range(3):
                            self.assertEqual(await s.eval("pyexec.call('double', i)",
                                                          {"i": i + n}), 2 * (i + n))
                await asyncio.gather(*(caller(n) for n in range(n_calls)))
                self.assertFalse(barrier.broken)
            # Never answers: TimeoutError in Python; the waiting task is cancelled.
            cancelled = asyncio.Event()

            async def hang() -> None:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
            c.register_function("hang", hang)
            async with c.session() as s:
                await s.exec("try:\n    pyexec.call('hang')\nexcept TimeoutError:\n"
                             "    r = 'timed out'\n", timeout=2)
                self.assertEqual(await s.eval("r"), "timed out")
                await asyncio.wait_for(cancelled.wait(), 5)
                running = await s.start_exec("pyexec.call('hang')", timeout=20)
                await asyncio.sleep(0.2)
                self.assertTrue(await running.interrupt())
                with self.assertRaises(Cancelled):
                    await running
                self.assertEqual(await s.eval("3"), 3)
        self.run_async(body)

    def test_round_trip_figures(self) -> None:
        async def body(c: Any) -> None:
            async def median(make: Callable[[], Any], n: int) -> float:
                times = []
                for _ in range(n):
                    start = time.perf_counter()
                    await make()
                    times.append(time.perf_counter() - start)
                return statistics.median(times)
            async with c.session() as s:
                plain = await median(lambda: s.eval("1"), 200)
                c.register_function("f", lambda: 1)
                run = await median(lambda: s.eval("1"), 200)
                callback = await median(lambda: s.eval("pyexec.call('f')"), 200)
            print("asyncio: Eval %.0f us, Run (no callback) %.0f us (%.2fx), Eval with one "
                  "callback %.0f us (%.2fx Eval; the callback's round trip %.0f us)"
                  % (plain * 1e6, run * 1e6, run / plain, callback * 1e6, callback / plain,
                     (callback - run) * 1e6))
            self.assertLess(callback, plain * 20)
        self.run_async(body)


if __name__ == "__main__":
    unittest.main()
