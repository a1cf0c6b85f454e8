"""Streams, refs and interrupt (issue 10) through the sync and asyncio clients,
against a real pyexecd."""

import asyncio
import gc
import threading
import time
import unittest

import server
import pyexec_client.aio
from pyexec_client import (Cancelled, Client, InvalidArgument, Item, PythonError, Ref,
                           RefLimitExceeded, SessionNotFound, Stderr, Stdout, Timeout,
                           UnknownRef, WorkerDied)

MAX_REFS = 8

GEN = ("state = 42\nmade = 0\n"
       "def forever():\n    global made\n    while True:\n        made += 1\n"
       "        yield made\n")

MODEL = ("class Model:\n    def __init__(self):\n        self.w = 3\n"
         "        self.inner = type('Inner', (), {'name': 'in'})()\n"
         "    def predict(self, x, bias=0):\n        return x * self.w + bias\n")


# The first line out says Python is running: these tests check the Interrupt
# that names no call, which stops whatever runs on the session. (Interrupts
# that name their call, sent at once, are test_interrupts'.)
PRINT_THEN_SPIN = "print('started', flush=True)\nwhile True: pass"


# A stream of many events, so that the server's backpressure (8 unwritten
# events per stream) pauses and resumes the worker many times: a generator
# that prints a line before each item, and statements that write to both
# output streams.
LONG_GEN = ("import sys\n"
            "def counted(n):\n    for i in range(n):\n        print('line', i)\n"
            "        yield i\n")
LONG_N = 3000
MIXED_OUTPUT = ("import sys\nfor i in range(%d):\n"
                "    print('out', i, file=sys.stderr if i %% 7 == 3 else sys.stdout)\n")
MIXED_N = 2000


def merged(events: list) -> list:
    """Adjacent chunks of the same output stream joined: the server flushes at
    line ends and every 50 ms, so a line may come in more than one chunk.
    Nothing else is forgiven: order, kinds and every character count."""
    out: list = []
    for ev in events:
        if out and type(ev) is type(out[-1]) and isinstance(ev, (Stdout, Stderr)):
            out[-1] = type(ev)(out[-1].text + ev.text)
        else:
            out.append(ev)
    return out


def long_gen_events(n: int) -> list:
    """What counted(n) must stream, exactly: each line, then its item."""
    events: list = []
    for i in range(n):
        events += [Stdout("line %d\n" % i), Item(i)]
    return events


def mixed_output_events(n: int) -> list:
    """What MIXED_OUTPUT % n must stream, merged, exactly in write order."""
    return merged([(Stderr if i % 7 == 3 else Stdout)("out %d\n" % i) for i in range(n)])


class SyncStreamsRefsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd("--max_refs_per_session=%d" % MAX_REFS,
                                    workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.client = Client(self.server.address, timeout=30, num_contexts=1)
        self.addCleanup(self.client.close)

    def test_output_arrives_before_the_call_ends(self) -> None:
        with self.client.session() as s:
            start = time.monotonic()
            stream = s.exec_stream("print('hi')\nimport time\ntime.sleep(1)")
            first = next(stream)
            first_at = time.monotonic() - start
            # print() writes "hi" and "\n" apart; the 50 ms flush may send them apart.
            self.assertIsInstance(first, Stdout)
            self.assertTrue(first.text and "hi\n".startswith(first.text), first)
            self.assertLess(first_at, 0.9, "the first chunk came only after the call ended")
            self.assertEqual(merged([first] + list(stream)), [Stdout("hi\n")])
            self.assertGreaterEqual(time.monotonic() - start, 1.0)
            # Stateless too, with stderr, and an error ending the stream.
            events = []
            with self.assertRaises(PythonError) as cm:
                for ev in self.client.exec_stream(
                        "import sys\nprint('a')\nprint('b', file=sys.stderr)\n"
                        "raise ValueError('bad')"):
                    events.append(ev)
            self.assertEqual(merged(events), [Stdout("a\n"), Stderr("b\n")])
            self.assertEqual(cm.exception.type, "ValueError")
            self.assertIn("raise ValueError", cm.exception.traceback)

    def test_generator_streamed_item_by_item(self) -> None:
        with self.client.session() as s:
            s.exec("import time\n"
                   "def gen(n):\n    for i in range(n):\n        print('making', i)\n"
                   "        yield i * i\n    raise KeyError('done')\n"
                   "def slow():\n    yield 1\n    time.sleep(1)\n    yield 2\n")
            events = []
            with self.assertRaises(PythonError) as cm:
                for ev in s.call_stream("__main__", "gen", [3]):
                    events.append(ev)
            self.assertEqual(merged(events), [Stdout("making 0\n"), Item(0),
                                              Stdout("making 1\n"), Item(1),
                                              Stdout("making 2\n"), Item(4)])
            self.assertEqual(cm.exception.type, "KeyError")
            # The first item comes while the generator still runs.
            start = time.monotonic()
            stream = s.call_stream("__main__", "slow")
            self.assertEqual(next(stream), Item(1))
            self.assertLess(time.monotonic() - start, 0.9)
            self.assertEqual(list(stream.items()), [2])
            self.assertGreaterEqual(time.monotonic() - start, 1.0)
            # A list is iterated (each element an Item); a str, a mapping or
            # a scalar is one Item; stateless works.
            self.assertEqual(list(self.client.call_stream("builtins", "sorted", [[3, 1, 2]])),
                             [Item(1), Item(2), Item(3)])
            self.assertEqual(list(self.client.call_stream("builtins", "str", ["ab"])),
                             [Item("ab")])
            self.assertEqual(list(self.client.call_stream("builtins", "dict", [], {"a": 1})),
                             [Item({"a": 1})])
            self.assertEqual(list(self.client.call_stream("builtins", "abs", [-3])), [Item(3)])

    def test_cancel_mid_stream_interrupts_and_keeps_state(self) -> None:
        with self.client.session() as s:
            s.exec(GEN)
            # Breaking out of the loop drops the stream, which cancels the RPC.
            got = []
            for value in s.call_stream("__main__", "forever").items():
                got.append(value)
                if len(got) == 5:
                    break
            gc.collect()  # the stream is already gone in CPython; be sure elsewhere
            self.assertEqual(got, [1, 2, 3, 4, 5])
            # The generator no longer runs: a call on the session gets through
            # (it would queue behind the endless generator and time out).
            self.assertEqual(s.eval("state", timeout=10), 42)
            made = s.eval("made")
            self.assertGreaterEqual(made, 5)
            self.assertEqual(s.eval("made"), made)
            # cancel() by hand, and a `with` block.
            stream = s.call_stream("__main__", "forever")
            self.assertIsInstance(next(stream), Item)
            stream.cancel()
            self.assertEqual(list(stream), [])
            with s.call_stream("__main__", "forever") as stream:
                next(stream)
            self.assertEqual(s.eval("state", timeout=10), 42)
            # cancel() from another thread ends the reader's loop quietly.
            stream = s.call_stream("__main__", "forever")
            reading, read, errors = threading.Event(), [], []

            def reader() -> None:
                try:
                    for ev in stream:
                        read.append(ev)
                        reading.set()
                except Exception as e:  # noqa: BLE001 (checked below)
                    errors.append(e)
            t = threading.Thread(target=reader)
            t.start()
            self.assertTrue(reading.wait(10))
            stream.cancel()
            t.join(10)
            self.assertFalse(t.is_alive())
            self.assertEqual(errors, [])
            self.assertGreater(len(read), 0)
            self.assertEqual(s.eval("state", timeout=10), 42)

    def test_stream_deadline_and_status_errors(self) -> None:
        with self.client.session() as s:
            s.exec("x = 5")
            start = time.monotonic()
            with self.assertRaises(Timeout):
                list(s.exec_stream("while True: pass", timeout=1))
            self.assertLess(time.monotonic() - start, 5)
            self.assertEqual(s.eval("x"), 5)
        with self.assertRaises(InvalidArgument):
            list(self.client.exec_stream(""))
        with self.assertRaises(SessionNotFound):
            list(self.client.attach("no-such-token").exec_stream("1"))

    def test_long_streams_keep_order_and_lose_nothing(self) -> None:
        with self.client.session() as s:
            s.exec(LONG_GEN)
            events = list(s.call_stream("__main__", "counted", [LONG_N]))
            self.assertEqual(merged(events), long_gen_events(LONG_N))
            events = list(s.exec_stream(MIXED_OUTPUT % MIXED_N))
            self.assertEqual(merged(events), mixed_output_events(MIXED_N))
            # Streams cut short after 40 items, again and again on the same
            # session: each gives exactly 1..40.
            s.exec(GEN)
            for run in range(20):
                s.exec("made = 0")
                got = []
                for value in s.call_stream("__main__", "forever").items():
                    got.append(value)
                    if len(got) == 40:
                        break
                self.assertEqual(got, list(range(1, 41)), "run %d" % run)

    def test_worker_death_mid_stream_loses_the_context(self) -> None:
        ctx = self.client.context(1)
        ctx.exec("def die():\n    yield 1\n    import os\n    os._exit(3)\n")
        token = ctx.token
        stream = ctx.call_stream("__main__", "die")
        self.assertEqual(next(stream), Item(1))
        with self.assertRaises(WorkerDied):
            next(stream)
        self.assertIsNone(ctx.token)
        self.assertEqual(ctx.eval("1 + 1"), 2)  # a fresh session
        self.assertNotEqual(ctx.token, token)

    def test_ref_round_trip_method_call_and_getattr(self) -> None:
        with self.client.session() as s:
            s.exec(MODEL)
            m = s.eval("Model()")
            self.assertIsInstance(m, Ref)
            self.assertEqual(len(m.id), 24)
            self.assertIn("Model", m.type)
            self.assertIn("Model object at", m.repr)
            # Back as a local, an argument and a keyword argument: the object itself.
            self.assertEqual(s.eval("m.predict(2)", {"m": m}), 6)
            self.assertIs(s.eval("a is b", {"a": m, "b": m}), True)
            self.assertEqual(s.call("__main__", "Model.predict", [m], {"x": 10}), 30)
            self.assertEqual(s.call("builtins", "getattr", [m, "w"]), 3)
            # Methods and attributes.
            self.assertEqual(s.call_method(m, "predict", [5], {"bias": 1}), 16)
            r = s.call_method_result(m, "predict", [1])
            self.assertEqual(r.value, 3)
            self.assertEqual(s.getattr(m, "w"), 3)
            self.assertEqual(s.getattr(m, "inner.name"), "in")
            self.assertAlmostEqual(s.getattr("math", "pi"), 3.14159, places=4)
            inner = s.getattr(m, "inner")
            self.assertIsInstance(inner, Ref)
            # result_as_ref keeps a convertible result in the session.
            big = s.eval("list(range(100000))", result_as_ref=True)
            self.assertIsInstance(big, Ref)
            self.assertEqual(big.type, "list")
            self.assertEqual(s.call("builtins", "len", [big]), 100000)
            self.assertIsInstance(s.call("builtins", "sum", [big], result_as_ref=True), Ref)
            self.assertIsInstance(s.call_method(big, "copy", result_as_ref=True), Ref)
            self.assertEqual(s.call_method(big, "index", [7]), 7)
            # A method streaming items.
            s.exec("class Counter:\n    def upto(self, n):\n        yield from range(n)\n")
            c = s.eval("Counter()")
            self.assertEqual(list(s.call_method_stream(c, "upto", [3]).items()), [0, 1, 2])
            # Release; then the ref is refused with a typed error.
            self.assertEqual(s.release(m, inner.id, "made-up"), 2)
            self.assertEqual(s.release(m), 0)
            with self.assertRaises(UnknownRef) as cm:
                s.call_method(m, "predict", [1])
            self.assertIsInstance(cm.exception, InvalidArgument)
            with self.assertRaises(UnknownRef):
                s.eval("m", {"m": m})
            with self.assertRaises(UnknownRef):
                s.getattr(m, "w")

    def test_refs_are_scoped_to_their_session_and_bounded(self) -> None:
        with self.client.session() as a, self.client.session() as b:
            ra = a.eval("object()")
            with self.assertRaises(UnknownRef):
                b.call("builtins", "id", [ra])
            with self.assertRaises(UnknownRef):
                self.client.call("builtins", "id", [ra])
            with self.assertRaises(UnknownRef):
                a.call("builtins", "id", [Ref("0" * 24)])
            self.assertEqual(b.release(ra), 0)  # another session's ref: nothing dropped
            self.assertGreater(a.call("builtins", "id", [ra]), 0)
            # Stateless calls keep opaque values and cannot ask for refs.
            self.assertIsInstance(self.client.eval("object()"), pyexec_client.Opaque)
            with self.assertRaises(InvalidArgument):
                self.client.eval("1", result_as_ref=True)
            # The ref limit: a result past it is refused whole; the session is fine.
            refs = [b.eval("object()") for _ in range(MAX_REFS)]
            with self.assertRaises(RefLimitExceeded) as cm:
                b.eval("object()")
            self.assertEqual(cm.exception.code, pyexec_client.PoolExhausted.code)
            self.assertEqual(b.eval("1 + 1"), 2)
            self.assertEqual(b.release(*refs[:2]), 2)
            self.assertIsInstance(b.eval("object()"), Ref)

    def test_interrupt_from_another_thread_keeps_state(self) -> None:
        with self.client.session() as s:
            s.exec("x = 7")
            self.assertFalse(s.interrupt())  # nothing running
            errors = []

            started = threading.Event()

            def spin() -> None:
                try:
                    s.exec(PRINT_THEN_SPIN, timeout=30, on_stdout=lambda text: started.set())
                except Exception as e:  # noqa: BLE001 (checked below)
                    errors.append(e)
            t = threading.Thread(target=spin)
            t.start()
            self.assertTrue(started.wait(10), "the call never started")
            self.assertTrue(s.interrupt())
            t.join(10)
            self.assertFalse(t.is_alive())
            self.assertEqual(len(errors), 1)
            self.assertIsInstance(errors[0], Cancelled)
            self.assertEqual(s.eval("x"), 7)
            # A stream is interrupted the same way.
            stream = s.exec_stream("import time\nwhile True:\n    print('tick')\n"
                                   "    time.sleep(0.01)")
            self.assertIsInstance(next(stream), Stdout)
            self.assertTrue(s.interrupt())
            with self.assertRaises(Cancelled):
                list(stream)
            self.assertEqual(s.eval("x"), 7)
        self.assertFalse(self.client.context(1).interrupt())  # not bound yet: nothing runs
        self.assertIsNone(self.client.context(1).token)
        self.assertFalse(s.interrupt())  # unbound handle


class AsyncStreamsRefsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def run_async(self, body) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client(self.server.address, timeout=30,
                                                num_contexts=1) as client:
                await asyncio.wait_for(body(client), 60)
        asyncio.run(main())

    def test_streams(self) -> None:
        async def body(c) -> None:
            async with c.session() as s:
                start = time.monotonic()
                stream = await s.exec_stream("print('hi')\nimport time\ntime.sleep(1)")
                first = await stream.__anext__()
                self.assertLess(time.monotonic() - start, 0.9)
                self.assertEqual(merged([first] + [ev async for ev in stream]),
                                 [Stdout("hi\n")])
                self.assertGreaterEqual(time.monotonic() - start, 1.0)
                await s.exec(GEN)
                got = []
                async with await s.call_stream("__main__", "forever") as stream:
                    async for value in stream.items():
                        got.append(value)
                        if len(got) == 3:
                            break
                self.assertEqual(got, [1, 2, 3])
                self.assertEqual(await s.eval("state", timeout=10), 42)
                # Cancelling the task that reads the stream cancels the RPC.
                stream = await s.call_stream("__main__", "forever")
                first = asyncio.Event()

                async def reader() -> None:
                    async for _ in stream:
                        first.set()
                task = asyncio.ensure_future(reader())
                await first.wait()
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                self.assertEqual(await s.eval("state", timeout=10), 42)
                # cancel() from another task ends the reader's loop quietly.
                stream = await s.call_stream("__main__", "forever")
                reading = asyncio.Event()

                async def quiet_reader() -> int:
                    n = 0
                    async for _ in stream:
                        n += 1
                        reading.set()
                    return n
                task = asyncio.ensure_future(quiet_reader())
                await reading.wait()
                stream.cancel()
                self.assertGreater(await asyncio.wait_for(task, 10), 0)
                self.assertEqual(await s.eval("state", timeout=10), 42)
                with self.assertRaises(PythonError):
                    async for _ in await s.exec_stream("raise KeyError(1)"):
                        pass
                with self.assertRaises(Timeout):
                    async for _ in await s.exec_stream("while True: pass", timeout=1):
                        pass
                self.assertEqual(await s.eval("state"), 42)
        self.run_async(body)

    def test_long_streams_keep_order_and_lose_nothing(self) -> None:
        async def body(c) -> None:
            async with c.session() as s:
                await s.exec(LONG_GEN)
                stream = await s.call_stream("__main__", "counted", [LONG_N])
                self.assertEqual(merged([ev async for ev in stream]), long_gen_events(LONG_N))
                stream = await s.exec_stream(MIXED_OUTPUT % MIXED_N)
                self.assertEqual(merged([ev async for ev in stream]),
                                 mixed_output_events(MIXED_N))
                await s.exec(GEN)
                for run in range(10):
                    await s.exec("made = 0")
                    got = []
                    async with await s.call_stream("__main__", "forever") as stream:
                        async for value in stream.items():
                            got.append(value)
                            if len(got) == 40:
                                break
                    self.assertEqual(got, list(range(1, 41)), "run %d" % run)
        self.run_async(body)

    def test_refs_and_interrupt(self) -> None:
        async def body(c) -> None:
            async with c.session() as s:
                await s.exec(MODEL + "x = 1\n")
                m = await s.eval("Model()")
                self.assertIsInstance(m, Ref)
                self.assertEqual(await s.call_method(m, "predict", [2], {"bias": 1}), 7)
                self.assertEqual(await s.getattr(m, "inner.name"), "in")
                self.assertEqual(await s.eval("m.w", {"m": m}), 3)
                self.assertIsInstance(await s.eval("[1]", result_as_ref=True), Ref)
                self.assertEqual(await s.release(m), 1)
                with self.assertRaises(UnknownRef):
                    await s.getattr(m, "w")
                # Interrupt from another task.
                started = asyncio.Event()

                async def on_stdout(text: str) -> None:
                    started.set()
                task = asyncio.ensure_future(s.exec(PRINT_THEN_SPIN, on_stdout=on_stdout))
                await asyncio.wait_for(started.wait(), 10)
                self.assertFalse(task.done(), "the call ended early")
                self.assertTrue(await s.interrupt())
                with self.assertRaises(Cancelled):
                    await task
                self.assertEqual(await s.eval("x"), 1)
                ctx = c.context(1)
                self.assertFalse(await ctx.interrupt())
                self.assertEqual(await ctx.release("0" * 24), 0)
        self.run_async(body)


if __name__ == "__main__":
    unittest.main()
