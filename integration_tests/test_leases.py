"""Sessions leased to their clients with Attach (issue 19).

A session with an Attach stream open never idles out; when its last stream
ends (the client cancels, dies, or loses its connection) it is unbound after
--lease_grace unless a new Attach comes first. Covered: a SIGKILLed client
process (the clean-up time is printed), cancel, renewal within the grace,
several leases, Unbind and worker death while attached (the stream says
why and ends OK), tokens of another principal or unknown, and that sessions
without a lease keep the idle timeout.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc

SC = grpc.StatusCode
GRACE_S = 1.0


class Attached:
    """An open Attach stream on its own thread; .first is its first event."""

    def __init__(self, stub, session, metadata=()):
        self.call = stub.Attach(pb.AttachRequest(session=session), metadata=metadata)
        self.events = []
        self.error = None
        self.ended = threading.Event()
        self.first = next(self.call)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()

    def cancel(self):
        self.call.cancel()
        self.ended.wait(5)


class LeaseTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--lease_grace=%ds" % GRACE_S,)
    WORKERS = 2
    MAX_WORKERS = 6

    def alive(self, session):
        try:
            self.eval("1", session, timeout=5)
            return True
        except grpc.RpcError as e:
            if e.code() != SC.NOT_FOUND:
                raise
            return False

    def test_the_first_event_says_the_lease_is_held(self):
        session = self.bind()
        lease = Attached(self.stub, session)
        self.addCleanup(lease.cancel)
        self.assertEqual(lease.first.WhichOneof("event"), "attached")
        self.assertEqual(lease.first.attached.grace_seconds, int(GRACE_S))

    def test_a_cancelled_lease_unbinds_after_the_grace(self):
        session = self.bind(cleanup=False)
        lease = Attached(self.stub, session)
        lease.cancel()
        self.assertTrue(self.alive(session), "unbound before the grace")
        fx.wait_until(lambda: not self.alive(session), 10, what="the lease's session to end")
        self.server.wait_pool_size(sessions=0)

    def test_a_leased_session_does_not_idle_out(self):
        session = self.bind(idle_timeout_seconds=1)
        lease = Attached(self.stub, session)
        self.addCleanup(lease.cancel)
        time.sleep(3)
        self.assertTrue(self.alive(session))
        time.sleep(1.5)  # its idle timeout again, counted from the Eval
        self.assertTrue(self.alive(session))

    def test_a_new_lease_within_the_grace_keeps_the_session(self):
        session = self.bind()
        self.ex("x = 41", session)
        first = Attached(self.stub, session)
        first.cancel()
        second = Attached(self.stub, session)
        self.addCleanup(second.cancel)
        time.sleep(GRACE_S * 2.5)
        self.assertEqual(self.ev("x + 1", session), 42)

    def test_the_session_lives_while_any_lease_does(self):
        session = self.bind()
        a = Attached(self.stub, session)
        b = Attached(self.stub, session)
        self.addCleanup(b.cancel)
        a.cancel()
        time.sleep(GRACE_S * 2.5)
        self.assertTrue(self.alive(session))
        b.cancel()
        fx.wait_until(lambda: not self.alive(session), 10, what="the session to end")

    def test_unbind_while_attached_ends_the_stream_with_the_reason(self):
        session = self.bind(cleanup=False)
        lease = Attached(self.stub, session)
        self.stub.Unbind(pb.UnbindRequest(session=session), timeout=5)
        self.assertTrue(lease.ended.wait(5))
        self.assertIsNone(lease.error)
        self.assertEqual([e.WhichOneof("event") for e in lease.events], ["ended"])
        self.assertIn("unbound", lease.events[0].ended.reason)

    def test_worker_death_while_attached_ends_the_stream_with_the_reason(self):
        session = self.bind(cleanup=False)
        lease = Attached(self.stub, session)
        pid = self.session_pid(session)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(lease.ended.wait(10))
        self.assertIsNone(lease.error)
        self.assertEqual([e.WhichOneof("event") for e in lease.events], ["ended"])
        self.assertIn("worker", lease.events[0].ended.reason)

    def test_unknown_and_empty_tokens(self):
        with self.assertRaises(grpc.RpcError) as cm:
            Attached(self.stub, "0123456789abcdef0123456789abcdef")
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            Attached(self.stub, "")
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)

    def test_a_sigkilled_client_process_loses_its_session(self):
        """The clean-up time after SIGKILL is printed for the closing note."""
        stubs = os.environ["PYEXEC_PY_STUBS"]
        program = textwrap.dedent("""
            import sys
            sys.path.insert(0, %r)
            import grpc
            from pyexec.v1 import pyexec_pb2 as pb, pyexec_pb2_grpc as pb_grpc
            stub = pb_grpc.PyExecStub(grpc.insecure_channel(%r))
            session = stub.Bind(pb.BindRequest(), timeout=10).session
            events = stub.Attach(pb.AttachRequest(session=session))
            next(events)
            print(session, flush=True)
            for _ in events:
                pass
        """ % (stubs, self.server.address))
        client = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                                  text=True)
        self.addCleanup(client.wait)
        self.addCleanup(client.kill)
        session = client.stdout.readline().strip()
        self.assertTrue(session, "the client did not bind")
        self.assertTrue(self.alive(session))
        client.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        fx.wait_until(lambda: not self.alive(session), 15, interval=0.05,
                      what="the dead client's session to end")
        took = time.monotonic() - killed
        print("\nlease clean-up after SIGKILL of the client: %.2f s (--lease_grace=%.0fs)"
              % (took, GRACE_S), file=sys.stderr)
        self.assertGreaterEqual(took, GRACE_S * 0.8)
        self.server.wait_pool_size(sessions=0)


class LeaseAuthTest(fx.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_lease_auth_")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("alice alice-secret\nbob bob-secret\n")
        fx.give_to_server(cls.dir)
        cls.SERVER_FLAGS = ("--auth_tokens_file=" + tokens, "--lease_grace=1s")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, True)

    def test_another_principals_token_cannot_be_leased(self):
        alice = (("authorization", "Bearer alice-secret"),)
        bob = (("authorization", "Bearer bob-secret"),)
        session = self.stub.Bind(pb.BindRequest(), timeout=10, metadata=alice).session
        self.addCleanup(lambda: self.stub.Unbind(pb.UnbindRequest(session=session), timeout=5,
                                                 metadata=alice))
        with self.assertRaises(grpc.RpcError) as cm:
            Attached(self.stub, session, metadata=bob)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            Attached(self.stub, session)
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)
        lease = Attached(self.stub, session, metadata=alice)
        self.assertEqual(lease.first.WhichOneof("event"), "attached")
        lease.cancel()


if __name__ == "__main__":
    unittest.main()
