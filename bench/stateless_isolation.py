"""Cost of isolating stateless calls between principals (issue 8, item 4).

Runs stateless Eval("1+1") for a fixed time against pyexecd builds in one go
and prints calls/s with ratios to the baseline measured in the same run:

  before      the baseline binary (--before, e.g. a build of an older main):
              one shared pool, no principals; it also lacks every other
              change since, so compare it loosely
  after/1     this build, no authentication (one principal ""): the baseline
              for the cost of isolation, same binary
  after/tok1  this build, tokens, every call by the same principal
  after/tok2  this build, tokens, two principals calling at once (their
              workers are not shared: a switch recycles a worker)
  after/alt   this build, tokens, two principals strictly alternating with
              one call in flight (worst case: every call needs a fresh worker
              unless a worker of that principal is idle)
  after/alt1  this build, no authentication, one call in flight: the
              baseline for after/alt

Usage (Debian's python3 with python3-grpcio; stubs as for integration_tests):
  /usr/bin/python3 bench/stateless_isolation.py --before=/opt/pyexec-dev/pyexecd \
      --after=bazel-bin/server/pyexecd --seconds=5 --inflight=8 --workers=4
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration_tests"))
import pyexecd_fixture as fx  # noqa: E402
from pyexecd_fixture import pb, pb_grpc  # noqa: E402

TOKENS = {"alice": "bench-token-alice-0123", "bob": "bench-token-bob-012345"}


def run_load(stub, seconds, inflight, metadata_for):
    """Keeps `inflight` calls open for `seconds`; returns calls/s.

    metadata_for(i) gives the metadata of the i-th call started."""
    lock = threading.Lock()
    done = threading.Event()
    state = {"started": 0, "finished": 0, "errors": 0, "stop": False}
    end = time.monotonic() + seconds

    def start_one():
        with lock:
            if state["stop"]:
                return
            i = state["started"]
            state["started"] += 1
        fut = stub.Eval.future(pb.EvalRequest(code="1+1"), metadata=metadata_for(i),
                               timeout=30)
        fut.add_done_callback(on_done)

    def on_done(fut):
        with lock:
            state["finished"] += 1
            if fut.exception() is not None:
                state["errors"] += 1
            if time.monotonic() >= end:
                state["stop"] = True
            if state["stop"] and state["finished"] == state["started"]:
                done.set()
        start_one()

    t0 = time.monotonic()
    for _ in range(inflight):
        start_one()
    done.wait(seconds + 60)
    elapsed = time.monotonic() - t0
    if state["errors"]:
        raise SystemExit("%d calls failed" % state["errors"])
    return state["finished"] / elapsed


def measure(binary, flags, workers, seconds, inflight, metadata_for):
    os.environ["PYEXECD"] = binary
    server = fx.Server(*flags, workers=workers, max_workers=16)
    server.start()
    try:
        stub = pb_grpc.PyExecStub(server.channel)
        run_load(stub, 1.0, inflight, metadata_for)  # warm-up
        return run_load(stub, seconds, inflight, metadata_for)
    finally:
        server.cleanup()
        server.remove_log()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3,
                    help="each configuration runs this many times, interleaved; "
                         "medians are reported (the VM is shared and noisy)")
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="pyexec_bench_")
    tokens = os.path.join(d, "tokens")
    with open(tokens, "w") as f:
        for p, t in TOKENS.items():
            f.write("%s %s\n" % (p, t))
    md = {p: (("authorization", "Bearer " + t),) for p, t in TOKENS.items()}
    none = lambda i: ()
    alice = lambda i: md["alice"]
    both = lambda i: md["alice"] if i % 2 == 0 else md["bob"]

    runs = [
        ("before", args.before, [], args.inflight, none),
        ("after/1", args.after, [], args.inflight, none),
        ("after/tok1", args.after, ["--auth_tokens_file=" + tokens], args.inflight, alice),
        ("after/tok2", args.after, ["--auth_tokens_file=" + tokens], args.inflight, both),
        ("after/alt", args.after, ["--auth_tokens_file=" + tokens], 1, both),
        ("after/alt1", args.after, [], 1, none),
        ("before/alt", args.before, [], 1, none),
    ]
    samples = {name: [] for name, *_ in runs}
    for r in range(args.rounds):
        for name, binary, flags, inflight, mdf in runs:
            samples[name].append(
                measure(binary, flags, args.workers, args.seconds, inflight, mdf))
        print("round %d: %s" % (r + 1, "  ".join("%s %.0f" % (n, v[-1])
                                                for n, v in samples.items())), flush=True)
    results = {name: statistics.median(v) for name, v in samples.items()}
    for name, _, _, inflight, _ in runs:
        print("%-11s %8.0f calls/s median  (in flight %d)" % (name, results[name], inflight))
    print("cost of isolation, same binary and run:")
    for name in ("after/tok1", "after/tok2"):
        print("  %-11s %.2fx of after/1" % (name, results[name] / results["after/1"]))
    print("  %-11s %.2fx of after/alt1 (one call in flight)"
          % ("after/alt", results["after/alt"] / results["after/alt1"]))
    print("against the older binary (same run):")
    print("  %-11s %.2fx of before" % ("after/1", results["after/1"] / results["before"]))
    print("  %-11s %.2fx of before/alt" % ("after/alt1",
                                            results["after/alt1"] / results["before/alt"]))


if __name__ == "__main__":
    main()
