"""The asyncio pyexec client (grpc.aio): the same names as pyexec_client, awaited.

    async with Client("127.0.0.1:50051") as client:
        await client.eval("6*7")
        async with client.session() as s:
            await s.exec("x = 41")
            await s.eval("x + 1")
        await client.context(1).eval("1 + 1")

A task cancelled while awaiting a call cancels the RPC, which interrupts the
Python code on the server (a bound session keeps its state).

Output callbacks (on_stdout=, on_stderr=) may be plain functions or
coroutine functions; a coroutine is awaited before the call goes on.
"""

import asyncio
import inspect
from types import TracebackType
from typing import (Any, AsyncIterator, Callable, List, Mapping, Optional, Sequence, Tuple, Type,
                    Union)

import grpc
import grpc.aio

from . import _core
from ._core import Bound, Event, Item, OutputCallback, Result, Stats, Stderr, Stdout
from ._stubs import pb, pb_grpc
from .errors import (InvalidArgument, PyExecError, PythonError, SessionNotFound, WorkerDied,
                     from_rpc_error)
from .values import Ref


async def _deliver(callback: OutputCallback, text: str) -> None:
    result = callback(text)
    if inspect.isawaitable(result):
        await result


class Stream:
    """The events of exec_stream/call_stream, for `async for` (see
    pyexec_client.Stream). Stopping early cancels the RPC, which interrupts
    the Python code: cancel(), the end of an `async with` block, dropping the
    stream, or cancelling the task that awaits it. Output callbacks get each
    chunk as the iteration reads it (and are awaited) before its event is
    returned."""

    def __init__(self, call: Any, on_error: Callable[[PyExecError], None],
                 output: _core.Output = _core.Output()) -> None:
        self._call = call  # a grpc.aio.UnaryStreamCall
        self._on_error = on_error
        self._output = output
        self._done = False

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        try:
            resp = await self._call.read()
        except grpc.RpcError as rpc_err:
            if self._done:  # cancel() from another task: end quietly
                raise StopAsyncIteration from None
            self._done = True
            err = from_rpc_error(rpc_err)
            self._on_error(err)
            raise err from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            cancelling = getattr(task, "cancelling", None)
            if self._done and cancelling is not None and not cancelling():
                # grpc.aio reports our own cancel() (from another task) as a
                # CancelledError; this task was not cancelled: end quietly.
                raise StopAsyncIteration from None
            # This task was cancelled: grpc.aio has cancelled the RPC; make sure.
            self.cancel()
            raise
        if resp is grpc.aio.EOF:
            self._done = True
            raise PyExecError("pyexec_client: the stream ended without its end event")
        try:
            ev = _core.event(resp)
        except PythonError:
            self._done = True
            raise
        if ev is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(ev, (Stdout, Stderr)):
            callback = self._output.callback(ev)
            if callback is not None:
                await _deliver(callback, ev.text)
        return ev

    async def items(self) -> AsyncIterator[Any]:
        """Only the values of the Item events (output chunks go to the
        callbacks, if any, and are dropped otherwise). Closing this generator
        early cancels the stream."""
        try:
            async for ev in self:
                if isinstance(ev, Item):
                    yield ev.value
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Cancels the RPC (interrupting the Python code) unless it has ended.
        From another task, it ends that task's iteration quietly."""
        if not self._done:
            self._done = True
            self._call.cancel()

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.cancel()


class _Calls:
    _client: "Client"

    async def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    async def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
                   has_value: bool, output: _core.Output) -> Result:
        token = await self._token()
        try:
            resp = await self._client._invoke(method, make(token), timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise
        res, deliveries = _core.outcome(resp, has_value, output)
        for callback, text in deliveries:
            await _deliver(callback, text)
        if isinstance(res, PythonError):
            raise res
        return res

    async def _stream(self, method: str, make: Callable[[str], Any],
                      timeout: Optional[float], output: _core.Output) -> Stream:
        token = await self._token()
        call = self._client._start_stream(method, make(token), timeout)
        return Stream(call, lambda err: self._lost(token, err), output)

    async def _exec_live(self, make: Callable[[str], Any], timeout: Optional[float],
                         output: _core.Output) -> Result:
        """Exec through ExecStream, output to the callbacks as it is written.
        A callback that raises cancels the call (interrupting the code)."""
        kept = _core.Collected(output)
        async with await self._stream("ExecStream", make, timeout, output) as stream:
            try:
                async for ev in stream:
                    kept.add(ev)
            except PythonError as err:
                raise kept.error(err) from None
        return kept.result()

    def _output(self, on_stdout: Optional[OutputCallback],
                on_stderr: Optional[OutputCallback]) -> _core.Output:
        return self._client.options.call_output(on_stdout, on_stderr)

    async def eval_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          result_as_ref: bool = False,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Result:
        """Evaluates one expression; returns its value and captured output.
        result_as_ref (bound sessions): return a Ref even for a convertible value.
        on_stdout/on_stderr receive the output when the call returns."""
        return await self._run(
            "Eval", lambda t: _core.eval_request(t, code, locals, result_as_ref), timeout, True,
            self._output(on_stdout, on_stderr))

    async def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Result:
        """Executes statements; the Result's value is None. With callbacks
        (here or the client's) it runs as an ExecStream: live output."""
        make = lambda t: _core.exec_request(t, code, locals)  # noqa: E731
        output = self._output(on_stdout, on_stderr)
        if output.live():
            return await self._exec_live(make, timeout, output)
        return await self._run("Exec", make, timeout, False, output)

    async def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          result_as_ref: bool = False,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted.
        on_stdout/on_stderr receive the output when the call returns."""
        return await self._run(
            "Call", lambda t: _core.call_request(t, module, function, args, kwargs,
                                                 result_as_ref), timeout, True,
            self._output(on_stdout, on_stderr))

    async def call_method_result(self, ref: Ref, method: str, args: Sequence[Any] = (),
                                 kwargs: Optional[Mapping[str, Any]] = None, *,
                                 timeout: Optional[float] = None,
                                 result_as_ref: bool = False,
                                 on_stdout: Optional[OutputCallback] = None,
                                 on_stderr: Optional[OutputCallback] = None) -> Result:
        """Calls ref.method(*args, **kwargs) on the session's live object."""
        return await self._run("Call", lambda t: _core.call_request(
            t, "", method, args, kwargs, result_as_ref, target=ref), timeout, True,
            self._output(on_stdout, on_stderr))

    async def call_method(self, ref: Ref, method: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None, result_as_ref: bool = False,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Any:
        """Calls ref.method(*args, **kwargs) and returns its value."""
        return (await self.call_method_result(ref, method, args, kwargs, timeout=timeout,
                                              result_as_ref=result_as_ref, on_stdout=on_stdout,
                                              on_stderr=on_stderr)).value

    async def getattr(self, obj: Union[Ref, str], attribute: str, *,
                      timeout: Optional[float] = None, result_as_ref: bool = False) -> Any:
        """Reads an attribute (a dotted path) of a Ref's object, or of the
        module named by a str."""
        module, target = (obj, None) if isinstance(obj, str) else ("", obj)
        make = lambda t: _core.call_request(t, module, attribute, (), None, result_as_ref,
                                            target=target, get_attribute=True)  # noqa: E731
        return (await self._run("Call", make, timeout, True, self._output(None, None))).value

    async def exec_stream(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Stream:
        """Executes statements; returns a Stream of Stdout/Stderr events."""
        return await self._stream("ExecStream", lambda t: _core.exec_request(t, code, locals),
                                  timeout, self._output(on_stdout, on_stderr))

    async def call_stream(self, module: str, function: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> Stream:
        """Calls module.function(...); returns a Stream of output chunks and Items."""
        return await self._stream(
            "CallStream", lambda t: _core.call_request(t, module, function, args, kwargs),
            timeout, self._output(on_stdout, on_stderr))

    async def call_method_stream(self, ref: Ref, method: str, args: Sequence[Any] = (),
                                 kwargs: Optional[Mapping[str, Any]] = None, *,
                                 timeout: Optional[float] = None,
                                 on_stdout: Optional[OutputCallback] = None,
                                 on_stderr: Optional[OutputCallback] = None) -> Stream:
        """call_stream on a method of a Ref's object."""
        return await self._stream("CallStream", lambda t: _core.call_request(
            t, "", method, args, kwargs, target=ref), timeout,
            self._output(on_stdout, on_stderr))

    async def eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None, result_as_ref: bool = False,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return (await self.eval_result(code, locals, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr)).value

    async def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None) -> None:
        """Executes statements (live output with on_stdout/on_stderr)."""
        await self.exec_result(code, locals, timeout=timeout, on_stdout=on_stdout,
                               on_stderr=on_stderr)

    async def call(self, module: str, function: str, args: Sequence[Any] = (),
                   kwargs: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None, result_as_ref: bool = False,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return (await self.call_result(module, function, args, kwargs, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr)).value


class _SessionCalls(_Calls):
    """What only a bound session has: refs to release, and a call to interrupt."""

    def _bound_token(self) -> Optional[str]:
        raise NotImplementedError

    async def release(self, *refs: Union[Ref, str], timeout: Optional[float] = None) -> int:
        """Drops refs (Refs or ids) held by the session; returns how many were live."""
        token = self._bound_token()
        if token is None or not refs:
            return 0
        try:
            return int((await self._client._invoke(
                "Release", _core.release_request(token, refs), timeout)).released)
        except PyExecError as err:
            self._lost(token, err)
            raise

    async def interrupt(self, *, timeout: Optional[float] = None) -> bool:
        """Interrupts the call running on the session (it raises Cancelled; the
        session keeps its state). False when nothing was running."""
        token = self._bound_token()
        if token is None:
            return False
        try:
            return bool((await self._client._invoke(
                "Interrupt", pb.InterruptRequest(session=token), timeout)).interrupted)
        except PyExecError as err:
            self._lost(token, err)
            raise


class Session(_SessionCalls):
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

    def _bound_token(self) -> Optional[str]:
        return self.token

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


class Context(_SessionCalls):
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

    def _bound_token(self) -> Optional[str]:
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

    def _start_stream(self, method: str, request: Any, timeout: Optional[float]) -> Any:
        """Starts a server-streaming RPC; its errors surface while reading."""
        return getattr(self._stub, method)(request, **self.options.call_kwargs(timeout))

    async def _invoke(self, method: str, request: Any, timeout: Optional[float],
                      wait_for_ready: bool = True) -> Any:
        kw = self.options.call_kwargs(timeout, wait_for_ready)
        try:
            return await getattr(self._stub, method)(request, **kw)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _bind(self, idle_timeout: Optional[int], timeout: Optional[float]) -> Bound:
        return _core.bound(await self._invoke("Bind", _core.bind_request(idle_timeout), timeout))

    async def _unbind(self, session: str, timeout: Optional[float]) -> None:
        # Never waits for a connection (see pyexec_client.Client._unbind).
        await self._invoke("Unbind", pb.UnbindRequest(session=session), timeout,
                           wait_for_ready=False)

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
        return _core.stats(await self._invoke("GetStats", pb.GetStatsRequest(), timeout))

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


__all__: Tuple[str, ...] = ("Client", "Session", "Context", "Stream")
