"""Streams, object references and Interrupt against the real pyexecd (issue 10)."""

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc, Opaque, Ref

from grpcstd.reflection.v1 import reflection_pb2 as refl, reflection_pb2_grpc as refl_grpc
from google.protobuf import descriptor_pb2

SC = grpc.StatusCode


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class Base(fx.ServerTestCase):
    def call_req(self, module="", function="", args=(), kwargs=None, session="", **fields):
        req = pb.CallRequest(session=session, module=module, function=function, **fields)
        req.args.extend(fx.to_value(a) for a in args)
        for k, v in (kwargs or {}).items():
            req.kwargs[k].CopyFrom(fx.to_value(v))
        return req

    def ref_of(self, code, session, **fields):
        resp = self.stub.Eval(pb.EvalRequest(session=session, code=code, **fields), timeout=10)
        got = self.value_of(resp)
        self.assertIsInstance(got, Ref)
        return got

    def release(self, session, *ids):
        return self.stub.Release(pb.ReleaseRequest(session=session, ref_ids=list(ids)),
                                 timeout=10).released

    @staticmethod
    def collect(stream):
        """All events of a stream as (kind, payload) pairs."""
        out = []
        for ev in stream:
            kind = ev.WhichOneof("event")
            if kind == "value":
                out.append(("value", fx.from_value(ev.value)))
            elif kind == "end":
                out.append(("end", ev.end.error if ev.end.HasField("error") else None))
            else:
                out.append((kind, getattr(ev, kind)))
        return out


class StreamTest(Base):
    WORKERS = 2
    MAX_WORKERS = 4

    def test_output_arrives_before_the_call_ends(self):
        s = self.bind()
        for code, first in (("print('hi')\nimport time\ntime.sleep(1)", "hi\n"),
                            # No line end: the 50 ms flush sends it.
                            ("import sys, time\nsys.stdout.write('partial')\ntime.sleep(1)",
                             "partial")):
            start = time.monotonic()
            stream = self.stub.ExecStream(pb.ExecRequest(session=s, code=code), timeout=10)
            ev = next(stream)
            first_at = time.monotonic() - start
            self.assertEqual(ev.WhichOneof("event"), "stdout")
            self.assertEqual(ev.stdout, first)
            self.assertLess(first_at, 0.9, "the first chunk came only after the call ended")
            rest = self.collect(stream)
            self.assertGreaterEqual(time.monotonic() - start, 1.0)
            self.assertEqual(rest, [("end", None)])

    def test_stdout_and_stderr_keep_their_order_and_errors_end_the_stream(self):
        code = ("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n"
                "raise ValueError('bad')")
        events = self.collect(self.stub.ExecStream(pb.ExecRequest(code=code), timeout=10))
        self.assertEqual(events[:3], [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")])
        self.assertEqual(events[3][0], "end")
        self.assertEqual(events[3][1].type, "ValueError")
        self.assertEqual(len(events), 4)

    def test_generator_items_interleave_with_output(self):
        s = self.bind()
        self.ex("def gen(n):\n    for i in range(n):\n        print('making', i)\n"
                "        yield i * i\n    raise KeyError('done')\n", s)
        events = self.collect(self.stub.CallStream(
            self.call_req("__main__", "gen", [3], session=s), timeout=10))
        self.assertEqual(events[:6], [("stdout", "making 0\n"), ("value", 0),
                                      ("stdout", "making 1\n"), ("value", 1),
                                      ("stdout", "making 2\n"), ("value", 4)])
        self.assertEqual(events[6][0], "end")
        self.assertEqual(events[6][1].type, "KeyError")
        # Iterables are iterated (a list too), anything else is one value;
        # stateless works too.
        events = self.collect(self.stub.CallStream(
            self.call_req("builtins", "sorted", [[3, 1, 2]]), timeout=10))
        self.assertEqual(events, [("value", 1), ("value", 2), ("value", 3), ("end", None)])
        events = self.collect(self.stub.CallStream(
            self.call_req("builtins", "sum", [[3, 1, 2]]), timeout=10))
        self.assertEqual(events, [("value", 6), ("end", None)])
        events = self.collect(self.stub.CallStream(
            self.call_req("builtins", "iter", [[1, 2]]), timeout=10))
        self.assertEqual(events, [("value", 1), ("value", 2), ("end", None)])

    def test_stream_service_errors_are_statuses(self):
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.ExecStream(pb.ExecRequest(session="no-such-token", code="1"),
                                      timeout=10))
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.ExecStream(pb.ExecRequest(code=""), timeout=10))
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
        s = self.bind()
        self.ex("x = 5", s)
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.ExecStream(pb.ExecRequest(session=s, code="while True: pass"),
                                      timeout=1))
        self.assertEqual(cm.exception.code(), SC.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(self.ev("x", s), 5)

    def test_generator_of_10000_items_under_backpressure_keeps_memory_flat(self):
        s = self.bind()
        progress = os.path.join(self.session_home(s), "progress")
        self.ex("def gen(n, path):\n"
                "    for i in range(n):\n"
                "        if i % 100 == 0:\n"
                "            with open(path, 'w') as f: f.write(str(i))\n"
                "        yield 'x' * 4096\n", s)
        pid = self.server.pid
        before = rss_kib(pid)
        stream = self.stub.CallStream(
            self.call_req("__main__", "gen", [10000, progress], session=s), timeout=120)
        for _ in range(10):
            self.assertEqual(next(stream).WhichOneof("event"), "value")
        # A slow reader: without backpressure the worker would finish the
        # 40 MiB generator in this pause and the server would buffer it.
        time.sleep(1.5)
        with open(progress) as f:
            made = int(f.read())
        self.assertLess(made, 5000, "the generator was not paused by the slow reader")
        paused_rss = rss_kib(pid)
        count, peak = 10, paused_rss
        for ev in stream:
            kind = ev.WhichOneof("event")
            if kind == "value":
                self.assertEqual(len(ev.value.str), 4096)
                count += 1
                if count % 1000 == 0:
                    peak = max(peak, rss_kib(pid))
                    time.sleep(0.05)
            else:
                self.assertEqual(kind, "end")
                self.assertFalse(ev.end.HasField("error"))
        self.assertEqual(count, 10000)
        print("\n[backpressure] pyexecd RSS KiB: before %d, paused %d, peak %d; "
              "generator paused at item %d of 10000" % (before, paused_rss, peak, made))
        self.assertLess(paused_rss - before, 16 * 1024)
        self.assertLess(peak - before, 16 * 1024)

    def test_events_keep_their_order_across_backpressure_pauses(self):
        # A stream read slower than the worker writes pauses and resumes many
        # times; every resume must deliver the buffered events before later
        # ones. (Resuming used to decode on the gRPC thread that acknowledged
        # an event, racing the I/O thread: about 1 run in 3 came out of order.)
        gen = ("def forever():\n    n = 0\n    while True:\n        n += 1\n"
               "        yield n\n")
        bad = []
        for run in range(30):
            s = self.bind()
            self.ex(gen, s)
            stream = self.stub.CallStream(self.call_req("__main__", "forever", session=s),
                                          timeout=30)
            got = [fx.from_value(next(stream).value) for _ in range(40)]
            stream.cancel()
            if got != list(range(1, 41)):
                bad.append((run, got))
            self.unbind_quietly(s)
        self.assertEqual(bad, [])

    def test_cancelled_streams_never_lose_their_session(self):
        # The interrupt that a cancel sends may land while the worker's
        # output streamer holds its lock; it must still stop the call, not
        # leave the worker deadlocked until --kill_grace kills it (seen in
        # about 1 cancel in 25 before the runner deferred it).
        gen = ("def forever():\n    n = 0\n    while True:\n        n += 1\n"
               "        yield n\n")
        lost = []
        for run in range(100):
            s = self.bind()
            self.ex(gen, s)
            stream = self.stub.CallStream(self.call_req("__main__", "forever", session=s),
                                          timeout=30)
            for _ in range(40):
                next(stream)
            stream.cancel()
            try:
                self.assertEqual(self.ev("1 + 1", s), 2)
            except (grpc.RpcError, AssertionError) as e:
                lost.append((run, str(e)[:200]))
            self.unbind_quietly(s)
        self.assertEqual(lost, [])

    def test_cancelling_a_stream_interrupts_python_and_keeps_state(self):
        s = self.bind()
        pid = self.session_pid(s)
        self.ex("state = 42\nmade = 0\n"
                "def gen():\n    global made\n    while True:\n        made += 1\n"
                "        yield made\n", s)
        stream = self.stub.CallStream(self.call_req("__main__", "gen", session=s), timeout=30)
        got = [fx.from_value(next(stream).value) for _ in range(5)]
        self.assertEqual(got, [1, 2, 3, 4, 5])
        stream.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in stream:
                pass
        self.assertEqual(cm.exception.code(), SC.CANCELLED)
        self.assertEqual(self.ev("state", s), 42)
        self.assertGreaterEqual(self.ev("made", s), 5)
        self.assertEqual(self.session_pid(s), pid)

    def test_worker_death_ends_the_stream_aborted_and_the_session_and_its_refs_are_gone(self):
        s = self.bind()
        ref = self.ref_of("object()", s)
        self.ex("def gen():\n    yield 1\n    import os, time\n    time.sleep(0.2)\n"
                "    os._exit(3)\n", s)
        stream = self.stub.CallStream(self.call_req("__main__", "gen", session=s), timeout=10)
        self.assertEqual(fx.from_value(next(stream).value), 1)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in stream:
                pass
        self.assertEqual(cm.exception.code(), SC.ABORTED)
        self.assertRpcError(SC.NOT_FOUND, self.eval, "1", s)
        self.assertRpcError(SC.NOT_FOUND, self.release, s, ref.id)
        self.assertRpcError(SC.NOT_FOUND, self.stub.Interrupt,
                            pb.InterruptRequest(session=s), timeout=5)
        # The dead session's ref means nothing anywhere else.
        other = self.bind()
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "id", [ref],
                            session=other)
        # A stream killed from outside, mid-output, ends the same way.
        s2 = self.bind()
        wpid = self.session_pid(s2)
        stream = self.stub.ExecStream(pb.ExecRequest(
            session=s2, code="import time\nwhile True:\n    print('tick')\n    time.sleep(0.01)"),
            timeout=10)
        self.assertEqual(next(stream).stdout, "tick\n")
        os.kill(wpid, signal.SIGKILL)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in stream:
                pass
        self.assertEqual(cm.exception.code(), SC.ABORTED)

    def test_reflection_lists_the_new_rpcs(self):
        stub = refl_grpc.ServerReflectionStub(self.server.channel)
        resp = next(stub.ServerReflectionInfo(iter([refl.ServerReflectionRequest(
            file_containing_symbol="pyexec.v1.PyExec")]), timeout=10))
        methods = set()
        for raw in resp.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for svc in fd.service:
                if svc.name == "PyExec":
                    methods |= {(m.name, m.server_streaming) for m in svc.method}
        for m in (("ExecStream", True), ("CallStream", True), ("Release", False),
                  ("Interrupt", False)):
            self.assertIn(m, methods)


class RefTest(Base):
    WORKERS = 2
    MAX_WORKERS = 4

    def test_ref_round_trip_method_call_and_attribute_read(self):
        s = self.bind()
        self.ex("class Model:\n    def __init__(self):\n        self.w = 3\n"
                "        self.inner = type('Inner', (), {'name': 'in'})()\n"
                "    def predict(self, x, bias=0):\n        return x * self.w + bias\n", s)
        m = self.ref_of("Model()", s)
        self.assertEqual(len(m.id), 24)
        self.assertIn(m.type, ("__main__.Model", "Model"))
        self.assertIn("Model object at", m.repr)
        # A method call on the ref, with args and kwargs.
        resp = self.stub.Call(self.call_req(function="predict", args=[5], kwargs={"bias": 1},
                                            session=s, target_ref=m.id), timeout=10)
        self.assertEqual(self.value_of(resp), 16)
        # Attribute reads, plain and dotted.
        resp = self.stub.Call(self.call_req(function="w", session=s, target_ref=m.id,
                                            get_attribute=True), timeout=10)
        self.assertEqual(self.value_of(resp), 3)
        resp = self.stub.Call(self.call_req(function="inner.name", session=s,
                                            target_ref=m.id, get_attribute=True), timeout=10)
        self.assertEqual(self.value_of(resp), "in")
        # A module attribute read needs no ref.
        resp = self.stub.Call(self.call_req("math", "pi", session=s, get_attribute=True),
                              timeout=10)
        self.assertAlmostEqual(self.value_of(resp), 3.14159, places=4)
        # The ref as an argument, a keyword argument and a local is the object.
        self.assertEqual(self.ev("m.predict(2)", s, locals={"m": m}), 6)
        self.assertEqual(self.value_of(self.call("builtins", "getattr", [m, "w"], session=s)), 3)
        self.assertEqual(self.value_of(self.call("__main__", "Model.predict", [m],
                                                 {"x": 10}, session=s)), 30)
        self.assertEqual(self.ev("m is n", s, locals={"m": m, "n": m}), True)
        # Nested: an unconvertible object inside a container is a ref too.
        got = self.ev("[1, Model()]", s)
        self.assertEqual(got[0], 1)
        self.assertIsInstance(got[1], Ref)
        # result_as_ref for a convertible result (a big list stays in Python).
        big = self.ref_of("list(range(100000))", s, result_as_ref=True)
        self.assertEqual(big.type, "list")
        self.assertEqual(self.value_of(self.call("builtins", "len", [big], session=s)), 100000)
        resp = self.stub.Call(self.call_req("builtins", "sum", [big], session=s,
                                            result_as_ref=True), timeout=10)
        self.assertIsInstance(fx.from_value(resp.value), Ref)
        # Stateless calls keep opaque values and cannot ask for refs.
        self.assertIsInstance(self.ev("object()"), Opaque)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Eval,
                            pb.EvalRequest(code="1", result_as_ref=True), timeout=10)

    def test_refs_are_scoped_to_their_session_and_die_on_release(self):
        a, b = self.bind(), self.bind()
        ra = self.ref_of("object()", a)
        for session in (b, ""):
            self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "id", [ra],
                                session=session)
        e = self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Call,
                                self.call_req(function="__class__", session=b,
                                              target_ref=ra.id, get_attribute=True),
                                timeout=10)
        self.assertIn("unknown ref", e.details())
        self.assertRpcError(SC.INVALID_ARGUMENT, self.eval, "x", b, {"x": ra})
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "id",
                            [Ref("0" * 24, "", "")], session=a)
        # Releasing in the wrong session drops nothing.
        self.assertEqual(self.release(b, ra.id), 0)
        self.assertEqual(self.value_of(self.call("builtins", "id", [ra], session=a)) > 0, True)
        self.assertEqual(self.release(a, ra.id, "made-up"), 1)
        self.assertEqual(self.release(a, ra.id), 0)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.call, "builtins", "id", [ra], session=a)
        # Release of an unknown session, or with none.
        self.assertRpcError(SC.NOT_FOUND, self.release, "no-such-token", ra.id)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.release, "", ra.id)
        # target_ref with a module is malformed.
        self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Call,
                            self.call_req("builtins", "x", session=a, target_ref=ra.id),
                            timeout=10)

    def test_release_frees_the_object(self):
        s = self.bind()
        self.ex("import weakref\nclass T: pass\nt = T()\nw = weakref.ref(t)", s)
        r = self.ref_of("t", s)
        self.ex("del t", s)
        self.assertTrue(self.ev("w() is not None", s))
        self.assertEqual(self.release(s, r.id), 1)
        self.assertTrue(self.ev("w() is None", s))


class RefLimitTest(Base):
    SERVER_FLAGS = ("--max_refs_per_session=3",)

    def test_ref_limit(self):
        s = self.bind()
        refs = [self.ref_of("object()", s) for _ in range(2)]
        # Two more would pass the limit: refused whole, nothing half made.
        e = self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.eval, "[object(), object()]", s)
        self.assertIn("max_refs_per_session", e.details())
        refs.append(self.ref_of("object()", s))
        self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.eval, "object()", s)
        self.assertEqual(self.ev("1 + 1", s), 2)  # the session is fine
        self.assertEqual(self.release(s, refs[0].id), 1)
        self.ref_of("object()", s)
        # Each session has its own budget.
        self.ref_of("object()", self.bind())


class InterruptTest(Base):
    def test_interrupt_of_a_busy_loop_keeps_state(self):
        s = self.bind()
        pid = self.session_pid(s)
        self.ex("state = 'kept'", s)
        self.assertFalse(self.stub.Interrupt(pb.InterruptRequest(session=s),
                                             timeout=5).interrupted)
        started = self.marker()
        fut = self.stub.Exec.future(pb.ExecRequest(
            session=s, code=self.touch_code(started) + "while True: pass"), timeout=30)
        self.wait_file(started)
        start = time.monotonic()
        self.assertTrue(self.stub.Interrupt(pb.InterruptRequest(session=s),
                                            timeout=5).interrupted)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result()
        self.assertEqual(cm.exception.code(), SC.CANCELLED)
        self.assertIn("Interrupt", cm.exception.details())
        self.assertLess(time.monotonic() - start, 2)
        self.assertEqual(self.ev("state", s), "kept")
        self.assertEqual(self.session_pid(s), pid)

    def test_an_interrupt_sent_right_after_its_call_is_never_lost(self):
        """The README's pattern: send a call, then at once an Interrupt for it.
        The two race (separate HTTP/2 streams); the call's id in metadata lets
        an Interrupt that arrives first wait for it. 1000 rounds, 0 lost."""
        s = self.bind()
        self.ex("rounds = 0", s)
        lost = []
        started = time.monotonic()
        for i in range(1000):
            call_id = "race-%d" % i
            fut = self.stub.Exec.future(
                pb.ExecRequest(session=s, code="rounds += 1\nwhile True: pass"), timeout=20,
                metadata=(("x-pyexec-call-id", call_id),))
            resp = self.stub.Interrupt(pb.InterruptRequest(session=s, call_id=call_id), timeout=5)
            try:
                fut.result(timeout=20)
                lost.append((i, "ran to its end"))
            except grpc.RpcError as e:
                if e.code() != SC.CANCELLED:
                    lost.append((i, e.code()))
            if not resp.interrupted:
                lost.append((i, "interrupted=false"))
        took = time.monotonic() - started
        print("\ninterrupt race: 1000 rounds, %d lost, %.1f ms per round"
              % (len(lost), took * 1e3 / 1000), file=sys.stderr)
        self.assertEqual(lost, [])
        # Some calls never ran (their Interrupt came first), the rest ran.
        self.assertLessEqual(self.ev("rounds", s), 1000)

    def test_an_interrupt_for_an_ended_call_says_false(self):
        s = self.bind()
        self.stub.Exec(pb.ExecRequest(session=s, code="x = 1"), timeout=5,
                       metadata=(("x-pyexec-call-id", "done-1"),))
        self.assertFalse(self.stub.Interrupt(
            pb.InterruptRequest(session=s, call_id="done-1"), timeout=5).interrupted)
        # The next call is not touched by it.
        self.assertEqual(self.ev("x", s), 1)

    def test_an_unnamed_interrupt_reaches_a_call_still_queued(self):
        """interrupted=true means a call was running or waiting, and that
        call ends CANCELLED."""
        s = self.bind()
        started = self.marker()
        first = self.stub.Exec.future(pb.ExecRequest(
            session=s, code=self.touch_code(started) + "import time\ntime.sleep(1)"), timeout=30)
        self.wait_file(started)
        second = self.stub.Exec.future(pb.ExecRequest(session=s, code="while True: pass"),
                                       timeout=30)
        # Interrupts the running one; once it has ended, the second (queued,
        # then running) is interrupted by the second Interrupt.
        self.assertTrue(self.stub.Interrupt(pb.InterruptRequest(session=s), timeout=5).interrupted)
        self.assertEqual(self._code_of(first), SC.CANCELLED)
        self.assertTrue(self.stub.Interrupt(pb.InterruptRequest(session=s), timeout=5).interrupted)
        self.assertEqual(self._code_of(second), SC.CANCELLED)

    @staticmethod
    def _code_of(fut):
        try:
            fut.result(timeout=20)
            return SC.OK
        except grpc.RpcError as e:
            return e.code()

    def test_interrupt_of_a_stream_and_unknown_sessions(self):
        s = self.bind()
        self.ex("n = 0", s)
        stream = self.stub.ExecStream(pb.ExecRequest(
            session=s, code="while True:\n    n += 1\n    if n == 1: print('go', flush=True)"),
            timeout=30)
        self.assertEqual(next(stream).stdout, "go\n")
        self.assertTrue(self.stub.Interrupt(pb.InterruptRequest(session=s),
                                            timeout=5).interrupted)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in stream:
                pass
        self.assertEqual(cm.exception.code(), SC.CANCELLED)
        self.assertGreater(self.ev("n", s), 0)
        self.assertRpcError(SC.NOT_FOUND, self.stub.Interrupt,
                            pb.InterruptRequest(session="no-such-token"), timeout=5)


class StreamDrainTest(Base):
    PER_TEST_SERVER = True

    def test_a_stream_in_flight_finishes_during_drain(self):
        s = self.bind(cleanup=False)
        stream = self.stub.ExecStream(pb.ExecRequest(
            session=s, code="import time\nprint('first', flush=True)\ntime.sleep(2)\n"
                            "print('last')"), timeout=30)
        self.assertEqual(next(stream).stdout, "first\n")
        self.server.signal(signal.SIGTERM)
        fx.wait_until(lambda: self.server.health_status("", timeout=1.0) in (
            fx.NOT_SERVING, SC.UNAVAILABLE), 5.0, interval=0.01, what="health NOT_SERVING")
        # New streams are refused while this one runs on.
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.ExecStream(pb.ExecRequest(code="1"), timeout=5))
        self.assertEqual(cm.exception.code(), SC.UNAVAILABLE)
        self.assertEqual(self.collect(stream), [("stdout", "last\n"), ("end", None)])
        self.assertEqual(self.server.wait_exit(20.0), 0)


class OwnershipTest(Base):
    """With --auth_tokens_file: the new RPCs apply session ownership exactly
    like Eval (another principal's session is NOT_FOUND), and a ref is
    useless outside its session even to an authenticated caller."""

    TOKENS = {"alice": "tok-alice-streams-0123", "bob": "tok-bob-streams-01234"}

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_refs_auth_")
        path = os.path.join(cls.dir, "tokens")
        with open(path, "w") as f:
            for principal, token in cls.TOKENS.items():
                f.write("%s %s\n" % (principal, token))
        cls.SERVER_FLAGS = ("--auth_tokens_file=" + path,)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, True)

    def md(self, who):
        return (("authorization", "Bearer " + self.TOKENS[who]),)

    def test_streams_release_and_interrupt_respect_ownership(self):
        a, b = self.md("alice"), self.md("bob")
        s = self.stub.Bind(pb.BindRequest(), metadata=a, timeout=10).session
        self.addCleanup(lambda: self.stub.Unbind(pb.UnbindRequest(session=s), metadata=a,
                                                 timeout=10))
        ref = fx.from_value(self.stub.Eval(pb.EvalRequest(session=s, code="object()"),
                                           metadata=a, timeout=10).value)
        self.assertIsInstance(ref, Ref)
        for md, code in ((b, SC.NOT_FOUND), ((), SC.UNAUTHENTICATED)):
            for call in (
                    lambda: list(self.stub.ExecStream(pb.ExecRequest(session=s, code="1"),
                                                      metadata=md, timeout=10)),
                    lambda: list(self.stub.CallStream(
                        self.call_req("builtins", "id", [ref], session=s), metadata=md,
                        timeout=10)),
                    lambda: self.stub.Release(pb.ReleaseRequest(session=s, ref_ids=[ref.id]),
                                              metadata=md, timeout=10),
                    lambda: self.stub.Interrupt(pb.InterruptRequest(session=s), metadata=md,
                                                timeout=10)):
                self.assertRpcError(code, call)
        # Bob's own session does not reach alice's object.
        sb = self.stub.Bind(pb.BindRequest(), metadata=b, timeout=10).session
        self.addCleanup(lambda: self.stub.Unbind(pb.UnbindRequest(session=sb), metadata=b,
                                                 timeout=10))
        self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Call,
                            self.call_req("builtins", "id", [ref], session=sb), metadata=b,
                            timeout=10)
        # Alice still has it.
        self.assertEqual(self.stub.Release(pb.ReleaseRequest(session=s, ref_ids=[ref.id]),
                                           metadata=a, timeout=10).released, 1)
        events = self.collect(self.stub.ExecStream(pb.ExecRequest(session=s, code="print(1)"),
                                                   metadata=a, timeout=10))
        self.assertEqual(events, [("stdout", "1\n"), ("end", None)])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForwardedTest(Base):
    """Two replicas (--peers): streams, refs, Release and Interrupt on a
    session owned by replica A work through replica B."""

    @classmethod
    def setUpClass(cls):
        unittest.TestCase.setUpClass()
        ports = [free_port(), free_port()]
        peers = "--peers=" + ",".join("127.0.0.1:%d" % p for p in ports)
        cls.replicas = []
        for p in ports:
            r = fx.Server("--listen=127.0.0.1:%d" % p, peers, workers=1, max_workers=3)
            cls.replicas.append(r)
            try:
                r.start()
            except BaseException:
                for x in cls.replicas:
                    x.cleanup()
                    x.remove_log()
                raise
        cls.server = cls.replicas[0]

    @classmethod
    def tearDownClass(cls):
        for r in cls.replicas:
            r.cleanup()
            r.remove_log()
        cls.server = None

    def test_streams_refs_release_and_interrupt_are_forwarded(self):
        a, b = self.replicas[0].stub, self.replicas[1].stub
        s = a.Bind(pb.BindRequest(), timeout=10).session
        self.addCleanup(self.unbind_quietly, s)
        a.Exec(pb.ExecRequest(session=s, code="def gen(n):\n    for i in range(n):\n"
                              "        print('at', i)\n        yield i\n"
                              "class M:\n    k = 7\n    def twice(self, x):\n"
                              "        return 2 * x\n"), timeout=10)
        events = self.collect(b.ExecStream(pb.ExecRequest(session=s, code="print('via b')"),
                                           timeout=10))
        self.assertEqual(events, [("stdout", "via b\n"), ("end", None)])
        events = self.collect(b.CallStream(self.call_req("__main__", "gen", [2], session=s),
                                           timeout=10))
        self.assertEqual(events, [("stdout", "at 0\n"), ("value", 0), ("stdout", "at 1\n"),
                                  ("value", 1), ("end", None)])
        m = fx.from_value(b.Eval(pb.EvalRequest(session=s, code="M()"), timeout=10).value)
        self.assertIsInstance(m, Ref)
        resp = b.Call(self.call_req(function="twice", args=[4], session=s, target_ref=m.id),
                      timeout=10)
        self.assertEqual(fx.from_value(resp.value), 8)
        resp = a.Call(self.call_req(function="k", session=s, target_ref=m.id,
                                    get_attribute=True), timeout=10)
        self.assertEqual(fx.from_value(resp.value), 7)
        self.assertEqual(b.Release(pb.ReleaseRequest(session=s, ref_ids=[m.id]),
                                   timeout=10).released, 1)
        # Interrupt through B of a loop started through A.
        started = self.marker()
        fut = a.Exec.future(pb.ExecRequest(
            session=s, code=self.touch_code(started) + "x = 1\nwhile True: pass"), timeout=30)
        self.wait_file(started)
        self.assertTrue(b.Interrupt(pb.InterruptRequest(session=s), timeout=10).interrupted)
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result()
        self.assertEqual(cm.exception.code(), SC.CANCELLED)
        self.assertEqual(fx.from_value(b.Eval(pb.EvalRequest(session=s, code="x"),
                                              timeout=10).value), 1)
        # A stream through B cancelled by its client interrupts the owner.
        stream = b.CallStream(self.call_req("__main__", "gen", [10 ** 9], session=s),
                              timeout=30)
        next(stream)
        stream.cancel()
        self.assertEqual(fx.from_value(a.Eval(pb.EvalRequest(session=s, code="x + 1"),
                                              timeout=10).value), 2)


if __name__ == "__main__":
    unittest.main()
