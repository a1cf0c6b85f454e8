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
from pyexec_client import Client, Item, PyExecError, PythonError, Ref, Result, Stats, Stdout


def run_sync(target: str) -> Dict[str, object]:
    live: List[str] = []
    warnings: List[str] = []
    with Client(target, timeout=30, wait_for_ready=True, initial_reconnect_backoff=0.1,
                max_reconnect_backoff=1.0, on_stderr=warnings.append) as client:
        answer: int = client.eval("6*7")
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
                "workers": stats.num_workers > 0}


async def run_async(target: str) -> Dict[str, object]:
    chunks: List[str] = []

    async def on_stdout(text: str) -> None:
        chunks.append(text)
    async with pyexec_client.aio.Client(target, timeout=30) as client:
        async with client.session() as s:
            await s.exec("for i in range(3): print(i)", on_stdout=on_stdout)
            stream = await s.call_stream("builtins", "sorted", [[3, 1, 2]])
            items = [ev.value async for ev in stream if isinstance(ev, Item)]
            value: int = await s.eval("sum(x)", {"x": (1, 2, 3)})
    return {"aio_live": "".join(chunks), "aio_items": items, "aio_eval": value}


def main(argv: List[str]) -> int:
    report: Dict[str, object] = {"package": pyexec_client.__file__}
    report.update(run_sync(argv[1]))
    report.update(asyncio.run(run_async(argv[1])))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
