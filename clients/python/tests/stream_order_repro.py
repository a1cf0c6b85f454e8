"""Manual reproducer (not part of the suite): does pyexecd keep the order of a
stream's events under backpressure? Binds a session, streams an endless
counting generator, reads 40 items, cancels; repeats. Prints the runs whose
items are not 1..40 in order. Seen on the api branch (3cf51ec): 2-5 runs out
of 60, e.g. [1, 9, 10, ..., 26, 2, 3, ...]: a run of events read from the
worker on one thread (EventConsumed -> ResumeReading -> DecodeFrames, deferred
delivery) is overtaken by events the pool's I/O thread reads and delivers.

    PYEXECD=bazel-bin/server/pyexecd PYEXEC_CLIENT_STUBS=<gen_stubs.sh dir> \\
        python3 clients/python/tests/stream_order_repro.py
"""

import server  # noqa: F401 (puts the client package on sys.path)
import grpc
from pyexec_client import from_value
from pyexec_client._stubs import pb, pb_grpc

GEN = ("made = 0\n"
       "def forever():\n    global made\n    while True:\n        made += 1\n"
       "        yield made\n")
RUNS, ITEMS = 60, 40


def main() -> None:
    srv = server.Pyexecd(workers=2, max_workers=4).start()
    bad = 0
    try:
        stub = pb_grpc.PyExecStub(grpc.insecure_channel(srv.address))
        for i in range(RUNS):
            token = stub.Bind(pb.BindRequest(), timeout=10).session
            stub.Exec(pb.ExecRequest(session=token, code=GEN), timeout=10)
            stream = stub.CallStream(pb.CallRequest(session=token, module="__main__",
                                                    function="forever"), timeout=30)
            got = [from_value(next(stream).value) for _ in range(ITEMS)]
            stream.cancel()
            if got != list(range(1, ITEMS + 1)):
                bad += 1
                print("run %d out of order: %s" % (i, got))
            stub.Unbind(pb.UnbindRequest(session=token), timeout=10)
    finally:
        srv.stop()
    print("stream order: %d of %d runs out of order" % (bad, RUNS))


if __name__ == "__main__":
    main()
