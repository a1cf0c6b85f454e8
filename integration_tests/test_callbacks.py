"""Python calling back into the client: Run, pyexec.call and erlang.call (issue 19).

The client registers functions by answering the CallbackRequests of a Run
stream (fx.Callbacks). Covered: values of every kind both ways, errors both
ways, unknown names, re-entry (Python -> client -> Run -> Python -> client)
five levels deep on a session and on a pooled worker, concurrent callers, a
client that never answers (the Python call times out and the session goes
on), Interrupt of a call that waits on a callback, answers that do not
belong to the caller, and a client that sends garbage on the stream.
"""

import os
import shutil
import tempfile
import threading
import time
import unittest
import uuid

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc

SC = grpc.StatusCode


class CallbackTest(fx.ServerTestCase):
    WORKERS = 2
    MAX_WORKERS = 6

    def callbacks(self, **functions):
        return fx.Callbacks(self.stub, functions)

    def test_values_of_every_kind_travel_both_ways(self):
        session = self.bind()
        cases = [None, True, 0, -2 ** 63, 2 ** 100, 1.5, "héllo", b"\x00\xff", [1, [2]],
                 (1, "a"), frozenset({1, 2}), {"k": [None, {"n": 1}]}]
        seen = []

        def echo(ctx, value):
            seen.append(value)
            return value

        cb = self.callbacks(echo=echo)
        for value in cases:
            with self.subTest(value=value):
                # `v` travels as a local, Python sends it to the client and
                # returns what comes back: both directions in one call.
                request = pb.EvalRequest(
                    session=session, code="(pyexec.call('echo', v), type(pyexec.call('echo', v)) is type(v))")
                request.locals["v"].CopyFrom(fx.to_value(value))
                got, same_type = self.value_of(cb.run("eval", request))
                self.assertEqual(got, value)
                self.assertEqual(type(got), type(value))
                self.assertTrue(same_type, "Python got back a %s" % type(value).__name__)
                self.assertEqual(seen[-1], value)

    def test_kwargs_and_many_callbacks_in_one_call(self):
        cb = self.callbacks(add=lambda ctx, a, b=0: a + b)
        resp = cb.eval("sum(pyexec.call('add', i, b=i) for i in range(100))")
        self.assertEqual(self.value_of(resp), sum(2 * i for i in range(100)))
        self.assertEqual(len(cb.requests_seen), 100)
        self.assertEqual(len({r.id for r in cb.requests_seen}), 100, "callback ids are unique")

    def test_erlang_call_is_an_alias(self):
        cb = self.callbacks(double=lambda ctx, x: 2 * x)
        resp = cb.eval("erlang.call('double', 21)")
        self.assertEqual(self.value_of(resp), 42)
        resp = cb.eval("__import__('erlang').call('double', 4)")
        self.assertEqual(self.value_of(resp), 8)

    def test_callbacks_from_exec_and_call(self):
        session = self.bind()
        cb = self.callbacks(name=lambda ctx: "pyexec")
        resp = cb.exec("who = pyexec.call('name')\nprint('hi', who)", session)
        self.assertFalse(resp.HasField("error"), resp.error)
        self.assertEqual(resp.stdout, "hi pyexec\n")
        self.assertEqual(self.ev("who", session), "pyexec")
        self.ex("def greet(greeting):\n    return greeting + ' ' + pyexec.call('name')", session)
        call = pb.CallRequest(session=session, module="__main__", function="greet")
        call.args.add().CopyFrom(fx.to_value("hello"))
        self.assertEqual(self.value_of(cb.run("call", call)), "hello pyexec")

    def test_an_uncaught_callback_error_is_the_calls_python_error(self):
        def boom(ctx):
            raise ValueError("no such user")

        cb = self.callbacks(boom=boom)
        resp = cb.eval("pyexec.call('boom')")
        self.assertEqual(resp.error.type, "CallbackError")
        self.assertIn("ValueError", resp.error.message)
        self.assertIn("no such user", resp.error.message)

    def test_caught_callback_error_carries_the_client_type_and_message(self):
        session = self.bind()

        def boom(ctx):
            raise KeyError("alice")

        cb = self.callbacks(boom=boom)
        resp = cb.exec(
            "try:\n"
            "    pyexec.call('boom')\n"
            "except pyexec.CallbackError as e:\n"
            "    caught = (e.type, e.message)\n", session)
        self.assertFalse(resp.HasField("error"), resp.error)
        self.assertEqual(self.ev("caught", session), ("KeyError", "'alice'"))

    def test_an_unknown_name_is_an_error_in_python(self):
        cb = self.callbacks()
        resp = cb.eval("pyexec.call('nope', 1)")
        self.assertEqual(resp.error.type, "CallbackError")
        self.assertIn("nope", resp.error.message)

    def test_python_errors_reach_the_client_unchanged(self):
        cb = self.callbacks(x=lambda ctx: 1)
        resp = cb.eval("pyexec.call('x') / 0")
        self.assertEqual(resp.error.type, "ZeroDivisionError")

    def test_without_run_pyexec_call_says_why(self):
        resp = self.eval("pyexec.call('f')")
        self.assertEqual(resp.error.type, "RuntimeError")
        self.assertIn("Run", resp.error.message)

    def test_reentry_five_levels_deep_on_a_session(self):
        session = self.bind()
        self.ex("def down(n):\n"
                "    return 0 if n == 0 else pyexec.call('down', n - 1) + 1", session)
        depths = []
        cb = None

        def down(ctx, n):
            depths.append(n)
            # The client makes a call while it runs the callback: it names
            # the callback, so it runs on the interpreter waiting for it.
            call = pb.CallRequest(session=session, module="__main__", function="down")
            call.args.add().CopyFrom(fx.to_value(n))
            return self.value_of(cb.run("call", call, metadata=ctx.metadata)) + 1

        cb = self.callbacks(down=down)
        resp = cb.eval("down(5)", session, timeout=30)
        # down(5) -> client(4) -> down(4) -> ... -> client(0) -> down(0) = 0
        self.assertEqual(self.value_of(resp), 10)
        self.assertEqual(depths, [4, 3, 2, 1, 0])
        # Every level ran in the session's one interpreter.
        self.assertEqual(self.ev("__import__('os').getpid()", session),
                         self.session_pid(session))

    def test_reentry_on_a_pooled_worker(self):
        pids = []
        cb = None

        def down(ctx, n):
            request = pb.EvalRequest(
                code="(__import__('os').getpid(), "
                     "0 if n == 0 else pyexec.call('down', n - 1)[1] + 1)")
            request.locals["n"].CopyFrom(fx.to_value(n))
            pid, depth = self.value_of(cb.run("eval", request, metadata=ctx.metadata))
            pids.append(pid)
            return (pid, depth)

        cb = self.callbacks(down=down)
        resp = cb.eval("(__import__('os').getpid(), pyexec.call('down', 4)[1] + 1)", timeout=30)
        pid, depth = self.value_of(resp)
        # down(0) is 0, each level above adds one: down(4) is 4, the top 5.
        self.assertEqual(depth, 5)
        self.assertEqual(set(pids), {pid}, "nested stateless calls run on the waiting worker")

    def test_a_call_that_names_a_foreign_or_stale_callback_runs_normally(self):
        session = self.bind()
        # An id that is not waiting: the call is an ordinary one.
        metadata = (("x-pyexec-callback", "nosuch"),)
        resp = self.stub.Eval(pb.EvalRequest(session=session, code="1+1"), timeout=10,
                              metadata=metadata)
        self.assertEqual(self.value_of(resp), 2)

    def test_concurrent_callers_each_get_their_own_answers(self):
        errors = []

        def worker(i):
            try:
                cb = self.callbacks(ident=lambda ctx, x: x)
                for j in range(20):
                    got = self.value_of(cb.eval("pyexec.call('ident', %d)" % (i * 1000 + j)))
                    if got != i * 1000 + j:
                        errors.append((i, j, got))
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

    def test_threads_of_one_call_wait_on_callbacks_at_once(self):
        # Four Python threads of one call wait in pyexec.call together and
        # the client answers them in a shuffled order, the last one before
        # the others are asked: each thread gets its own answer. (Each
        # waiting thread once read the socket itself: frames were split
        # between readers and answers lost.)
        import queue
        import random
        s = self.bind()
        self.ex("import threading\n"
                "def fan_out(n):\n"
                "    out = [None] * n\n"
                "    def one(i):\n"
                "        try:\n"
                "            out[i] = pyexec.call('f', i)\n"
                "        except Exception as e:\n"
                "            out[i] = repr(e)\n"
                "    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]\n"
                "    for t in ts: t.start()\n"
                "    for t in ts: t.join()\n"
                "    return out\n", s)
        rng = random.Random(7)
        for _ in range(20):
            outbox = queue.Queue()
            outbox.put(pb.RunRequest(eval=pb.EvalRequest(session=s, code="fan_out(4)")))

            def requests():
                while (item := outbox.get()) is not None:
                    yield item

            events = self.stub.Run(requests(), timeout=20)
            asked = []
            response = None
            for event in events:
                if event.WhichOneof("event") == "callback":
                    asked.append(event.callback)
                    if len(asked) == 4:
                        rng.shuffle(asked)
                        for cb in asked:
                            result = pb.CallbackResult(id=cb.id)
                            result.value.CopyFrom(fx.to_value(10 * fx.from_value(cb.args[0])))
                            outbox.put(pb.RunRequest(callback_result=result))
                    continue
                response = event.eval
                outbox.put(None)
            self.assertIsNotNone(response)
            self.assertEqual(self.value_of(response), [0, 10, 20, 30])

    def test_an_unanswered_callback_times_out_and_the_session_goes_on(self):
        session = self.bind()
        cb = self.callbacks()
        started = time.monotonic()
        resp = cb.exec(
            "try:\n"
            "    pyexec.call('never')\n"
            "except TimeoutError as e:\n"
            "    timed_out = str(e)\n", session, timeout=2, answer=lambda request: None)
        elapsed = time.monotonic() - started
        self.assertFalse(resp.HasField("error"), resp.error)
        self.assertLess(elapsed, 2.0)
        self.assertIn("did not answer", self.ev("timed_out", session))
        self.assertEqual(self.ev("6*7", session), 42)

    def test_an_unanswered_uncaught_callback_ends_at_the_deadline(self):
        session = self.bind()
        cb = self.callbacks()
        try:
            resp = cb.eval("pyexec.call('never')", session, timeout=1.5,
                           answer=lambda request: None)
            self.assertEqual(resp.error.type, "TimeoutError")
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.DEADLINE_EXCEEDED)
        self.assertEqual(self.ev("6*7", session), 42)

    def test_interrupt_reaches_a_call_waiting_on_its_callback(self):
        session = self.bind()
        waiting = threading.Event()

        def answer(request):
            waiting.set()
            return None  # never answered: only the Interrupt ends the call

        cb = self.callbacks()
        call_id = uuid.uuid4().hex
        result = {}

        def run():
            try:
                result["resp"] = cb.eval("pyexec.call('slow')", session, timeout=20,
                                         metadata=(("x-pyexec-call-id", call_id),),
                                         answer=answer)
            except grpc.RpcError as e:
                result["code"] = e.code()

        t = threading.Thread(target=run)
        t.start()
        self.assertTrue(waiting.wait(10))
        resp = self.stub.Interrupt(pb.InterruptRequest(session=session, call_id=call_id),
                                   timeout=5)
        self.assertTrue(resp.interrupted)
        t.join(10)
        self.assertEqual(result.get("code"), SC.CANCELLED, result)
        self.assertEqual(self.ev("6*7", session), 42)

    def test_an_answer_to_a_callback_this_run_did_not_ask_ends_it(self):
        session = self.bind()
        cb = self.callbacks()

        def wrong_id(request):
            return pb.CallbackResult(id=request.id + "x", value=fx.to_value(1))

        with self.assertRaises(grpc.RpcError) as cm:
            cb.eval("pyexec.call('f')", session, answer=wrong_id)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
        self.assertIn("did not ask", cm.exception.details())
        # The call ended with the stream: the session is free at once.
        self.assertEqual(self.ev("1+1", session, timeout=5), 2)

    def test_a_second_call_on_the_same_run_is_invalid(self):
        outbox = [pb.RunRequest(eval=pb.EvalRequest(code="pyexec.call('f')")),
                  pb.RunRequest(eval=pb.EvalRequest(code="2"))]
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.Run(iter(outbox), timeout=10))
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)

    def test_a_run_that_starts_with_a_callback_result_is_invalid(self):
        outbox = [pb.RunRequest(callback_result=pb.CallbackResult(id="x"))]
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.Run(iter(outbox), timeout=10))
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)

    def test_an_empty_run_is_invalid(self):
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.Run(iter([]), timeout=10))
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)

    def test_an_answer_deeper_than_the_value_limit_raises_in_python(self):
        # Deeper than --max_value_depth (64), well within what protobuf
        # parses: Python hears why instead of waiting.
        deep = pb.Value()
        v = deep
        for _ in range(100):
            v.list = True
            v = v.items.add()
        v.int = 1

        def too_deep(request):
            return pb.CallbackResult(id=request.id, value=deep)

        cb = self.callbacks()
        resp = cb.eval("pyexec.call('f')", answer=too_deep)
        self.assertEqual(resp.error.type, "CallbackError")
        self.assertIn("valid value", resp.error.message)

    def test_an_answer_protobuf_cannot_parse_ends_the_run(self):
        session = self.bind()
        deep = pb.Value()
        v = deep
        for _ in range(500):
            v.list = True
            v = v.items.add()
        v.int = 1

        def too_deep(request):
            return pb.CallbackResult(id=request.id, value=deep)

        cb = self.callbacks()
        with self.assertRaises(grpc.RpcError) as cm:
            cb.eval("pyexec.call('f')", session, answer=too_deep)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
        self.assertEqual(self.ev("1+1", session, timeout=5), 2)

    def test_a_client_that_hangs_up_mid_callback_frees_the_session(self):
        session = self.bind()
        self.ex("state = 'kept'", session)
        hold = threading.Event()

        def requests():
            yield pb.RunRequest(eval=pb.EvalRequest(session=session, code="pyexec.call('f')"))
            hold.wait(10)

        call = self.stub.Run(requests(), timeout=30)
        first = next(call)
        self.assertEqual(first.WhichOneof("event"), "callback")
        call.cancel()  # the client goes away while Python waits for it
        hold.set()
        started = time.monotonic()
        self.assertEqual(self.ev("state", session, timeout=10), "kept")
        # Freed by the cancel, not by the call's 30 s deadline.
        self.assertLess(time.monotonic() - started, 5)

    def test_a_client_that_dies_inside_nested_callbacks_leaves_the_session_whole(self):
        session = self.bind()
        pid = self.session_pid(session)
        self.ex("state = 'kept'", session)
        hold = threading.Event()
        streams = []

        def requests(first):
            yield first
            hold.wait(15)

        outer = self.stub.Run(requests(pb.RunRequest(eval=pb.EvalRequest(
            session=session, code="pyexec.call('outer')"))), timeout=30)
        streams.append(outer)
        asked = next(outer)
        self.assertEqual(asked.WhichOneof("event"), "callback")
        inner = self.stub.Run(requests(pb.RunRequest(eval=pb.EvalRequest(
            session=session, code="pyexec.call('inner')"))), timeout=30,
            metadata=(("x-pyexec-callback", asked.callback.id),))
        streams.append(inner)
        self.assertEqual(next(inner).callback.name, "inner")
        # The client dies: both streams go at once.
        for stream in streams:
            stream.cancel()
        hold.set()
        started = time.monotonic()
        self.assertEqual(self.ev("state", session, timeout=10), "kept")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(self.session_pid(session), pid, "the worker was killed")

    def test_another_principals_token_is_not_found_on_run(self):
        cb = self.callbacks()
        with self.assertRaises(grpc.RpcError) as cm:
            cb.eval("1", session="0123456789abcdef0123456789abcdef")
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)


class CallbackAuthTest(fx.ServerTestCase):
    """Answers and nested calls name callbacks; a principal cannot touch
    another's."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_cb_auth_")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("alice alice-secret\nbob bob-secret\n")
        fx.give_to_server(cls.dir)
        cls.SERVER_FLAGS = ("--auth_tokens_file=" + tokens,)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, True)

    def test_bob_cannot_answer_or_nest_into_alices_callback(self):
        alice = (("authorization", "Bearer alice-secret"),)
        bob = (("authorization", "Bearer bob-secret"),)
        seen = {}

        def alice_answers(request):
            # Bob answers alice's callback on a Run of his own: refused, and
            # his Run ends.
            bob_cb = fx.Callbacks(self.stub, {})
            try:
                bob_cb.eval("pyexec.call('g')", metadata=bob, answer=lambda own: pb.CallbackResult(
                    id=request.id, value=fx.to_value("bob's")))
            except grpc.RpcError as e:
                seen["bob_answer"] = e.code()
            # Bob names it on a call: the call runs as an ordinary one of
            # his (stateless), not nested into alice's waiting interpreter.
            resp = self.stub.Eval(pb.EvalRequest(code="__import__('os').getpid()"), timeout=5,
                                  metadata=bob + (("x-pyexec-callback", request.id),))
            seen["bob_pid"] = fx.from_value(resp.value)
            return pb.CallbackResult(id=request.id, value=fx.to_value("alice's"))

        cb = fx.Callbacks(self.stub, {})
        resp = cb.eval("(pyexec.call('f'), __import__('os').getpid())", metadata=alice,
                       answer=alice_answers)
        value, pid = fx.from_value(resp.value)
        self.assertEqual(value, "alice's")
        self.assertEqual(seen.get("bob_answer"), SC.INVALID_ARGUMENT)
        self.assertNotEqual(seen["bob_pid"], pid)


if __name__ == "__main__":
    unittest.main()
