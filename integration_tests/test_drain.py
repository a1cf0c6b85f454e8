"""Graceful drain on SIGTERM/SIGINT (issue 3, items 3 and 6). One server per test."""

import signal
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import pb, grpc

SC = grpc.StatusCode


class DrainTest(fx.ServerTestCase):
    PER_TEST_SERVER = True
    SERVER_FLAGS = ("--drain_timeout=10s", "--kill_grace=1s")
    WORKERS = 2
    MAX_WORKERS = 4

    def _processes(self):
        pids = {p: fx.proc_stat(p)[2] for p in fx.descendants(self.server.pid) if fx.proc_stat(p)}
        for p, st in pids.items():
            self.addCleanup(fx.kill_if_alive, p, st)
        return pids

    def _not_serving(self):
        st = self.server.health_status("", timeout=1.0)
        return st if st in (fx.NOT_SERVING, SC.UNAVAILABLE) else None

    def test_sigterm_drains_in_flight_calls(self):
        srv = self.server
        s = self.bind(cleanup=False)
        self.ex("x = 1", s)
        p1, p2 = self.marker(), self.marker()
        bound = self.stub.Exec.future(pb.ExecRequest(
            session=s, code=self.touch_code(p1) + "import time\ntime.sleep(4)\nprint('done', x)"),
            timeout=30)
        stateless = self.stub.Eval.future(pb.EvalRequest(
            code="(" + self.touch_code(p2).strip() + ", __import__('time').sleep(4), 'ok')[2]"),
            timeout=30)
        self.wait_file(p1)
        self.wait_file(p2)
        pids = self._processes()
        self.assertGreaterEqual(len(pids), 2)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        # Health turns NOT_SERVING at once.
        fx.wait_until(self._not_serving, 1.0, interval=0.01, what="health NOT_SERVING")
        # New calls and binds are refused while the in-flight ones run.
        self.assertRpcError(SC.UNAVAILABLE, self.eval, "1", timeout=5)
        self.assertRpcError(SC.UNAVAILABLE, self.bind, cleanup=False, timeout=5)
        self.assertRpcError(SC.UNAVAILABLE, self.eval, "x", s, timeout=5)
        self.assertFalse(bound.done(), "in-flight call ended early")
        resp = bound.result(timeout=15)
        self.assertFalse(resp.HasField("error"), resp.error)
        self.assertEqual(resp.stdout, "done 1\n")
        self.assertEqual(fx.from_value(stateless.result(timeout=15).value), "ok")
        rc = srv.wait_exit(10.0 + 10.0)
        self.assertEqual(rc, 0, "pyexecd exit status after SIGTERM")
        self.assertFalse(fx.wait_gone(pids, 3.0), "processes left behind after drain")

    def test_drain_timeout_bounds_shutdown(self):
        srv = self.server
        s = self.bind(cleanup=False)
        p1, p2 = self.marker(), self.marker()
        sleeper = self.stub.Exec.future(pb.ExecRequest(
            session=s, code=self.touch_code(p1) + "import time\ntime.sleep(60)"), timeout=60)
        spinner = self.stub.Exec.future(pb.ExecRequest(
            code=self.touch_code(p2) + "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                       "while True:\n    pass\n"), timeout=60)
        self.wait_file(p1)
        self.wait_file(p2)
        pids = self._processes()
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.wait_exit(10.0 + 1.0 + 5.0)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, "pyexecd exit status after SIGTERM")
        self.assertGreater(elapsed, 9.0, "--drain_timeout=10s not honoured")
        for fut in (sleeper, spinner):
            with self.assertRaises(grpc.RpcError) as cm:
                fut.result(timeout=5)
            self.assertNotEqual(cm.exception.code(), SC.DEADLINE_EXCEEDED,
                                "call left hanging until its own deadline")
        self.assertFalse(fx.wait_gone(pids, 3.0), "processes left behind after drain")

    def test_idle_sigterm_exits_promptly(self):
        srv = self.server
        self.assertEqual(self.ev("1"), 1)
        pids = self._processes()
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait_exit(15.0), 0)
        self.assertLess(time.monotonic() - t0, 8.0, "idle server waited for --drain_timeout")
        self.assertFalse(fx.wait_gone(pids, 3.0), "workers left behind")

    def test_sigint_stops_cleanly(self):
        srv = self.server
        s = self.bind(cleanup=False)
        self.ex("import subprocess\nchild = subprocess.Popen(['sleep', '1000'])", s)
        pids = self._processes()
        child = self.ev("child.pid", s)
        st = fx.proc_stat(child)
        self.addCleanup(fx.kill_if_alive, child, st[2])
        pids[child] = st[2]
        srv.signal(signal.SIGINT)
        self.assertEqual(srv.wait_exit(15.0), 0)
        self.assertFalse(fx.wait_gone(pids, 3.0), "processes left behind after SIGINT")


if __name__ == "__main__":
    unittest.main()
