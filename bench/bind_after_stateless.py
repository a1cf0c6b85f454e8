"""Bind latency with and without concurrent stateless calls just before (they
leave every warm worker used, so the Bind waits for a fresh spawn).

Usage: /usr/bin/python3 bench/bind_after_stateless.py (from the repo root;
the baseline is /opt/pyexec-dev/pyexecd, an older build)."""
import os, sys, time, statistics
sys.path.insert(0, "integration_tests")
import pyexecd_fixture as fx
from pyexecd_fixture import pb, pb_grpc
def run(binary, stateless_between):
    os.environ["PYEXECD"] = binary
    s = fx.Server(workers=4, max_workers=16).start()
    stub = pb_grpc.PyExecStub(s.channel)
    lat = []
    try:
        for i in range(30):
            if stateless_between:
                futs = [stub.Eval.future(pb.EvalRequest(code="__import__('time').sleep(0.01)"), timeout=10) for _ in range(8)]
                for f in futs: f.result()
            s.wait_pool_size(timeout=30)
            t = time.monotonic()
            tok = stub.Bind(pb.BindRequest(), timeout=30).session
            lat.append(time.monotonic() - t)
            stub.Unbind(pb.UnbindRequest(session=tok), timeout=10)
    finally:
        s.cleanup(); s.remove_log()
    return statistics.median(lat) * 1000, max(lat) * 1000
for name, b in (("before", "/opt/pyexec-dev/pyexecd"), ("after", "bazel-bin/server/pyexecd")):
    for sb in (False, True):
        print("%-6s stateless_between=%-5s bind median %.1f ms, max %.1f ms" % ((name, sb) + run(b, sb)), flush=True)
