"""A rolling restart of the image keeps the sessions (issue 17).

Three containers of the image, run as the Deployment runs them and peers of
each other (--peers lists the three, as the headless Service would), share the
Secret pyexec-auth. Sessions of alice hold state on each of them: a function,
a class and an instance, a dict, a ref. The first container is stopped as the
kubelet stops a pod (SIGTERM, then the drain) and a new one starts in its
place; then the same for the second. After each step every session answers
with its state intact, under its first token, through whichever replica is
asked, after at most one retryable UNAVAILABLE.

This is the form we ship: pyexecd as the image's non-root uid, workers under
Landlock and seccomp, a read-only root file system; the snapshot is unpickled
by a worker of the target container.

Runs only under run_container_tests.sh (PYEXEC_TEST_TARGET=container).
"""

import os
import re
import sys
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb, pb_grpc

from container import podman_target

SC = grpc.StatusCode
CONTAINER = os.environ.get("PYEXEC_TEST_TARGET") == "container"
TIMEOUT = 30
SESSIONS = 12
STATE = ("def f(x):\n    return x * %d\n"
         "class K:\n    def __init__(self, v):\n        self.v = v\n"
         "k = K(%d)\n"
         "table = {i: i * i for i in range(100000)}\n")


def read_tokens(path):
    with open(path) as f:
        return dict(line.split() for line in f if line.strip())


@unittest.skipUnless(CONTAINER, "runs under run_container_tests.sh")
class RollingRestartTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        base = podman_target.Target.from_env()
        cls.token = read_tokens(os.environ["PYEXEC_TEST_TOKENS_FILE"])["alice"]
        cls.replicas = [podman_target.Target.like(base, "pyexec-rolling-%d-%d" % (os.getpid(), n))
                        for n in range(3)]
        peers = [r.address for r in cls.replicas]
        for r in cls.replicas:
            r.peers = list(peers)
        try:
            for r in cls.replicas:
                r.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for r in cls.replicas:
            r.remove()

    def stub(self, replica):
        channel = grpc.insecure_channel(replica.address)
        self.addCleanup(channel.close)
        return pb_grpc.PyExecStub(channel)

    def metadata(self):
        return [("authorization", "Bearer " + self.token)]

    def check(self, stubs, i, token, ref, unavailable):
        """Session i answers with its state, through the replicas in turn;
        UNAVAILABLE is retried (and counted) as our clients retry it."""
        req = pb.EvalRequest(session=token, code="(f(2), k.v, len(table), table[7], r.v)")
        req.locals["r"].CopyFrom(fx.to_value(ref))
        for attempt in range(20):
            stub = stubs[attempt % len(stubs)]
            try:
                resp = stub.Eval(req, metadata=self.metadata(), timeout=TIMEOUT)
                break
            except grpc.RpcError as e:
                if e.code() != SC.UNAVAILABLE:
                    self.fail("session %d: %s %s" % (i, e.code(), e.details()))
                unavailable[token] = unavailable.get(token, 0) + 1
                time.sleep(0.2)
        else:
            self.fail("session %d: still UNAVAILABLE" % i)
        self.assertFalse(resp.HasField("error"), resp.error)
        self.assertEqual(fx.from_value(resp.value), (2 * i, i, 100000, 49, i + 1))

    def test_sessions_survive_two_containers_replaced_in_turn(self):
        sessions = []
        for i in range(SESSIONS):
            stub = self.stub(self.replicas[i % 3])
            token = stub.Bind(pb.BindRequest(), metadata=self.metadata(), timeout=TIMEOUT).session
            stub.Exec(pb.ExecRequest(session=token, code=STATE % (i, i)),
                      metadata=self.metadata(), timeout=TIMEOUT)
            ref = fx.from_value(stub.Eval(pb.EvalRequest(session=token, code="K(%d)" % (i + 1)),
                                          metadata=self.metadata(), timeout=TIMEOUT).value)
            self.assertIsInstance(ref, fx.Ref)
            sessions.append((token, ref))
        unavailable = {}
        for step, victim in enumerate(self.replicas[:2]):
            started = time.monotonic()
            victim.stop()
            drained = time.monotonic() - started
            self.assertEqual(victim.exit_code(), 0, victim.logs()[-3000:])
            moved = re.search(r"draining: (\d+) sessions moved \((\d+) bytes\), (\d+) could not be "
                              r"moved, (\d+) left behind", victim.logs())
            self.assertIsNotNone(moved, victim.logs()[-3000:])
            self.assertGreater(int(moved.group(1)), 0, moved.group(0))
            self.assertEqual(int(moved.group(3)) + int(moved.group(4)), 0, moved.group(0))
            print("\ncontainer rolling restart, step %d: %s; stop took %.1f s"
                  % (step + 1, moved.group(0), drained), file=sys.stderr)
            # The new pod in its place, empty; then every session, through
            # every replica that is up.
            victim.start()
            stubs = [self.stub(r) for r in self.replicas]
            for i, (token, ref) in enumerate(sessions):
                self.check(stubs, i, token, ref, unavailable)
        self.assertLessEqual(max(unavailable.values(), default=0), 1, unavailable)


if __name__ == "__main__":
    unittest.main()
