"""Client options against a real pyexecd: live output callbacks (on_stdout,
on_stderr), wait_for_ready, and the reconnect back-off."""

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
import unittest
from typing import Any, Iterator, List, Tuple

import grpc

import server
import pyexec_client.aio
from pyexec_client import Client, InvalidArgument, PythonError, Timeout, Unavailable

# The code prints, then waits for a file that the test creates only from
# inside its on_stdout callback, then prints again. If the first chunk
# reached the callback only when the call ended, the call could never end:
# it would run into its deadline (Timeout) instead.
WAIT_FOR_MARKER = ("import os, sys, time\n"
                   "print('first')\n"
                   "print('warn', file=sys.stderr)\n"
                   "while not os.path.exists({path!r}):\n"
                   "    time.sleep(0.01)\n"
                   "print('second')\n")


def marker_path(test: unittest.TestCase) -> str:
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    # Workers run as an unprivileged user when the tests run as root.
    os.chmod(tmp.name, 0o777)
    return os.path.join(tmp.name, "go-on")


def touch(path: str) -> None:
    open(path, "w").close()


def joined(chunks: List[str]) -> str:
    return "".join(chunks)


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port nothing listens on, kept bound (SO_REUSEPORT, not
    listening) so that no other socket takes it: connections to it are
    refused, and a gRPC server (which sets SO_REUSEPORT) can still listen
    on it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


class SyncLiveOutputTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def client(self, **options: Any) -> Client:
        c = Client(self.server.address, timeout=20, num_contexts=1, **options)
        self.addCleanup(c.close)
        return c

    def test_exec_output_reaches_the_callbacks_while_it_runs(self) -> None:
        path = marker_path(self)
        out: List[str] = []
        err: List[str] = []

        def on_stdout(text: str) -> None:
            out.append(text)
            if "first\n" in joined(out):
                touch(path)
        with self.client().session() as s:
            r = s.exec_result(WAIT_FOR_MARKER.format(path=path), on_stdout=on_stdout,
                              on_stderr=err.append)
            self.assertEqual(joined(out), "first\nsecond\n")
            self.assertEqual(joined(err), "warn\n")
            # Output that went to a callback is not also in the Result.
            self.assertEqual((r.value, r.stdout, r.stderr), (None, "", ""))
            # exec() too, stateless, with only on_stdout: stderr stays in the Result.
            out.clear()
            os.unlink(path)
            r = self.client().exec_result(WAIT_FOR_MARKER.format(path=path),
                                          on_stdout=on_stdout)
            self.assertEqual(joined(out), "first\nsecond\n")
            self.assertEqual((r.stdout, r.stderr), ("", "warn\n"))

    def test_python_error_after_live_output(self) -> None:
        out: List[str] = []
        with self.assertRaises(PythonError) as cm:
            self.client().exec("import sys\nprint('a')\nprint('b', file=sys.stderr)\n"
                               "raise KeyError('k')", on_stdout=out.append)
        self.assertEqual(joined(out), "a\n")
        self.assertEqual(cm.exception.type, "KeyError")
        self.assertIn("raise KeyError", cm.exception.traceback)
        self.assertEqual((cm.exception.stdout, cm.exception.stderr), ("", "b\n"))

    def test_client_callbacks_apply_to_every_call(self) -> None:
        path = marker_path(self)
        out: List[str] = []
        err: List[str] = []

        def on_stdout(text: str) -> None:
            out.append(text)
            if "first\n" in joined(out):
                touch(path)
        c = self.client(on_stdout=on_stdout, on_stderr=err.append)
        c.exec(WAIT_FOR_MARKER.format(path=path))  # live through the client's callbacks
        self.assertEqual((joined(out), joined(err)), ("first\nsecond\n", "warn\n"))
        # Eval and Call have no streaming RPC: their output comes when they return.
        out.clear()
        err.clear()
        r = c.eval_result("print('e') or 7")
        self.assertEqual((r.value, r.stdout, r.stderr), (7, "", ""))
        self.assertEqual(joined(out), "e\n")
        self.assertEqual(c.call("builtins", "print", ["c"]), None)
        self.assertEqual(joined(out), "e\nc\n")
        with self.assertRaises(PythonError) as cm:
            c.eval("print('before') or 1/0")
        self.assertEqual(joined(out), "e\nc\nbefore\n")
        self.assertEqual(cm.exception.stdout, "")
        # A call's own callback takes precedence over the client's.
        mine: List[str] = []
        c.exec("print('mine')", on_stdout=mine.append)
        self.assertEqual((joined(mine), joined(out)), ("mine\n", "e\nc\nbefore\n"))
        # Streams call them too, in the order of the events.
        log: List[Tuple[str, Any]] = []
        with c.session() as s:
            s.exec("def gen(n):\n    for i in range(n):\n        print('making', i)\n"
                   "        yield i\n")
            for value in s.call_stream("__main__", "gen", [3],
                                       on_stdout=lambda t: log.append(("out", t))).items():
                log.append(("item", value))
        self.assertEqual(merge_log(log), [("out", "making 0\n"), ("item", 0),
                                          ("out", "making 1\n"), ("item", 1),
                                          ("out", "making 2\n"), ("item", 2)])

    def test_a_callback_that_raises_cancels_the_call(self) -> None:
        class Stop(Exception):
            pass

        def stop(text: str) -> None:
            raise Stop(text)
        c = self.client()
        with c.session() as s:
            s.exec("x = 1")
            start = time.monotonic()
            with self.assertRaises(Stop):
                s.exec("import time\nwhile True:\n    print('tick')\n    time.sleep(0.01)",
                       on_stdout=stop)
            # The endless loop was interrupted: the session answers at once.
            self.assertEqual(s.eval("x", timeout=10), 1)
            self.assertLess(time.monotonic() - start, 10)

    def test_bad_callbacks_are_refused(self) -> None:
        with self.assertRaises(InvalidArgument):
            Client(self.server.address, on_stdout="print")  # type: ignore[arg-type]
        with self.assertRaises(InvalidArgument):
            self.client().exec("1", on_stderr=42)  # type: ignore[arg-type]


def merge_log(log: List[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    """Adjacent output chunks joined (a line may come in more than one)."""
    out: List[Tuple[str, Any]] = []
    for kind, x in log:
        if out and kind == "out" and out[-1][0] == "out":
            out[-1] = ("out", out[-1][1] + x)
        else:
            out.append((kind, x))
    return out


class AsyncLiveOutputTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_plain_and_coroutine_callbacks(self) -> None:
        path = marker_path(self)
        out: List[str] = []
        err: List[str] = []

        async def on_stdout(text: str) -> None:
            await asyncio.sleep(0)  # a real coroutine: it must be awaited
            out.append(text)
            if "first\n" in joined(out):
                touch(path)

        async def main() -> None:
            async with pyexec_client.aio.Client(self.server.address, timeout=20,
                                                on_stderr=err.append) as c:
                async with c.session() as s:
                    r = await s.exec_result(WAIT_FOR_MARKER.format(path=path),
                                            on_stdout=on_stdout)
                    self.assertEqual((r.stdout, r.stderr), ("", ""))
                    self.assertEqual(joined(out), "first\nsecond\n")
                    self.assertEqual(joined(err), "warn\n")
                    out.clear()
                    self.assertEqual(await s.eval("print('v') or 5", on_stdout=on_stdout), 5)
                    self.assertEqual(joined(out), "v\n")
                    with self.assertRaises(PythonError) as cm:
                        await s.exec("print('p')\nraise ValueError", on_stdout=on_stdout)
                    self.assertEqual(joined(out), "v\np\n")
                    self.assertEqual(cm.exception.type, "ValueError")
                    # A stream awaits a coroutine callback before it returns the event.
                    log: List[Tuple[str, Any]] = []

                    async def logged(text: str) -> None:
                        await asyncio.sleep(0)
                        log.append(("out", text))
                    await s.exec("def gen(n):\n    for i in range(n):\n"
                                 "        print('making', i)\n        yield i\n")
                    stream = await s.call_stream("__main__", "gen", [2], on_stdout=logged)
                    async for value in stream.items():
                        log.append(("item", value))
                    self.assertEqual(merge_log(log), [("out", "making 0\n"), ("item", 0),
                                                      ("out", "making 1\n"), ("item", 1)])
        asyncio.run(asyncio.wait_for(main(), 60))


class WaitForReadyTest(unittest.TestCase):
    """wait_for_ready and the reconnect back-off, with no server at first."""

    def test_without_wait_for_ready_a_call_fails_fast(self) -> None:
        with reserved_port() as port, Client("127.0.0.1:%d" % port, timeout=30) as c:
            start = time.monotonic()
            with self.assertRaises(Unavailable):
                c.eval("1")
            self.assertLess(time.monotonic() - start, 10)

    def test_call_waits_until_the_server_starts(self) -> None:
        with reserved_port() as port:
            c = Client("127.0.0.1:%d" % port, timeout=30, wait_for_ready=True,
                       initial_reconnect_backoff=0.05, max_reconnect_backoff=0.2)
            self.addCleanup(c.close)
            failed = threading.Event()

            def on_state(state: grpc.ChannelConnectivity) -> None:
                if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    failed.set()
            c._channel.subscribe(on_state)
            results: List[Any] = []
            t = threading.Thread(target=lambda: results.append(c.eval("6*7")))
            t.start()
            # The call is in flight and has seen a refused connection.
            self.assertTrue(failed.wait(10), "the channel never tried to connect")
            self.assertTrue(t.is_alive(), "the call ended before the server started")
            srv = server.Pyexecd(workers=1, max_workers=2,
                                 listen="127.0.0.1:%d" % port).start()
            self.addCleanup(srv.stop)
        t.join(20)
        self.assertFalse(t.is_alive())
        self.assertEqual(results, [42])
        c._channel.unsubscribe(on_state)

    def test_async_call_waits_until_the_server_starts(self) -> None:
        async def main() -> None:
            with reserved_port() as port:
                async with pyexec_client.aio.Client(
                        "127.0.0.1:%d" % port, timeout=30, wait_for_ready=True,
                        initial_reconnect_backoff=0.05, max_reconnect_backoff=0.2) as c:
                    task = asyncio.ensure_future(c.eval("6*7"))
                    channel = c._channel
                    state = channel.get_state()
                    while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                        await asyncio.wait_for(channel.wait_for_state_change(state), 10)
                        state = channel.get_state()
                    self.assertFalse(task.done(), "the call ended before the server started")
                    srv = server.Pyexecd(workers=1, max_workers=2,
                                         listen="127.0.0.1:%d" % port).start()
                    self.addCleanup(srv.stop)
                    self.assertEqual(await asyncio.wait_for(task, 20), 42)
        asyncio.run(main())

    def test_wait_for_ready_waits_until_the_deadline(self) -> None:
        with reserved_port() as port, Client("127.0.0.1:%d" % port, timeout=1,
                                             wait_for_ready=True) as c:
            start = time.monotonic()
            with self.assertRaises(Timeout):
                c.eval("1")
            self.assertGreaterEqual(time.monotonic() - start, 0.9)

    def test_cleanup_never_waits_for_a_connection(self) -> None:
        # No deadline at all: Unbind (a `with` block's end, close()) must
        # still return, failing fast, where a call would wait forever.
        with reserved_port() as port:
            c = Client("127.0.0.1:%d" % port, wait_for_ready=True)
            errors: List[BaseException] = []

            def clean_up() -> None:
                try:
                    with c.attach("token-of-a-gone-server"):
                        pass
                except BaseException as e:  # noqa: BLE001 (checked below)
                    errors.append(e)
                c.context(1)._session = "another-token"  # as if bound before the server went
                c.close()
            t = threading.Thread(target=clean_up, daemon=True)
            t.start()
            t.join(10)
            if t.is_alive():
                c._channel.close()  # ends the waiting call, and the thread
                self.fail("cleanup waited for a connection")
        self.assertEqual([type(e) for e in errors], [Unavailable])

    def test_reconnect_backoff_reaches_the_channel(self) -> None:
        # A listener that accepts and closes every connection: each accept
        # is one connection attempt, and a failed attempt starts the
        # back-off. Counted over the same window for three settings, run side
        # by side: grpc's defaults (1 s, growing 1.6x), a short first delay
        # that still grows, and a short first delay capped short.
        window = 3.0
        settings = {"default": {}, "initial": {"initial_reconnect_backoff": 0.05},
                    "capped": {"initial_reconnect_backoff": 0.05,
                               "max_reconnect_backoff": 0.1}}
        counts = {}
        errors: List[BaseException] = []

        def attempts(name: str) -> None:
            try:
                counts[name] = count_attempts(name)
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        def count_attempts(name: str) -> int:
            with contextlib.closing(socket.socket()) as ls:
                ls.bind(("127.0.0.1", 0))
                ls.listen(64)
                accepted = [0]

                def accept() -> None:
                    while True:
                        try:
                            conn, _ = ls.accept()
                        except OSError:
                            return
                        accepted[0] += 1
                        conn.close()
                threading.Thread(target=accept, daemon=True).start()
                with Client("127.0.0.1:%d" % ls.getsockname()[1], wait_for_ready=True,
                            **settings[name]) as c:
                    with self.assertRaises(Timeout):
                        c.eval("1", timeout=window)
                ls.shutdown(socket.SHUT_RDWR)
                return accepted[0]
        threads = [threading.Thread(target=attempts, args=(name,)) for name in settings]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        # Expected about 3, 8 and 30.
        self.assertLessEqual(counts["default"], 4, counts)
        self.assertGreaterEqual(counts["initial"], 5, counts)
        self.assertLessEqual(counts["initial"], 12, counts)
        self.assertGreaterEqual(counts["capped"], 15, counts)

    def test_bad_backoff_options_are_refused(self) -> None:
        for options in ({"initial_reconnect_backoff": 0},
                        {"max_reconnect_backoff": -1},
                        {"initial_reconnect_backoff": float("nan")},
                        {"initial_reconnect_backoff": "1"},
                        {"initial_reconnect_backoff": 2, "max_reconnect_backoff": 1}):
            with self.subTest(options=options), self.assertRaises(InvalidArgument):
                Client("127.0.0.1:1", **options)
        c = Client("127.0.0.1:1", initial_reconnect_backoff=0.25, max_reconnect_backoff=3)
        self.addCleanup(c.close)
        self.assertIn(("grpc.initial_reconnect_backoff_ms", 250), c.options.channel_options)
        self.assertIn(("grpc.max_reconnect_backoff_ms", 3000), c.options.channel_options)


if __name__ == "__main__":
    unittest.main()
