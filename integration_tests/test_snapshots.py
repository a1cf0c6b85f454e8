"""Session snapshots: Snapshot and Bind{restore} (issue 17).

A snapshot carries the session's __main__ namespace (functions, classes and
lambdas defined in it included), the modules it imported and its live refs,
as a blob sealed with the deployment's key. Covered: the round trip, what is
left out and listed, __pyexec_restore__ (and its error), a snapshot that
changes nothing, the size limit, and refusals: an altered or forged blob,
another deployment's, another principal's.
"""

import os
import shutil
import tempfile
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc, Ref

SC = grpc.StatusCode

STATE = (
    "import json, socket, threading, collections\n"
    "big = {i: i for i in range(100000)}\n"
    "def double(x):\n"
    "    return 2 * x\n"
    "triple = lambda x: 3 * x\n"
    "class Point:\n"
    "    def __init__(self, x, y):\n"
    "        self.x, self.y = x, y\n"
    "    def norm1(self):\n"
    "        return abs(self.x) + abs(self.y)\n"
    "p = Point(3, -4)\n"
    "counter = 0\n"
    "def bump():\n"
    "    global counter\n"
    "    counter += 1\n"
    "    return counter\n"
    "sock = socket.socket()\n"
    "gen = (i for i in range(3))\n"
)


class SnapshotTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--max_snapshot_bytes=8000000",)
    WORKERS = 2
    MAX_WORKERS = 8

    def snapshot(self, session):
        return self.stub.Snapshot(pb.SnapshotRequest(session=session), timeout=60)

    def restore(self, blob, timeout=60):
        resp = self.stub.Bind(pb.BindRequest(restore=blob), timeout=timeout)
        self.addCleanup(self.unbind_quietly, resp.session)
        return resp

    def test_state_travels_and_unpicklable_names_are_listed(self):
        s = self.bind()
        self.ex(STATE, s)
        ref = self.value_of(self.stub.Eval(pb.EvalRequest(
            session=s, code="Point(5, 6)"), timeout=10))
        self.assertIsInstance(ref, Ref)
        snap = self.snapshot(s)
        self.assertEqual({l.name for l in snap.lost}, {"sock", "gen"})
        lost = {l.name: l for l in snap.lost}
        self.assertEqual(lost["sock"].type, "socket.socket")
        self.assertTrue(lost["sock"].reason)
        self.assertIn("json", snap.modules)
        self.assertEqual(snap.refs, 1)
        restored = self.restore(snap.blob)
        r = restored.session
        self.assertNotEqual(r, s)
        self.assertEqual(list(restored.restore_lost), [])
        self.assertFalse(restored.HasField("restore_error"))
        self.assertEqual(self.ev("(len(big), big[99999], double(21), triple(2), p.norm1(), "
                                 "type(p).__name__, json.dumps([1]))", r),
                         (100000, 99999, 42, 6, 7, "Point", "[1]"))
        # Functions restored use the restored namespace as their globals.
        self.assertEqual(self.ev("(bump(), bump(), counter)", r), (1, 2, 2))
        self.assertEqual(self.ev("'sock' in globals() or 'gen' in globals()", r), False)
        # The ref comes back under its id.
        resp = self.eval("ref.norm1()", r, locals={"ref": ref})
        self.assertEqual(self.value_of(resp), 11)
        # The original is untouched.
        self.assertEqual(self.ev("(counter, next(gen))", s), (0, 0))

    def test_restore_hook_runs_and_its_error_is_reported(self):
        s = self.bind()
        self.ex("import socket\n"
                "conn = socket.socket()\n"
                "reopened = False\n"
                "def __pyexec_restore__():\n"
                "    global conn, reopened\n"
                "    conn = socket.socket()\n"
                "    reopened = True\n", s)
        restored = self.restore(self.snapshot(s).blob)
        self.assertFalse(restored.HasField("restore_error"))
        self.assertEqual(self.ev("(reopened, type(conn).__name__)", restored.session),
                         (True, "socket"))
        t = self.bind()
        self.ex("x = 1\n"
                "def __pyexec_restore__():\n"
                "    raise RuntimeError('cannot reconnect')\n", t)
        restored = self.restore(self.snapshot(t).blob)
        self.assertEqual(restored.restore_error.type, "RuntimeError")
        self.assertIn("cannot reconnect", restored.restore_error.message)
        self.assertEqual(self.ev("x", restored.session), 1)  # restored all the same

    def test_an_altered_or_forged_blob_is_refused_before_it_is_unpickled(self):
        s = self.bind()
        marker = self.marker()
        # A class whose unpickling would leave a file: it must never run.
        self.ex("import os\n"
                "class Trap:\n"
                "    def __reduce__(self):\n"
                "        return (open, (os.path.join(os.environ['HOME'], %r), 'w'))\n"
                "x = 41\n" % marker, s)
        blob = self.snapshot(s).blob
        for i in (0, len(blob) // 2, len(blob) - 1):
            altered = bytearray(blob)
            altered[i] ^= 0x40
            self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Bind,
                                pb.BindRequest(restore=bytes(altered)), timeout=10)
        for junk in (b"x", b"\x0a\x03abc\x12\x01z", blob[:-5]):
            self.assertRpcError(SC.INVALID_ARGUMENT, self.stub.Bind,
                                pb.BindRequest(restore=junk), timeout=10)
        self.assertIsNone(fx.find_marker(marker))
        # The server is fine and the genuine blob still restores.
        self.assertEqual(self.ev("x", self.restore(blob).session), 41)

    def test_snapshots_past_the_limit_are_refused_and_the_session_goes_on(self):
        s = self.bind()
        self.ex("blob = b'x' * 9000000", s)  # over --max_snapshot_bytes
        err = self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.snapshot, s)
        self.assertIn("snapshot", err.details().lower())
        self.assertEqual(self.ev("len(blob)", s), 9000000)

    def test_stateless_calls_have_no_snapshot(self):
        self.assertRpcError(SC.INVALID_ARGUMENT, self.snapshot, "")
        self.assertRpcError(SC.NOT_FOUND, self.snapshot, "0123456789abcdef0123456789abcdef")


class SnapshotAuthTest(unittest.TestCase):
    """Two servers with tokens: the same peer secret restores each other's
    blobs for the same principal only; another secret does not."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_snap_")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("alice alice-secret\nbob bob-secret\n")
        secrets = []
        for name in ("one", "two"):
            path = os.path.join(cls.dir, name)
            with open(path, "w") as f:
                f.write("peer secret %s %s\n" % (name, os.urandom(8).hex()))
            secrets.append(path)
        fx.give_to_server(cls.dir)
        cls.servers = []
        for secret in (secrets[0], secrets[0], secrets[1]):
            srv = fx.Server("--auth_tokens_file=" + tokens, "--peer_secret_file=" + secret,
                            workers=1, max_workers=4)
            cls.servers.append(srv)
            srv.start()

    @classmethod
    def tearDownClass(cls):
        for srv in cls.servers:
            srv.cleanup()
            srv.remove_log()
        shutil.rmtree(cls.dir, True)

    def md(self, who):
        return (("authorization", "Bearer %s-secret" % who),)

    def test_whose_blob_and_which_deployment(self):
        a, same, other = (srv.stub for srv in self.servers)
        s = a.Bind(pb.BindRequest(), metadata=self.md("alice"), timeout=10).session
        a.Exec(pb.ExecRequest(session=s, code="x = 'alice data'"), metadata=self.md("alice"),
               timeout=10)
        blob = a.Snapshot(pb.SnapshotRequest(session=s), metadata=self.md("alice"),
                          timeout=30).blob
        # Bob cannot snapshot alice's session, nor restore her blob.
        with self.assertRaises(grpc.RpcError) as cm:
            a.Snapshot(pb.SnapshotRequest(session=s), metadata=self.md("bob"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            same.Bind(pb.BindRequest(restore=blob), metadata=self.md("bob"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
        self.assertIn("another principal", cm.exception.details())
        # Another deployment (another peer secret) refuses it.
        with self.assertRaises(grpc.RpcError) as cm:
            other.Bind(pb.BindRequest(restore=blob), metadata=self.md("alice"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
        # A replica with the same secret restores it for alice.
        r = same.Bind(pb.BindRequest(restore=blob), metadata=self.md("alice"), timeout=30).session
        resp = same.Eval(pb.EvalRequest(session=r, code="x"), metadata=self.md("alice"),
                         timeout=10)
        self.assertEqual(fx.from_value(resp.value), "alice data")


if __name__ == "__main__":
    unittest.main()
