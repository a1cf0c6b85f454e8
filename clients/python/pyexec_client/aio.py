"""The asyncio pyexec client (grpc.aio): the same names as pyexec_client, awaited.

    async with Client("127.0.0.1:50051") as client:
        await client.eval("6*7")
        async with client.session() as s:
            await s.exec("x = 41")
            await s.eval("x + 1")
        await client.context(1).eval("1 + 1")

A task cancelled while awaiting a call cancels the RPC, which interrupts the
Python code on the server (a bound session keeps its state).
"""

import asyncio
from types import TracebackType
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Type

import grpc
import grpc.aio

from . import _core
from ._core import Bound, Result, Stats
from ._stubs import pb_grpc
from .errors import InvalidArgument, PyExecError, SessionNotFound, WorkerDied, from_rpc_error


class _Calls:
    _client: "Client"

    async def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    async def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
                   has_value: bool) -> Result:
        token = await self._token()
        try:
            return await self._client._unary(method, make(token), timeout, has_value)
        except PyExecError as err:
            self._lost(token, err)
            raise

    async def eval_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None) -> Result:
        """Evaluates one expression; returns its value and captured output."""
        return await self._run("Eval", lambda t: _core.eval_request(t, code, locals), timeout,
                               True)

    async def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None) -> Result:
        """Executes statements; the Result's value is None."""
        return await self._run("Exec", lambda t: _core.exec_request(t, code, locals), timeout,
                               False)

    async def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted."""
        return await self._run(
            "Call", lambda t: _core.call_request(t, module, function, args, kwargs), timeout,
            True)

    async def eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return (await self.eval_result(code, locals, timeout=timeout)).value

    async def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None) -> None:
        """Executes statements."""
        await self.exec_result(code, locals, timeout=timeout)

    async def call(self, module: str, function: str, args: Sequence[Any] = (),
                   kwargs: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return (await self.call_result(module, function, args, kwargs, timeout=timeout)).value


class Session(_Calls):
    """A bound session; `async with client.session() as s:` binds and always unbinds."""

    def __init__(self, client: "Client", idle_timeout: Optional[int] = None) -> None:
        self._client = client
        self._idle_timeout_request = idle_timeout
        self._bound: Optional[Bound] = None

    @property
    def token(self) -> Optional[str]:
        return self._bound.session if self._bound else None

    @property
    def idle_timeout(self) -> Optional[int]:
        return self._bound.idle_timeout if self._bound else None

    async def bind(self, *, timeout: Optional[float] = None) -> "Session":
        if self._bound is not None:
            raise PyExecError("pyexec_client: session already bound")
        self._bound = await self._client._bind(self._idle_timeout_request, timeout)
        return self

    async def unbind(self, *, timeout: Optional[float] = None) -> None:
        bound, self._bound = self._bound, None
        if bound is not None:
            await self._client._unbind(bound.session, timeout)

    async def _token(self) -> str:
        if self._bound is None:
            raise PyExecError("pyexec_client: session not bound")
        return self._bound.session

    async def __aenter__(self) -> "Session":
        if self._bound is None:
            await self.bind()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        try:
            # Shielded: a cancelled task still releases its session.
            await asyncio.shield(self.unbind())
        except PyExecError:
            if exc_type is None:
                raise


class Context(_Calls):
    """A shared, numbered context (see pyexec_client.Context)."""

    def __init__(self, client: "Client", number: int) -> None:
        self._client = client
        self.number = number
        self._lock = asyncio.Lock()
        self._session: Optional[str] = None

    @property
    def token(self) -> Optional[str]:
        return self._session

    async def _token(self) -> str:
        async with self._lock:
            if self._session is None:
                self._session = (await self._client._bind(None, None)).session
            return self._session

    def _lost(self, token: str, err: PyExecError) -> None:
        if isinstance(err, (SessionNotFound, WorkerDied)) and self._session == token:
            self._session = None

    async def unbind(self) -> None:
        token, self._session = self._session, None
        if token is not None:
            await self._client._unbind(token, None)


class Client(_Calls):
    """An asyncio connection to pyexecd; same options as pyexec_client.Client.
    Create it inside the event loop that uses it."""

    def __init__(self, target: str, **options: Any) -> None:
        self._client = self
        self.options = _core.Options(target, **options)
        creds = self.options.credentials()
        if creds is None:
            self._channel = grpc.aio.insecure_channel(target,
                                                      options=self.options.channel_options)
        else:
            self._channel = grpc.aio.secure_channel(target, creds,
                                                    options=self.options.channel_options)
        self._stub = pb_grpc.PyExecStub(self._channel)
        self._contexts: List[Optional[Context]] = [None] * self.options.num_contexts
        self._next_context = 0

    async def _token(self) -> str:
        return ""

    async def _unary(self, method: str, request: Any, timeout: Optional[float],
                     has_value: bool) -> Result:
        return _core.result(await self._invoke(method, request, timeout), has_value)

    async def _invoke(self, method: str, request: Any, timeout: Optional[float]) -> Any:
        kw = _core.stub_kwargs(self.options.metadata, self.options.call_timeout(timeout))
        try:
            return await getattr(self._stub, method)(request, **kw)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _bind(self, idle_timeout: Optional[int], timeout: Optional[float]) -> Bound:
        return _core.bound(await self._invoke("Bind", _core.bind_request(idle_timeout), timeout))

    async def _unbind(self, session: str, timeout: Optional[float]) -> None:
        await self._invoke("Unbind", _core.pb.UnbindRequest(session=session), timeout)

    def session(self, idle_timeout: Optional[int] = None) -> Session:
        """A session handle; bound by `async with` (or await bind())."""
        return Session(self, idle_timeout)

    def attach(self, token: str) -> Session:
        """A handle on a session bound elsewhere (e.g. by `pyexec bind`), already
        bound; leaving its `with` block unbinds it."""
        if not token:
            raise InvalidArgument("pyexec_client: empty session token")
        s = Session(self)
        s._bound = Bound(token, 0)
        return s

    def context(self, n: Optional[int] = None) -> Context:
        """Shared context number n (1..num_contexts); None picks the next one in turn."""
        i = _core.context_index(n, self.options.num_contexts, self._next_context)
        if n is None:
            self._next_context += 1
        ctx = self._contexts[i]
        if ctx is None:
            ctx = self._contexts[i] = Context(self, i + 1)
        return ctx

    async def stats(self, *, timeout: Optional[float] = None) -> Stats:
        return _core.stats(await self._invoke("GetStats", _core.pb.GetStatsRequest(), timeout))

    async def close(self) -> None:
        """Unbinds the shared contexts (best effort) and closes the channel."""
        contexts, self._contexts = self._contexts, [None] * self.options.num_contexts
        for ctx in contexts:
            if ctx is not None:
                try:
                    await ctx.unbind()
                except PyExecError:
                    pass
        await self._channel.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


__all__: Tuple[str, ...] = ("Client", "Session", "Context")
