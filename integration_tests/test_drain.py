"""Graceful drain on SIGTERM/SIGINT (issue 3, items 3 and 6). One server per test."""

import signal
import threading
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

    def test_calls_refused_while_draining_get_unavailable(self):
        """Retry logic keys on UNAVAILABLE: every call pyexecd refuses, from the
        SIGTERM to the exit, says UNAVAILABLE.

        One case is gRPC core's, not ours: a call whose headers arrive in the
        instant between the server's Shutdown and the client reading its
        GOAWAY is dropped by core unanswered, and the client sees CANCELLED
        with the bare message "CANCELLED" (grpc/grpc#41785; Debian's 1.51 has
        it). The server never ran such a call; our clients report it as
        UNAVAILABLE (see each client's drain test). Here: anything else than
        OK and UNAVAILABLE must be exactly that signature."""
        srv = self.server
        codes = {}
        core_drops = []
        stop = threading.Event()

        def loop():
            # Fresh channels too, so that calls also arrive while the
            # listener is closing.
            channel = srv.new_channel()
            stub = fx.pb_grpc.PyExecStub(channel)
            while not stop.is_set():
                try:
                    stub.Eval(pb.EvalRequest(code="1"), timeout=5)
                    code = SC.OK
                except grpc.RpcError as e:
                    code = e.code()
                    if code == SC.CANCELLED and e.details() == "CANCELLED":
                        core_drops.append(e.details())
                        code = "core drop"
                    elif code == SC.UNAVAILABLE and srv.proc.poll() is not None:
                        break
                    elif code != SC.UNAVAILABLE:
                        code = (code, e.details())
                codes[code] = codes.get(code, 0) + 1
                time.sleep(0.01)
            channel.close()

        threads = [threading.Thread(target=loop) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait_exit(20.0), 0)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertGreater(codes.get(SC.OK, 0), 0, codes)
        self.assertGreater(codes.get(SC.UNAVAILABLE, 0), 0, codes)
        self.assertEqual(set(codes) - {SC.OK, SC.UNAVAILABLE, "core drop"}, set(), codes)

    def test_attach_streams_end_with_the_reason_at_shutdown(self):
        srv = self.server
        s = self.bind(cleanup=False)
        events = self.stub.Attach(pb.AttachRequest(session=s), timeout=30)
        self.assertEqual(next(events).WhichOneof("event"), "attached")
        srv.signal(signal.SIGTERM)
        rest = list(events)  # ends OK: no RpcError
        self.assertEqual([e.WhichOneof("event") for e in rest], ["ended"])
        self.assertIn("shutting down", rest[0].ended.reason)
        self.assertEqual(srv.wait_exit(20.0), 0)

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
