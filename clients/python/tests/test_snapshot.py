"""Snapshot and restore against a real pyexecd, sync and asyncio: a session's
variables, functions, classes and their instances, imported modules and live
refs come back in a new session (client.session(restore=...)); what cannot be
carried (a socket) is listed in Snapshot.lost and missing after the restore,
and names of a module that does not import there in Session.restore_lost;
__pyexec_restore__() runs on restore (its error is reported, the state is
restored all the same); a forged or altered blob is InvalidArgument.
"""

import asyncio
import unittest
from typing import Any

import server
import pyexec_client.aio
from pyexec_client import Client, InvalidArgument, PythonError, Ref, Snapshot

STATE = """
import json as j
import socket
x = 41
data = {"k": [1, (2, 3)], 4: {5}}
def double(n):
    return n * 2
class Counter:
    def __init__(self, start):
        self.n = start
    def bump(self):
        self.n += 1
        return self.n
counter = Counter(10)
sock = socket.socket()
restored = 0
def __pyexec_restore__():
    global restored
    restored += 1
"""


def lost_names(snap: Snapshot) -> dict:
    return {lost.name: lost for lost in snap.lost}


class SnapshotTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=6).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def check_restored(self, snap: Snapshot) -> None:
        lost = lost_names(snap)
        self.assertIn("sock", lost)
        self.assertEqual(lost["sock"].type, "socket.socket")
        self.assertTrue(lost["sock"].reason)
        self.assertNotIn("counter", lost)
        self.assertNotIn("double", lost)
        self.assertIn("json", snap.modules)
        self.assertEqual(snap.refs, 1)
        self.assertIsInstance(snap.blob, bytes)

    def test_state_functions_classes_refs_and_lost_names(self) -> None:
        with Client(self.server.address, timeout=30) as c:
            with c.session() as s:
                s.exec(STATE)
                ref = s.eval("Counter(100)", result_as_ref=True)
                self.assertIsInstance(ref, Ref)
                snap = s.snapshot()
                self.check_restored(snap)
                # The session carries on unchanged.
                self.assertEqual(s.eval("counter.bump()"), 11)
                self.assertEqual(s.eval("sock.fileno() >= 0"), True)
            with c.session(restore=snap) as r:
                self.assertEqual(r.restore_lost, ())
                self.assertIsNone(r.restore_error)
                self.assertEqual(r.eval("x + 1"), 42)
                self.assertEqual(r.eval("data"), {"k": [1, (2, 3)], 4: {5}})
                self.assertEqual(r.eval("double(21)"), 42)
                # The instance as it was at the snapshot, of the restored class.
                self.assertEqual(r.eval("counter.bump()"), 11)
                self.assertEqual(r.eval("type(counter) is Counter"), True)
                self.assertEqual(r.eval("Counter(1).bump()"), 2)
                self.assertEqual(r.eval("j.dumps([1])"), "[1]")
                self.assertEqual(r.eval("'sock' in globals()"), False)
                self.assertEqual(r.eval("restored"), 1)  # __pyexec_restore__ ran
                # The live ref, under the same id.
                self.assertEqual(r.call_method(ref, "bump"), 101)
            # The blob alone restores too, as often as wanted.
            with c.session(restore=snap.blob) as r:
                self.assertEqual(r.eval("counter.n"), 10)

    def test_restore_error_and_forged_blobs(self) -> None:
        with Client(self.server.address, timeout=30) as c:
            with c.session() as s:
                s.exec("y = 7\ndef __pyexec_restore__():\n    raise RuntimeError('no db here')\n")
                blob = s.snapshot().blob
            with c.session(restore=blob) as r:
                self.assertEqual(r.eval("y"), 7)  # restored all the same
                self.assertIsInstance(r.restore_error, PythonError)
                assert r.restore_error is not None
                self.assertEqual(r.restore_error.type, "RuntimeError")
                self.assertIn("no db here", r.restore_error.message)
            # A module that does not import where the blob is restored: its
            # names are listed in restore_lost and missing.
            with c.session() as s:
                s.exec("import sys, types\nsys.modules['ghost'] = types.ModuleType('ghost')\n"
                       "import ghost\ng = ghost\nz = 1\n")
                ghost_blob = s.snapshot().blob
            with c.session(restore=ghost_blob) as r:
                lost = {n.name: n for n in r.restore_lost}
                self.assertEqual(set(lost), {"ghost", "g"})
                self.assertEqual(lost["g"].type, "module")
                self.assertIn("No module named 'ghost'", lost["g"].reason)
                self.assertEqual(r.eval("('g' in globals(), z)"), (False, 1))
            altered = bytearray(blob)
            altered[len(altered) // 2] ^= 0x01
            for forged in (bytes(altered), b"not a snapshot", blob[:-1], blob + b"\x00"):
                with self.subTest(size=len(forged)):
                    with self.assertRaises(InvalidArgument):
                        with c.session(restore=forged) as r:
                            r.eval("1")
            # Nothing was left bound by the refused restores.
            self.assertEqual(c.stats().sessions, 0)

    def test_asyncio(self) -> None:
        async def main() -> None:
            async with pyexec_client.aio.Client(self.server.address, timeout=30) as c:
                async with c.session() as s:
                    await s.exec(STATE)
                    await s.eval("Counter(100)", result_as_ref=True)
                    snap = await s.snapshot()
                self.check_restored(snap)
                async with c.session(restore=snap) as r:
                    self.assertEqual(await r.eval("(x, double(2), counter.bump(), restored)"),
                                     (41, 4, 11, 1))
                    self.assertEqual(await r.eval("'sock' in globals()"), False)
                with self.assertRaises(InvalidArgument):
                    async with c.session(restore=snap.blob[:-3]) as r:
                        await r.eval("1")
        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()
