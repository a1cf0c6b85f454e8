"""Status mapping and retries (issue 19), against a scripted fake PyExec
server written here: each RPC attempt takes the next status of a script (or
succeeds when the script is empty) and is recorded with its x-pyexec-call-id.

- A bare CANCELLED (gRPC core's, when a server shuts down: grpc/grpc#41785)
  is Unavailable; a CANCELLED that says why (an Interrupt) stays Cancelled.
- A session call that fails UNAVAILABLE is sent once more, under the same
  call id; a second UNAVAILABLE is raised. Stateless calls are not retried.
- While the server says the session "is moving to another replica", the call
  is sent again with back-off until the move is done, within its deadline.
- A session call sent to its owner replica (x-pyexec-owner) that answers
  UNAVAILABLE goes to the target at once, without using up the retry.
- Through Run (registered functions): retried only if no callback was served
  (a served callback means the call ran). Streams: only before their first
  event.
Sync and asyncio clients.
"""

import asyncio
import threading
import time
import unittest
from concurrent import futures
from typing import Any, Iterator, List, Optional, Tuple

import server  # noqa: F401  (puts the client package on sys.path)
import grpc
import pyexec_client.aio
from pyexec_client import (Cancelled, Client, Item, PyExecError, SessionNotFound,
                           Unavailable)
from pyexec_client._stubs import pb, pb_grpc

U = grpc.StatusCode.UNAVAILABLE
BARE = (grpc.StatusCode.CANCELLED, "CANCELLED")
MOVING = (U, "the session is moving to another replica (this one is draining); retry the call")
DRAINING = (U, "the server is draining")
INTERRUPTED = (grpc.StatusCode.CANCELLED, "the call was interrupted (Interrupt)")
Status = Tuple[grpc.StatusCode, str]


class Scripted(pb_grpc.PyExecServicer):
    """Each attempt of Eval/Exec/Call/Run/ExecStream takes the next status of
    the script (an abort) or, when it is empty, succeeds. Attempts are
    recorded as (method, session, call id)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: List[Status] = []
        self.attempts: List[Tuple[str, str, str]] = []
        # Run: fail after serving one callback (the call ran).
        self.fail_after_callback: Optional[Status] = None
        # Sent as x-pyexec-owner (the replica that holds the session).
        self.owner = ""

    def script(self, *statuses: Status) -> None:
        with self.lock:
            self.statuses = list(statuses)
            self.attempts = []
            self.fail_after_callback = None

    def seen(self) -> List[Tuple[str, str, str]]:
        with self.lock:
            return list(self.attempts)

    def _attempt(self, method: str, session: str, context: Any) -> None:
        md = dict(context.invocation_metadata())
        with self.lock:
            self.attempts.append((method, session, md.get("x-pyexec-call-id", "")))
            status = self.statuses.pop(0) if self.statuses else None
            owner = self.owner
        if owner:
            context.send_initial_metadata((("x-pyexec-owner", owner),))
        if status is not None:
            context.abort(*status)

    def Bind(self, request: Any, context: Any) -> Any:
        return pb.BindResponse(session="tok", idle_timeout_seconds=60)

    def Eval(self, request: Any, context: Any) -> Any:
        self._attempt("Eval", request.session, context)
        return pb.EvalResponse(value=pb.Value(str="ok"))

    def Exec(self, request: Any, context: Any) -> Any:
        self._attempt("Exec", request.session, context)
        return pb.ExecResponse()

    def Call(self, request: Any, context: Any) -> Any:
        self._attempt("Call", request.session, context)
        return pb.CallResponse(value=pb.Value(str="called"))

    def CallStream(self, request: Any, context: Any) -> Iterator[Any]:
        self._attempt("CallStream", request.session, context)
        yield pb.CallEvent(value=pb.Value(int=1))
        yield pb.CallEvent(end=pb.StreamEnd())

    def Run(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        first = next(request_iterator)
        self._attempt("Run", first.eval.session, context)
        yield pb.RunEvent(callback=pb.CallbackRequest(id="cb1", name="f"))
        answer = next(request_iterator)
        with self.lock:
            fail = self.fail_after_callback
        if fail is not None:
            context.abort(*fail)
        yield pb.RunEvent(eval=pb.EvalResponse(value=answer.callback_result.value))
        for _ in request_iterator:  # until the client half-closes
            pass

    def Interrupt(self, request: Any, context: Any) -> Any:
        return pb.InterruptResponse(interrupted=False)


def serve(fake: Scripted) -> Tuple[Any, str]:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_PyExecServicer_to_server(fake, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, "127.0.0.1:%d" % port


class RetryTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = Scripted()
        cls.server, cls.address = serve(cls.fake)
        # The "owner replica" of the owner-routing case: always UNAVAILABLE.
        cls.owner_fake = Scripted()
        cls.owner_server, cls.owner_address = serve(cls.owner_fake)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop(None).wait()
        cls.owner_server.stop(None).wait()

    def test_an_owner_that_fails_falls_back_to_the_target(self) -> None:
        def wait_routed(c: Any) -> None:
            deadline = time.monotonic() + 10
            while c._owners.route("tok") is None:
                self.assertLess(time.monotonic(), deadline, "never connected to the owner")
                time.sleep(0.02)
        self.fake.script()
        self.fake.owner = self.owner_address
        self.addCleanup(setattr, self.fake, "owner", "")
        with Client(self.address, timeout=10) as c:
            s = c.attach("tok")
            self.assertEqual(s.eval("1"), "ok")  # learns the owner
            self.assertEqual(s.owner, self.owner_address)
            wait_routed(c)
            # The owner answers UNAVAILABLE: at once to the target, which
            # fails once too (draining) and then answers; one call id.
            self.owner_fake.script(*[DRAINING] * 10)
            self.fake.script(DRAINING)
            self.assertEqual(s.eval("2"), "ok")
            to_owner, to_target = self.owner_fake.seen(), self.fake.seen()
            self.assertEqual(len(to_owner), 1)
            self.assertEqual(len(to_target), 2)
            self.assertEqual({i for _, _, i in to_owner + to_target}, {to_owner[0][2]})
            # The owner is left alone for a while: calls go to the target.
            self.fake.script()
            self.assertEqual(s.eval("3"), "ok")
            self.assertEqual(len(self.owner_fake.seen()), 1)

        async def main() -> None:
            async with pyexec_client.aio.Client(self.address, timeout=10) as c:
                s = c.attach("tok")
                self.fake.script()
                self.assertEqual(await s.eval("1"), "ok")
                deadline = time.monotonic() + 10
                while c._owners.route("tok") is None:
                    self.assertLess(time.monotonic(), deadline)
                    await asyncio.sleep(0.02)
                self.owner_fake.script(*[BARE] * 10)
                self.fake.script()
                self.assertEqual(await s.eval("2"), "ok")
                self.assertEqual(len(self.owner_fake.seen()), 1)
                self.assertEqual(len(self.fake.seen()), 1)
        asyncio.run(main())

    def assert_attempts(self, n: int, method: str = "Eval") -> None:
        seen = self.fake.seen()
        self.assertEqual(len(seen), n, seen)
        self.assertEqual({m for m, _, _ in seen}, {method})
        ids = {call_id for _, _, call_id in seen}
        self.assertEqual(len(ids), 1, "the attempts of one call carry one call id: %s" % seen)
        self.assertNotEqual(ids, {""})

    def test_sync(self) -> None:
        with Client(self.address, timeout=10) as c:
            s = c.attach("tok")
            # Bare CANCELLED once: Unavailable, retried once, same call id.
            self.fake.script(BARE)
            self.assertEqual(s.eval("1"), "ok")
            self.assert_attempts(2)
            # UNAVAILABLE once: the same.
            self.fake.script(DRAINING)
            self.assertIsNone(s.exec("x = 1"))
            self.assert_attempts(2, "Exec")
            # Twice: raised after two attempts.
            self.fake.script(BARE, BARE)
            with self.assertRaises(Unavailable) as cm:
                s.eval("1")
            self.assertEqual(cm.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assert_attempts(2)
            self.fake.script(DRAINING, DRAINING, DRAINING)
            with self.assertRaises(Unavailable):
                s.call("m", "f")
            self.assert_attempts(2, "Call")
            # A CANCELLED that says why is the Interrupt's: not retried.
            self.fake.script(INTERRUPTED)
            with self.assertRaises(Cancelled):
                s.eval("1")
            self.assert_attempts(1)
            # Other codes are not retried.
            self.fake.script((grpc.StatusCode.NOT_FOUND, "unknown session"))
            with self.assertRaises(SessionNotFound):
                s.eval("1")
            self.assert_attempts(1)
            # Moving: retried with back-off until the move is done.
            self.fake.script(MOVING, MOVING, MOVING, MOVING)
            start = time.monotonic()
            self.assertEqual(s.eval("1"), "ok")
            took = time.monotonic() - start
            self.assert_attempts(5)
            self.assertGreater(took, 0.05 + 0.1 + 0.2 + 0.4 - 0.05)  # the back-off
            # ... but never past the call's deadline.
            self.fake.script(*[MOVING] * 100)
            start = time.monotonic()
            with self.assertRaises(Unavailable) as cm:
                s.eval("1", timeout=1.0)
            self.assertLess(time.monotonic() - start, 1.5)
            self.assertIn("is moving", str(cm.exception))
            self.assertGreater(len(self.fake.seen()), 2)
            # Stateless calls are not retried; a bare CANCELLED is Unavailable.
            self.fake.script(BARE)
            with self.assertRaises(Unavailable):
                c.eval("1")
            self.assert_attempts(1)
            self.fake.script(MOVING)
            with self.assertRaises(Unavailable):
                c.eval("1")
            self.assert_attempts(1)
            # A stream is retried before its first event.
            self.fake.script(BARE)
            self.assertEqual(list(s.call_stream("m", "f").items()), [1])
            self.assert_attempts(2, "CallStream")
            # Run (a registered function): retried while no callback ran ...
            c.register_function("f", lambda: "from f")
            self.fake.script(DRAINING)
            self.assertEqual(s.eval("pyexec.call('f')"), "from f")
            self.assert_attempts(2, "Run")
            # ... and not once a callback was served (the call ran).
            self.fake.script()
            self.fake.fail_after_callback = DRAINING
            with self.assertRaises(Unavailable):
                s.eval("pyexec.call('f')")
            self.assert_attempts(1, "Run")

    def test_asyncio(self) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client(self.address, timeout=10) as c:
                s = c.attach("tok")
                self.fake.script(BARE)
                self.assertEqual(await s.eval("1"), "ok")
                self.assert_attempts(2)
                self.fake.script(DRAINING, BARE)
                with self.assertRaises(Unavailable):
                    await s.eval("1")
                self.assert_attempts(2)
                self.fake.script(INTERRUPTED)
                with self.assertRaises(Cancelled):
                    await s.eval("1")
                self.assert_attempts(1)
                self.fake.script(MOVING, MOVING, MOVING)
                self.assertEqual(await s.call("m", "f"), "called")
                self.assert_attempts(4, "Call")
                self.fake.script(*[MOVING] * 100)
                start = time.monotonic()
                with self.assertRaises(Unavailable):
                    await s.eval("1", timeout=1.0)
                self.assertLess(time.monotonic() - start, 1.5)
                self.fake.script(BARE)
                with self.assertRaises(Unavailable):
                    await c.eval("1")
                self.assert_attempts(1)
                self.fake.script(MOVING)
                got = [ev async for ev in await s.call_stream("m", "f")]
                self.assertEqual([ev.value for ev in got if isinstance(ev, Item)], [1])
                self.assert_attempts(2, "CallStream")
                c.register_function("f", lambda: "from f")
                self.fake.script(BARE)
                self.assertEqual(await s.eval("pyexec.call('f')"), "from f")
                self.assert_attempts(2, "Run")
                self.fake.script()
                self.fake.fail_after_callback = DRAINING
                with self.assertRaises(Unavailable):
                    await s.eval("pyexec.call('f')")
                self.assert_attempts(1, "Run")
                # The client's own cancel is asyncio's, never Unavailable.
                self.fake.script()
                task = asyncio.ensure_future(s.eval("1"))
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
        asyncio.run(main())

    def test_errors_map(self) -> None:
        from pyexec_client.errors import from_status
        for details in ("", "CANCELLED", "Cancelled"):
            err = from_status(grpc.StatusCode.CANCELLED, details)
            self.assertIsInstance(err, Unavailable)
            self.assertEqual(err.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIsInstance(from_status(grpc.StatusCode.CANCELLED, "Locally cancelled by "
                                          "application!"), Cancelled)
        self.assertNotIsInstance(from_status(*INTERRUPTED), Unavailable)
        self.assertIsInstance(from_status(*MOVING), Unavailable)
        self.assertIsInstance(from_status(grpc.StatusCode.INTERNAL, "x"), PyExecError)


if __name__ == "__main__":
    unittest.main()
