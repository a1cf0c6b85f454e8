"""The conformance runner (clients/conformance/README.md) for pyexec_client.

Every case runs through the client's public API, sync or asyncio. The sync
client is driven from coroutines too, so that one runner serves both; its
calls simply block.
"""

import asyncio
import base64
import contextlib
import json
import math
import os
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

import server  # noqa: F401  (puts the client package on sys.path)
import pyexec_client
import pyexec_client.aio
from pyexec_client import (Cancelled, InvalidArgument, Opaque, PoolExhausted, PythonError, Ref,
                           SessionNotFound, Timeout)

VECTORS = os.environ.get("PYEXEC_CONFORMANCE") or os.path.join(
    server.REPO, "clients", "conformance", "vectors.json")

ERROR_CLASSES = {
    "session_not_found": SessionNotFound,
    "timeout": Timeout,
    "invalid_argument": InvalidArgument,
    "resource_exhausted": PoolExhausted,
}
UNKNOWN_TOKEN = "0000000000000000deadbeefdeadbeef"


class CaseFailure(Exception):
    pass


def _tag(tagged: Dict[str, Any]) -> Tuple[str, Any]:
    if not isinstance(tagged, dict) or len(tagged) != 1:
        raise CaseFailure("malformed tagged value %r" % (tagged,))
    return next(iter(tagged.items()))


def _float(x: Any) -> float:
    return float(x)  # also "nan", "inf", "-inf"


def to_native(tagged: Dict[str, Any], hashable: bool = False) -> Any:
    tag, x = _tag(tagged)
    if tag == "none":
        return None
    if tag == "bool":
        return bool(x)
    if tag == "int":
        return int(x)
    if tag == "float":
        return _float(x)
    if tag == "str":
        return x
    if tag == "bytes":
        return base64.b64decode(x)
    if tag == "list":
        return [to_native(i) for i in x]
    if tag == "tuple":
        return tuple(to_native(i, hashable) for i in x)
    if tag == "set":
        items = [to_native(i, True) for i in x]
        return frozenset(items) if hashable else set(items)
    if tag == "dict":
        return {to_native(k, True): to_native(v) for k, v in x}
    if tag == "opaque":
        return Opaque(x["type"], x.get("repr", ""))
    raise CaseFailure("unknown tag %r" % tag)


def matches(got: Any, tagged: Dict[str, Any]) -> bool:
    """Kind-exact comparison of a native value with a tagged expectation."""
    tag, x = _tag(tagged)
    if tag == "none":
        return got is None
    if tag == "bool":
        return type(got) is bool and got == x
    if tag == "int":
        return type(got) is int and got == int(x)
    if tag == "float":
        want = _float(x)
        return type(got) is float and (got == want or (math.isnan(got) and math.isnan(want)))
    if tag == "str":
        return type(got) is str and got == x
    if tag == "bytes":
        return type(got) is bytes and got == base64.b64decode(x)
    if tag in ("list", "tuple"):
        return (type(got) is (list if tag == "list" else tuple) and len(got) == len(x)
                and all(matches(g, e) for g, e in zip(got, x)))
    if tag == "set":
        return (type(got) in (set, frozenset) and len(got) == len(x)
                and _match_unordered(list(got), x, lambda g, e: matches(g, e)))
    if tag == "dict":
        return (type(got) is dict and len(got) == len(x)
                and _match_unordered(list(got.items()), x,
                                     lambda g, e: matches(g[0], e[0]) and matches(g[1], e[1])))
    if tag == "opaque":
        return (isinstance(got, Opaque) and got.type == x["type"]
                and ("repr" not in x or got.repr == x["repr"]))
    raise CaseFailure("unknown tag %r" % tag)


def _match_unordered(got: List[Any], want: List[Any], eq: Callable[[Any, Any], bool]) -> bool:
    left = list(got)
    for w in want:
        for i, g in enumerate(left):
            if eq(g, w):
                del left[i]
                break
        else:
            return False
    return not left


class SyncApi:
    """Adapts pyexec_client.Client to the runner's coroutines."""

    def __init__(self, client: pyexec_client.Client) -> None:
        self.client = client
        self.races: List[str] = []

    async def eval(self, target: Any, code: str, locals: Any = None,
                   timeout: Optional[float] = None, functions: Any = None) -> Any:
        return target.eval(code, locals, timeout=timeout, functions=functions)

    async def exec(self, target: Any, code: str, locals: Any = None,
                   timeout: Optional[float] = None, functions: Any = None) -> None:
        target.exec(code, locals, timeout=timeout, functions=functions)

    async def stream(self, target: Any, module: str, function: str, args: Any,
                     kwargs: Any) -> List[Any]:
        return list(target.call_stream(module, function, args, kwargs).items())

    async def release(self, s: Any, ref: Any) -> int:
        return int(s.release(ref))

    @contextlib.asynccontextmanager
    async def behaviours(self, functions: Dict[str, Any], session: Any) -> AsyncIterator[None]:
        """Registers the case's functions (callback behaviours) for its span."""
        release = threading.Event()  # lets "never" callbacks go at the end

        def make(behaviour: Any) -> Callable[..., Any]:
            if behaviour == "return_args":
                return lambda *args: list(args)
            if behaviour == "never":
                return lambda *args: release.wait(60)
            if behaviour == "reenter":
                return lambda n: session.call("__main__", "down", [n]) + 1
            if isinstance(behaviour, dict) and "return" in behaviour:
                value = to_native(behaviour["return"])
                return lambda *args: value
            if isinstance(behaviour, dict) and "raise" in behaviour:
                message = behaviour["raise"]

                def fail(*args: Any) -> Any:
                    raise LookupError(message)
                return fail
            raise CaseFailure("unknown callback behaviour %r" % (behaviour,))
        for name, behaviour in functions.items():
            self.client.register_function(name, make(behaviour))
        try:
            yield
        finally:
            release.set()
            for name in functions:
                self.client.unregister_function(name)

    @contextlib.asynccontextmanager
    async def other_client(self) -> AsyncIterator[Any]:
        c = pyexec_client.Client(self.client.options.target, timeout=30)
        try:
            yield c
        finally:
            c.close()

    async def interrupt_race(self, s: Any, rounds: int) -> Tuple[int, float]:
        """(lost rounds, seconds): start_exec, then at once interrupt() it."""
        lost = 0
        start = time.monotonic()
        for _ in range(rounds):
            running = s.start_exec("while True: pass", timeout=10)
            interrupted = running.interrupt()
            try:
                running.result()
                lost += 1
            except Cancelled:
                lost += 0 if interrupted else 1
            except pyexec_client.PyExecError:
                lost += 1
        return lost, time.monotonic() - start

    async def call(self, target: Any, module: str, function: str, args: Any, kwargs: Any) -> Any:
        return target.call(module, function, args, kwargs)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        with self.client.session() as s:
            yield s

    async def bind(self) -> Any:
        return self.client.session().bind()

    async def bind_on(self, client: Any) -> Any:
        return client.session().bind()

    async def unbind(self, s: Any) -> None:
        s.unbind()


class AsyncApi:
    """Adapts pyexec_client.aio.Client to the runner's coroutines."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.races: List[str] = []

    async def eval(self, target: Any, code: str, locals: Any = None,
                   timeout: Optional[float] = None, functions: Any = None) -> Any:
        return await target.eval(code, locals, timeout=timeout, functions=functions)

    async def exec(self, target: Any, code: str, locals: Any = None,
                   timeout: Optional[float] = None, functions: Any = None) -> None:
        await target.exec(code, locals, timeout=timeout, functions=functions)

    async def stream(self, target: Any, module: str, function: str, args: Any,
                     kwargs: Any) -> List[Any]:
        stream = await target.call_stream(module, function, args, kwargs)
        return [v async for v in stream.items()]

    async def release(self, s: Any, ref: Any) -> int:
        return int(await s.release(ref))

    @contextlib.asynccontextmanager
    async def behaviours(self, functions: Dict[str, Any], session: Any) -> AsyncIterator[None]:
        """Registers the case's functions as coroutine functions."""
        def make(behaviour: Any) -> Callable[..., Any]:
            if behaviour == "return_args":
                async def return_args(*args: Any) -> Any:
                    return list(args)
                return return_args
            if behaviour == "never":
                async def never(*args: Any) -> Any:
                    await asyncio.sleep(60)  # cancelled when the call ends
                return never
            if behaviour == "reenter":
                async def reenter(n: int) -> Any:
                    return await session.call("__main__", "down", [n]) + 1
                return reenter
            if isinstance(behaviour, dict) and "return" in behaviour:
                value = to_native(behaviour["return"])

                async def give(*args: Any) -> Any:
                    return value
                return give
            if isinstance(behaviour, dict) and "raise" in behaviour:
                message = behaviour["raise"]

                async def fail(*args: Any) -> Any:
                    raise LookupError(message)
                return fail
            raise CaseFailure("unknown callback behaviour %r" % (behaviour,))
        for name, behaviour in functions.items():
            self.client.register_function(name, make(behaviour))
        try:
            yield
        finally:
            for name in functions:
                self.client.unregister_function(name)

    @contextlib.asynccontextmanager
    async def other_client(self) -> AsyncIterator[Any]:
        c = pyexec_client.aio.Client(self.client.options.target, timeout=30)
        try:
            yield c
        finally:
            await c.close()

    async def interrupt_race(self, s: Any, rounds: int) -> Tuple[int, float]:
        lost = 0
        start = time.monotonic()
        for _ in range(rounds):
            running = await s.start_exec("while True: pass", timeout=10)
            interrupted = await running.interrupt()
            try:
                await running
                lost += 1
            except Cancelled:
                lost += 0 if interrupted else 1
            except pyexec_client.PyExecError:
                lost += 1
        return lost, time.monotonic() - start

    async def call(self, target: Any, module: str, function: str, args: Any, kwargs: Any) -> Any:
        return await target.call(module, function, args, kwargs)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        async with self.client.session() as s:
            yield s

    async def bind(self) -> Any:
        return await self.client.session().bind()

    async def bind_on(self, client: Any) -> Any:
        return await client.session().bind()

    async def unbind(self, s: Any) -> None:
        await s.unbind()


async def _expect_error(case: Dict[str, Any], coro: Any) -> None:
    cls = ERROR_CLASSES.get(case["expect"])
    if cls is None:
        raise CaseFailure("unknown error class %r" % case["expect"])
    try:
        value = await coro
    except cls:
        return
    except pyexec_client.PyExecError as err:
        raise CaseFailure("expected %s, got %s: %s" % (cls.__name__, type(err).__name__, err))
    raise CaseFailure("expected %s, got value %r" % (cls.__name__, value))


async def run_case(api: Any, case: Dict[str, Any]) -> None:
    kind = case["kind"]
    c = api.client
    if kind == "roundtrip":
        native = to_native(case["value"])
        got = await api.eval(c, "x", {"x": native})
        if not matches(got, case["value"]):
            raise CaseFailure("round trip gave %r" % (got,))
        if "python_type" in case:
            t = await api.eval(c, "type(x).__name__", {"x": native})
            if t != case["python_type"]:
                raise CaseFailure("server saw type %r, want %r" % (t, case["python_type"]))
    elif kind in ("eval", "call"):
        async def op(target: Any) -> Any:
            if kind == "eval":
                return await api.eval(target, case["code"])
            args = [to_native(a) for a in case["args"]]
            kwargs = {k: to_native(v) for k, v in case.get("kwargs", {}).items()}
            return await api.call(target, case["module"], case["function"], args, kwargs)
        if "setup" in case:
            async with api.session() as s:
                await api.exec(s, case["setup"])
                got = await op(s)
        else:
            got = await op(c)
        if not matches(got, case["expect"]):
            raise CaseFailure("got %r, want %s" % (got, json.dumps(case["expect"])))
    elif kind == "python_error":
        want = case["error"]
        if case["op"] not in ("eval", "exec"):
            raise CaseFailure("unknown op %r" % case["op"])
        try:
            if case["op"] == "eval":
                got = await api.eval(c, case["code"])
            else:
                got = await api.exec(c, case["code"])
        except PythonError as err:
            if err.type != want["type"]:
                raise CaseFailure("type %r, want %r" % (err.type, want["type"]))
            if want["message_contains"] not in err.message:
                raise CaseFailure("message %r lacks %r" % (err.message, want["message_contains"]))
            if want["traceback_contains"] not in err.traceback:
                raise CaseFailure("traceback %r lacks %r"
                                  % (err.traceback, want["traceback_contains"]))
        else:
            raise CaseFailure("no PythonError; got %r" % (got,))
    elif kind == "status":
        await run_status(api, case)
    elif kind == "stream":
        await run_stream(api, case)
    elif kind == "ref":
        await run_ref(api, case)
    elif kind == "callback":
        await run_callback(api, case)
    elif kind == "lease":
        await run_lease(api, case)
    elif kind == "interrupt_race":
        async with api.session() as s:
            lost, seconds = await api.interrupt_race(s, int(case["rounds"]))
        line = ("interrupt_race (%s): %d rounds, %d lost, %.2f s"
                % (type(api).__name__, case["rounds"], lost, seconds))
        print("conformance " + line)
        api.races.append(line)
        if lost:
            raise CaseFailure("%d of %d interrupts lost" % (lost, case["rounds"]))
    else:
        raise CaseFailure("unknown kind %r" % kind)


def _check_items(got: List[Any], want: List[Any]) -> None:
    if len(got) != len(want) or not all(matches(g, w) for g, w in zip(got, want)):
        raise CaseFailure("items %r, want %s" % (got, json.dumps(want)))


async def run_stream(api: Any, case: Dict[str, Any]) -> None:
    args = [to_native(a) for a in case["args"]]
    kwargs = {k: to_native(v) for k, v in case.get("kwargs", {}).items()}
    if "setup" in case:
        async with api.session() as s:
            await api.exec(s, case["setup"])
            got = await api.stream(s, case["module"], case["function"], args, kwargs)
    else:
        got = await api.stream(api.client, case["module"], case["function"], args, kwargs)
    _check_items(got, case["expect_items"])


async def run_ref(api: Any, case: Dict[str, Any]) -> None:
    async with api.session() as s:
        await api.exec(s, case["setup"])
        ref = await api.eval(s, case["code"])
        if not isinstance(ref, Ref) or ref.type != case["type"]:
            raise CaseFailure("got %r, want a ref of type %s" % (ref, case["type"]))
        got = await api.eval(s, case["use"], {"r": ref})
        if not matches(got, case["expect"]):
            raise CaseFailure("use gave %r, want %s" % (got, json.dumps(case["expect"])))
        released = await api.release(s, ref)
        if released != 1:
            raise CaseFailure("release gave %r, want 1" % (released,))
        await _expect_error({"expect": case["after_release"]},
                            api.eval(s, case["use"], {"r": ref}))


async def run_callback(api: Any, case: Dict[str, Any]) -> None:
    """The case's functions registered with register_function; a case that
    registers none asks for Run with an empty per-call set (functions={}),
    since a client with no functions sends plain calls."""
    op = case.get("op", "eval")
    if op not in ("eval", "exec_then_eval"):
        raise CaseFailure("unknown op %r" % op)
    timeout = float(case.get("timeout_seconds", 10))
    per_call = None if case["functions"] else {}
    bound = "setup" in case or op == "exec_then_eval"
    async with contextlib.AsyncExitStack() as stack:
        s = await stack.enter_async_context(api.session()) if bound else None
        target = s if s is not None else api.client
        await stack.enter_async_context(api.behaviours(case["functions"], s))
        if case.get("setup"):
            await api.exec(s, case["setup"])
        try:
            if op == "eval":
                got = await api.eval(target, case["code"], timeout=timeout, functions=per_call)
            else:
                await api.exec(target, case["code"], timeout=timeout, functions=per_call)
                got = await api.eval(target, case["eval"], timeout=timeout)
        except PythonError as err:
            want = case.get("error")
            if want is None:
                raise CaseFailure("unexpected %s: %s" % (err.type, err.message))
            if err.type != want["type"] or want["message_contains"] not in err.message:
                raise CaseFailure("error %s: %r, want %s containing %r"
                                  % (err.type, err.message, want["type"],
                                     want["message_contains"]))
            return
        if "error" in case:
            raise CaseFailure("no error; got %r" % (got,))
        if not matches(got, case["expect"]):
            raise CaseFailure("got %r, want %s" % (got, json.dumps(case["expect"])))


async def run_lease(api: Any, case: Dict[str, Any]) -> None:
    """Another client binds with its default lease and closes without
    unbinding; the session must then be gone within the grace + 3 s."""
    async with api.other_client() as other:
        s = await api.bind_on(other)
        token = s.token
        if await api.eval(s, "1") != 1:
            raise CaseFailure("eval on the leased session")
    # The other client is closed: its lease ended, and nobody unbound.
    cls = ERROR_CLASSES.get(case["expect"])
    if cls is None:
        raise CaseFailure("unknown error class %r" % case["expect"])
    deadline = time.monotonic() + float(case["grace_seconds"]) + 3
    while True:
        try:
            await api.eval(api.client.attach(token), "1")
        except cls:
            return
        if time.monotonic() > deadline:
            raise CaseFailure("the session outlived its lease by more than 3 s")
        await asyncio.sleep(0.05)


async def run_status(api: Any, case: Dict[str, Any]) -> None:
    scenario = case["scenario"]
    c = api.client
    if scenario == "unbind_then_eval":
        s = await api.bind()
        token = s.token
        await api.unbind(s)
        await _expect_error(case, api.eval(c.attach(token), "1"))
    elif scenario == "unknown_token":
        await _expect_error(case, api.eval(c.attach(UNKNOWN_TOKEN), "1"))
    elif scenario == "deadline_interrupts":
        async with api.session() as s:
            await api.exec(s, "import time\nx = 1")
            await _expect_error(case, api.eval(s, "time.sleep(30)",
                                               timeout=float(case["timeout_seconds"])))
            got = await api.eval(s, "x")
            if got != 1 or type(got) is not int:
                raise CaseFailure("session state after the interrupt: x = %r" % (got,))
    elif scenario == "empty_code":
        await _expect_error(case, api.eval(c, ""))
    elif scenario == "too_deep":
        nested: List[Any] = []
        for _ in range(int(case["depth"]) - 1):
            nested = [nested]
        await _expect_error(case, api.eval(c, "x", {"x": nested}))
    else:
        raise CaseFailure("unknown scenario %r" % scenario)


async def run_all(api: Any) -> Tuple[int, List[str]]:
    """Runs every case; returns (passed, failure descriptions) and prints the summary."""
    with open(VECTORS, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    passed, failures = 0, []
    for case in cases:
        try:
            await asyncio.wait_for(run_case(api, case), 120)
            passed += 1
        except (CaseFailure, pyexec_client.PyExecError, asyncio.TimeoutError, KeyError) as err:
            failures.append("%s: %s: %s" % (case.get("name"), type(err).__name__, err))
    for line in failures:
        print("conformance FAIL " + line)
    print("conformance: %d passed, %d failed" % (passed, len(failures)))
    return passed, failures
