"""Python client bench: 1-connection Eval p50 and throughput of pyexec_client
against pyexecd, next to grpcio's own figure against the bare echo server
(bench/echo_server_main.cc) in the same run.

  clients/python/bench.py [--seconds=3] [--inflight=16]

Starts pyexecd ($PYEXECD, else bazel-bin/server/pyexecd) and the echo server
($ECHO_SERVER, else bazel-bin/bench/echo_server_main) on port 0. Prints ratios;
nothing here asserts a speed. The stubs come from $PYEXEC_CLIENT_STUBS, else
are generated into a temporary directory, removed at the end.
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
import server  # noqa: E402  (also puts clients/python on sys.path)
import build_stubs  # noqa: E402

STUB_DIR = tempfile.mkdtemp(prefix="pyexec_bench_")
if not os.environ.get("PYEXEC_CLIENT_STUBS"):
    os.environ["PYEXEC_CLIENT_STUBS"] = STUB_DIR
    build_stubs.generate(STUB_DIR)
import grpc  # noqa: E402
import pyexec_client  # noqa: E402
import pyexec_client.aio  # noqa: E402
from pyexec_client._stubs import pb, pb_grpc  # noqa: E402


def echo_stubs(out: str):
    subprocess.run(["protoc", "-I", os.path.join(server.REPO, "bench"), "--python_out=" + out,
                    "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    os.path.join(server.REPO, "bench", "echo.proto")], check=True)
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc


class EchoServer(server.Pyexecd):
    def __init__(self) -> None:
        super().__init__()
        self.flags = ["--listen=127.0.0.1:0"]

    def start(self) -> "EchoServer":
        path = os.environ.get("ECHO_SERVER") or os.path.join(server.REPO, "bazel-bin", "bench",
                                                             "echo_server_main")
        os.environ["PYEXECD"], saved = path, os.environ.get("PYEXECD")
        try:
            return super().start()
        finally:
            if saved is None:
                del os.environ["PYEXECD"]
            else:
                os.environ["PYEXECD"] = saved


def sequential(fn, seconds: float):
    """Runs fn() back to back for `seconds`; returns (p50 µs, p99 µs, calls/s)."""
    for _ in range(200):
        fn()
    lat = []
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        if t1 >= end:
            break
    lat.sort()
    return (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6,
            len(lat) / (time.perf_counter() - start))


async def concurrent(make_call, seconds: float, inflight: int) -> float:
    """`inflight` tasks on one channel; returns calls/s."""
    count = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < end:
            await make_call()
            count += 1
    for _ in range(50):
        await make_call()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--inflight", type=int, default=16)
    args = ap.parse_args()
    echo_pb2, echo_pb2_grpc = echo_stubs(STUB_DIR)
    pyexecd = server.Pyexecd(workers=2, max_workers=4).start()
    echo = EchoServer().start()
    try:
        rows = []
        client = pyexec_client.Client(pyexecd.address, timeout=30)
        rows.append(("pyexec_client.Client.eval('1')",
                     sequential(lambda: client.eval("1"), args.seconds)))
        raw = pb_grpc.PyExecStub(grpc.insecure_channel(pyexecd.address))
        req = pb.EvalRequest(code="1")
        rows.append(("grpcio stub Eval('1') (no client layer)",
                     sequential(lambda: raw.Eval(req, timeout=30), args.seconds)))
        echo_stub = echo_pb2_grpc.EchoStub(grpc.insecure_channel(echo.address))
        ereq = echo_pb2.EchoRequest(payload=b"1")
        rows.append(("grpcio stub Echo (bare echo server)",
                     sequential(lambda: echo_stub.Echo(ereq, timeout=30), args.seconds)))
        print("1 connection, sequential, %.0fs each:" % args.seconds)
        base = rows[-1][1]
        for name, (p50, p99, rate) in rows:
            print("  %-42s p50 %7.1f us  p99 %7.1f us  %8.0f calls/s  (p50 %.2fx echo)"
                  % (name, p50, p99, rate, p50 / base[0]))

        async def aio_rates():
            async with pyexec_client.aio.Client(pyexecd.address, timeout=30) as c:
                a = await concurrent(lambda: c.eval("1"), args.seconds, args.inflight)
            ch = grpc.aio.insecure_channel(echo.address)
            st = echo_pb2_grpc.EchoStub(ch)
            b = await concurrent(lambda: st.Echo(ereq, timeout=30), args.seconds, args.inflight)
            await ch.close()
            return a, b
        # Streams: items/s of a generator through call_stream, against the
        # raw grpcio stub and against one Eval per item, in this run.
        n = 20000
        with client.session() as sess:
            sess.exec("def gen(n):\n    yield from range(n)\n")
            rates = []
            for label, consume in (
                    ("pyexec_client call_stream items", lambda: sum(
                        1 for _ in sess.call_stream("__main__", "gen", [n]).items())),
                    ("grpcio stub CallStream values", lambda: sum(
                        1 for ev in raw.CallStream(pb.CallRequest(
                            session=sess.token, module="__main__", function="gen",
                            args=[pyexec_client.to_value(n)]), timeout=60)
                        if ev.WhichOneof("event") == "value"))):
                t0 = time.perf_counter()
                got = consume()
                rates.append((label, got / (time.perf_counter() - t0)))
                assert got == n, (label, got)
        per_call = rows[0][1][2]
        print("streams, %d-item generator on a session:" % n)
        for label, rate in rates:
            print("  %-42s %8.0f items/s  (%.1fx one Eval per item)"
                  % (label, rate, rate / per_call))
        a, b = asyncio.run(aio_rates())
        print("1 connection, asyncio, %d calls in flight:" % args.inflight)
        print("  %-42s %8.0f calls/s  (%.2fx echo)" % ("pyexec_client.aio.Client.eval('1')", a,
                                                      a / b))
        print("  %-42s %8.0f calls/s" % ("grpcio aio stub Echo (bare echo server)", b))
        client.close()
    finally:
        pyexecd.stop()
        echo.stop()
        shutil.rmtree(STUB_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
