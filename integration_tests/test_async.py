"""Async Python and what CallStream iterates (issue 19).

Each interpreter keeps one asyncio event loop across calls. Eval and Exec
accept top-level await; a result that is awaitable (a coroutine, a task, a
future) is awaited on the loop within the call's deadline, and Interrupt or
the deadline cancels it. CallStream iterates iterators, generators, async
generators and other iterables (range, list, tuple, set) and sends str,
bytes and mappings as one value.
"""

import threading
import time
import unittest
import uuid

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc

SC = grpc.StatusCode


class AsyncTest(fx.ServerTestCase):
    WORKERS = 2
    MAX_WORKERS = 4

    def test_top_level_await_in_eval_and_exec(self):
        session = self.bind()
        self.assertEqual(self.ev("await __import__('asyncio').sleep(0, 'slept')", session),
                         "slept")
        resp = self.ex("import asyncio\nx = await asyncio.sleep(0, 41)\nprint(x + 1)", session)
        self.assertEqual(resp.stdout, "42\n")

    def test_gathered_coroutines_run_concurrently_on_the_loop(self):
        session = self.bind()
        self.ex("import asyncio\n"
                "async def nap(i):\n"
                "    await asyncio.sleep(1)\n"
                "    return i\n", session)
        started = time.monotonic()
        got = self.ev("await asyncio.gather(nap(1), nap(2), nap(3))", session)
        took = time.monotonic() - started
        self.assertEqual(got, [1, 2, 3])
        # Three one-second sleeps: together, not one after the other.
        self.assertLess(took, 2.5)

    def test_the_loop_lives_across_calls(self):
        session = self.bind()
        self.ex("import asyncio\n"
                "loop_id = id(asyncio.get_event_loop())\n"
                "task = asyncio.ensure_future(asyncio.sleep(0.2, 'done'))\n", session)
        self.assertEqual(self.ev("id(asyncio.get_event_loop()) == loop_id", session), True)
        self.assertEqual(self.ev("await task", session), "done")

    def test_a_call_whose_result_is_a_coroutine_is_awaited(self):
        resp = self.call("asyncio", "sleep", args=(0.01, "woke"))
        self.assertEqual(self.value_of(resp), "woke")
        session = self.bind()
        self.ex("async def add(a, b):\n    return a + b", session)
        self.assertEqual(self.value_of(self.call("__main__", "add", args=(2, 3),
                                                 session=session)), 5)
        # An Eval whose value is a coroutine object is awaited too.
        self.assertEqual(self.ev("add(20, 22)", session), 42)

    def test_the_deadline_cancels_an_await_and_the_session_goes_on(self):
        session = self.bind()
        self.ex("import asyncio\n"
                "cleaned = []\n"
                "async def wait():\n"
                "    try:\n"
                "        await asyncio.sleep(30)\n"
                "    finally:\n"
                "        cleaned.append(True)\n", session)
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.eval, "await wait()", session,
                            timeout=1)
        self.assertEqual(self.ev("cleaned", session, timeout=10), [True])
        self.assertEqual(self.ev("await asyncio.sleep(0, 'loop ok')", session), "loop ok")

    def test_interrupt_cancels_an_await(self):
        session = self.bind()
        self.ex("import asyncio", session)
        marker = self.marker()
        call_id = uuid.uuid4().hex
        result = {}

        def run():
            try:
                self.stub.Exec(
                    pb.ExecRequest(session=session,
                                   code=self.touch_code(marker) + "await asyncio.sleep(30)"),
                    timeout=20, metadata=(("x-pyexec-call-id", call_id),))
            except grpc.RpcError as e:
                result["code"] = e.code()

        t = threading.Thread(target=run)
        t.start()
        self.wait_file(marker)
        self.assertTrue(self.stub.Interrupt(pb.InterruptRequest(session=session, call_id=call_id),
                                            timeout=5).interrupted)
        t.join(10)
        self.assertEqual(result.get("code"), SC.CANCELLED)
        self.assertEqual(self.ev("await asyncio.sleep(0, 1)", session), 1)


class StreamRuleTest(fx.ServerTestCase):
    """What CallStream iterates and what it sends as one value."""

    def stream(self, module, function, args=(), session=""):
        req = pb.CallRequest(session=session, module=module, function=function)
        req.args.extend(fx.to_value(a) for a in args)
        values, end = [], None
        for event in self.stub.CallStream(req, timeout=10):
            kind = event.WhichOneof("event")
            if kind == "value":
                values.append(fx.from_value(event.value))
            elif kind == "end":
                end = event.end
        self.assertIsNotNone(end, "the stream has no end event")
        self.assertFalse(end.HasField("error"), end.error)
        return values

    def test_iterables_are_iterated(self):
        self.assertEqual(self.stream("builtins", "range", (5,)), [0, 1, 2, 3, 4])
        self.assertEqual(self.stream("builtins", "list", ("abc",)), ["a", "b", "c"])
        self.assertEqual(self.stream("builtins", "tuple", ([1, 2],)), [1, 2])
        self.assertEqual(sorted(self.stream("builtins", "set", ([3, 1, 2],))), [1, 2, 3])
        self.assertEqual(self.stream("builtins", "iter", ([7, 8],)), [7, 8])
        self.assertEqual(self.stream("builtins", "reversed", ([1, 2],)), [2, 1])

    def test_generators_and_async_generators_are_iterated(self):
        session = self.bind()
        self.ex("import asyncio\n"
                "def gen(n):\n"
                "    yield from range(n)\n"
                "async def agen(n):\n"
                "    for i in range(n):\n"
                "        await asyncio.sleep(0)\n"
                "        yield i * 10\n"
                "async def coro_list():\n"
                "    return [1, 2]\n", session)
        self.assertEqual(self.stream("__main__", "gen", (3,), session), [0, 1, 2])
        self.assertEqual(self.stream("__main__", "agen", (3,), session), [0, 10, 20])
        # A coroutine is awaited first; its list is then iterated.
        self.assertEqual(self.stream("__main__", "coro_list", (), session), [1, 2])

    def test_str_bytes_and_mappings_are_one_value(self):
        self.assertEqual(self.stream("builtins", "str", ("abc",)), ["abc"])
        self.assertEqual(self.stream("builtins", "bytes", (b"ab",)), [b"ab"])
        self.assertEqual(self.stream("builtins", "dict", ()), [{}])
        self.assertEqual(self.stream("builtins", "int", (4,)), [4])


if __name__ == "__main__":
    unittest.main()
