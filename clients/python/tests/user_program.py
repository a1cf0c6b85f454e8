"""A user's program, fully typed. test_package runs it from outside the repo
against the installed package and a real pyexecd, and checks it with
`mypy --strict` against the installed package (PEP 561: py.typed).

    python user_program.py HOST:PORT      # prints one JSON object
"""

import asyncio
import json
import sys
from typing import Dict, List, Optional

import pyexec_client
import pyexec_client.aio
from pyexec_client import (Cancelled, Client, Item, PyExecError, PythonError, Ref, Result,
                           RunningCall, Snapshot, Stats, Stdout)


def run_sync(target: str) -> Dict[str, object]:
    live: List[str] = []
    warnings: List[str] = []
    with Client(target, timeout=30, wait_for_ready=True, initial_reconnect_backoff=0.1,
                max_reconnect_backoff=1.0, on_stderr=warnings.append) as client:
        answer: int = client.eval("6*7")

        @client.register_function
        def double(x: int) -> int:
            return 2 * x
        doubled: int = client.eval("pyexec.call('double', 21)")
        client.unregister_function("double")
        with client.session() as s:
            s.exec("import sys\nclass Box:\n    def __init__(self): self.n = 2\n"
                   "def squares(n):\n    for i in range(n): yield i * i\n")
            s.exec("print('live'); print('careful', file=sys.stderr)", on_stdout=live.append)
            box = s.eval("Box()")
            assert isinstance(box, Ref)
            n: int = s.getattr(box, "n")
            squares: List[int] = list(s.call_stream("__main__", "squares", [4]).items())
            events = [ev.text for ev in s.exec_stream("print('ev')") if isinstance(ev, Stdout)]
            released: int = s.release(box)
            running: RunningCall = s.start_exec("while True: pass")
            stopped = running.interrupt()
            try:
                running.result()
                stopped = False  # it ran on: the interrupt was lost
            except Cancelled:
                pass
            snap: Snapshot = s.snapshot()
        with client.session(restore=snap) as restored:
            restored_attr: int = restored.eval("Box().n")
        result: Result = client.call_result("builtins", "divmod", [7, 2])
        error: Optional[str] = None
        try:
            client.eval("1/0")
        except PythonError as e:
            error = e.type
        except PyExecError as e:  # any other failure of the service
            error = "service: %s" % e
        stats: Stats = client.stats()
        return {"eval": answer, "live": "".join(live), "warnings": "".join(warnings),
                "attr": n, "stream": squares, "events": events, "released": released,
                "divmod": list(result.value), "error": error,
                "workers": stats.num_workers > 0, "callback": doubled, "interrupted": stopped,
                "restored": restored_attr}


async def run_async(target: str) -> Dict[str, object]:
    chunks: List[str] = []

    async def on_stdout(text: str) -> None:
        chunks.append(text)
    async with pyexec_client.aio.Client(target, timeout=30) as client:
        @client.register_function("fetch")
        async def fetch(key: str) -> str:
            return key.upper()
        async with client.session() as s:
            fetched: str = await s.eval("pyexec.call('fetch', 'k')")
            running = await s.start_exec("while True: pass")
            stopped = await running.interrupt()
            try:
                await running
                stopped = False
            except Cancelled:
                pass
            await s.exec("for i in range(3): print(i)", on_stdout=on_stdout)
            stream = await s.call_stream("builtins", "sorted", [[3, 1, 2]])
            items = [ev.value async for ev in stream if isinstance(ev, Item)]
            value: int = await s.eval("sum(x)", {"x": (1, 2, 3)})
    return {"aio_live": "".join(chunks), "aio_items": items, "aio_eval": value,
            "aio_callback": fetched, "aio_interrupted": stopped}


def main(argv: List[str]) -> int:
    report: Dict[str, object] = {"package": pyexec_client.__file__}
    report.update(run_sync(argv[1]))
    report.update(asyncio.run(run_async(argv[1])))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
