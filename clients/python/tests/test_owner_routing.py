"""Owner routing (issue 19) against two real pyexecd replicas, A and B, run
with --peers and --advertise_address (and a peer secret), each with its
Prometheus metrics.

The client's target is A (as a balancer would be). A session that B holds:
- its calls go straight to B once the client has learned the owner (from
  x-pyexec-owner on a call A forwarded, or BindResponse.owner): B's counters
  grow, A forwards nothing more;
- when B's advertised address cannot be reached from the client (B advertises
  the address of a relay that stops taking new connections once A's peer
  channel is through it), calls keep working through A, which forwards them.
- route_to_owner=False keeps every call on the target.
Sync and asyncio clients.
"""

import asyncio
import os
import re
import select
import socket
import tempfile
import threading
import time
import unittest
import urllib.request
from typing import Any, Dict, List, Optional

import server
import pyexec_client.aio
from pyexec_client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(address: str, name: str, labels: str = "") -> float:
    """One sample of a replica's /metrics (0 when absent)."""
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


class Relay:
    """A TCP relay 127.0.0.1:port -> target. stop_accepting() closes the
    listening socket: connections through it go on, new ones are refused."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.accepted = 0
        self._socks: List[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            up = socket.create_connection(self.target)
            self._socks += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._stop:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def stop_accepting(self) -> None:
        # shutdown() wakes the accept() (close() alone would leave the
        # socket listening while accept() blocks on it).
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def close(self) -> None:
        self._stop = True
        self.stop_accepting()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


class Replicas:
    """pyexecd A and B with --peers; B advertises `b_advertised` (B's own
    address unless given: then the caller relays it to B)."""

    def __init__(self, secret_file: str, relay_b: bool = False) -> None:
        self.a_port, self.b_port = free_port(), free_port()
        self.a = "127.0.0.1:%d" % self.a_port
        self.b = "127.0.0.1:%d" % self.b_port
        self.relay: Optional[Relay] = Relay(self.b) if relay_b else None
        self.b_advertised = self.relay.address if self.relay else self.b
        peers = "--peers=%s,%s" % (self.a, self.b_advertised)
        self.a_metrics = "127.0.0.1:%d" % free_port()
        self.b_metrics = "127.0.0.1:%d" % free_port()
        common = ("--peer_secret_file=" + secret_file, peers, "--lease_grace=1s")
        self.servers = [
            server.Pyexecd(*common, "--advertise_address=" + self.a,
                           "--metrics_listen=" + self.a_metrics, listen=self.a),
            server.Pyexecd(*common, "--advertise_address=" + self.b_advertised,
                           "--metrics_listen=" + self.b_metrics, listen=self.b),
        ]

    def start(self) -> "Replicas":
        for s in self.servers:
            s.start()
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        if self.relay is not None:
            self.relay.close()

    def counts(self) -> Dict[str, float]:
        return {"a_forwarded": metric(self.a_metrics, "pyexec_forwarded_calls_total"),
                "a_eval": metric(self.a_metrics, "pyexec_rpcs_total", 'rpc="Eval"'),
                "b_eval": metric(self.b_metrics, "pyexec_rpcs_total", 'rpc="Eval"')}


def bind_on(address: str) -> str:
    """A session bound on that replica directly, without a lease (it
    outlives this helper client)."""
    with Client(address, timeout=30) as c:
        s = c.session(lease=False)
        s.bind()
        s.exec("n = 0")
        assert s.token is not None
        return s.token


def wait_until(pred: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


N = 20


def secret_file(case: Any) -> str:
    fd, path = tempfile.mkstemp(prefix="pyexec_peer_secret_")
    os.write(fd, os.urandom(16).hex().encode() + b"\n")
    os.close(fd)
    case.addClassCleanup(os.remove, path)
    return path


class OwnerRoutingTest(unittest.TestCase):
    """A and B as they are: B reachable at its advertised address."""

    r: Replicas

    @classmethod
    def setUpClass(cls) -> None:
        cls.r = Replicas(secret_file(cls))
        cls.addClassCleanup(cls.r.stop)
        cls.r.start()

    def test_calls_go_straight_to_the_owner(self) -> None:
        r = self.r
        token = bind_on(r.b)
        with Client(r.a, timeout=30) as c:  # the target: A
            s = c.attach(token)
            before = r.counts()
            self.assertEqual(s.eval("n"), 0)  # through A, forwarded to B
            after = r.counts()
            self.assertEqual(after["a_forwarded"] - before["a_forwarded"], 1)
            self.assertEqual(s.owner, r.b)  # learned from x-pyexec-owner
            # The channel to B connects; then calls go there directly.
            self.assertTrue(wait_until(lambda: c._owners.route(token) is not None))
            before = r.counts()
            for i in range(N):
                s.exec("n += 1")
                self.assertEqual(s.eval("n"), i + 1)
            after = r.counts()
            print("owner routing: %d calls, A forwarded %d, B served %d Evals"
                  % (2 * N, after["a_forwarded"] - before["a_forwarded"],
                     after["b_eval"] - before["b_eval"]))
            self.assertEqual(after["a_forwarded"], before["a_forwarded"])
            self.assertEqual(after["a_eval"], before["a_eval"])
            self.assertEqual(after["b_eval"] - before["b_eval"], N)
            # Streams and named interrupts follow the session too.
            self.assertEqual(list(s.call_stream("builtins", "range", [3]).items()), [0, 1, 2])
            running = s.start_exec("while True: pass", timeout=10)
            self.assertTrue(running.interrupt())
            with self.assertRaises(pyexec_client.Cancelled):
                running.result(10)
            self.assertEqual(r.counts()["a_forwarded"], before["a_forwarded"])
        # Without routing, every call goes through the target.
        with Client(r.a, timeout=30, route_to_owner=False) as c:
            s = c.attach(token)
            before = r.counts()
            for _ in range(5):
                s.eval("n")
            self.assertEqual(r.counts()["a_forwarded"] - before["a_forwarded"], 5)
            self.assertIsNone(c._owners.route(token))
        # A session bound through the target names its owner in Bind: A.
        with Client(r.a, timeout=30) as c, c.session() as s:
            self.assertEqual(s.eval("1"), 1)
            self.assertEqual(s.owner, r.a)

    def test_asyncio_calls_go_straight_to_the_owner(self) -> None:
        r = self.r
        token = bind_on(r.b)

        async def main() -> None:
            async with pyexec_client.aio.Client(r.a, timeout=30) as c:
                s = c.attach(token)
                self.assertEqual(await s.eval("n"), 0)
                self.assertEqual(s.owner, r.b)
                deadline = time.monotonic() + 10
                while c._owners.route(token) is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                before = r.counts()
                for i in range(N):
                    await s.exec("n += 1")
                    self.assertEqual(await s.eval("n"), i + 1)
                after = r.counts()
                self.assertEqual(after["a_forwarded"], before["a_forwarded"])
                self.assertEqual(after["b_eval"] - before["b_eval"], N)
        asyncio.run(main())


class UnreachableOwnerTest(unittest.TestCase):
    """B advertises a relay's address that the client cannot connect to."""

    def test_an_unreachable_owner_falls_back_to_the_target(self) -> None:
        r = Replicas(secret_file(type(self)), relay_b=True)
        self.addCleanup(r.stop)
        r.start()
        assert r.relay is not None
        token = bind_on(r.b)
        # A forwards a call through the relay (a client that does not route):
        # A's peer channel is through; from then on nobody new gets in.
        with Client(r.a, timeout=30, route_to_owner=False) as c:
            self.assertEqual(c.attach(token).eval("n"), 0)
        self.assertGreaterEqual(r.relay.accepted, 1)
        r.relay.stop_accepting()
        accepted = r.relay.accepted
        with Client(r.a, timeout=30) as c:
            s = c.attach(token)
            self.assertEqual(s.eval("n"), 0)
            self.assertEqual(s.owner, r.b_advertised)  # learned, not reachable
            before = r.counts()
            start = time.monotonic()
            for i in range(N):
                s.exec("n += 1")
                self.assertEqual(s.eval("n"), i + 1)
            took = time.monotonic() - start
            after = r.counts()
            print("owner unreachable: %d calls through the target in %.2f s, A forwarded %d"
                  % (2 * N, took, after["a_forwarded"] - before["a_forwarded"]))
            self.assertEqual(after["a_forwarded"] - before["a_forwarded"], 2 * N)
            self.assertEqual(r.relay.accepted, accepted)
            self.assertIsNone(c._owners.route(token))

        async def main() -> None:
            async with pyexec_client.aio.Client(r.a, timeout=30) as c:
                s = c.attach(token)
                for _ in range(5):
                    await s.exec("n += 1")
                self.assertEqual(await s.eval("n"), N + 5)
        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()
