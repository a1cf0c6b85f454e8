"""The asyncio pyexec client (grpc.aio): the same names as pyexec_client, awaited.

    async with Client("127.0.0.1:50051") as client:
        await client.eval("6*7")
        async with client.session() as s:          # bound and leased
            await s.exec("x = 41")
            await s.eval("x + 1")
        await client.context(1).eval("1 + 1")

        @client.register_function
        async def lookup(key):                     # pyexec.call('lookup', 'k')
            return await db.get(key)

A task cancelled while awaiting a call cancels the RPC, which interrupts the
Python code on the server (a bound session keeps its state).

Output callbacks (on_stdout=, on_stderr=) and registered functions may be
plain functions or coroutine functions; a coroutine is awaited. Plain
functions run in the event loop's thread.
"""

import asyncio
import inspect
from types import TracebackType
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Generator, List, Mapping,
                    Optional, Sequence, Set, Tuple, Type, TypeVar, Union, overload)

import grpc
import grpc.aio

from . import _callbacks, _core
from ._callbacks import Function
from ._core import (Bound, Event, Item, OutputCallback, Result, Snapshot, Stats, Stderr,
                    Stdout)
from ._owners import Owner, OwnerTable
from ._stubs import pb, pb_grpc
from .errors import (InvalidArgument, PyExecError, PythonError, SessionNotFound, Unavailable,
                     WorkerDied, from_rpc_error)
from .values import Ref

F = TypeVar("F", bound=Function)


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
                 output: _core.Output = _core.Output(),
                 retry: Optional[Callable[[PyExecError], Awaitable[Any]]] = None,
                 on_first: Optional[Callable[[Any], Awaitable[None]]] = None) -> None:
        self._call = call  # a grpc.aio.UnaryStreamCall
        self._on_error = on_error
        self._output = output
        self._done = False
        self._retry = retry
        self._on_first = on_first
        self._started = False

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
            err = from_rpc_error(rpc_err)
            again = (await self._retry(err) if self._retry is not None and not self._started
                     else None)
            if again is not None:
                self._call = again
                if self._done:
                    self._call.cancel()
                return await self.__anext__()
            self._done = True
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
        if not self._started:
            self._started = True
            self._retry = None
            if self._on_first is not None:
                await self._on_first(self._call)
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


class RunningCall:
    """A call started with start_eval/start_exec/start_call: a task already
    scheduled. Await it for what the awaited method returns; interrupt() stops
    it; cancel() cancels the task (and so the RPC).

    The call is named (call_id, sent as x-pyexec-call-id) before it leaves,
    and interrupt() names it, so an interrupt sent at once is never lost: the
    server keeps it for the call if it comes first.
    """

    def __init__(self, session: "_SessionCalls", token: str, call_id: str,
                 work: Callable[[], Awaitable[Any]]) -> None:
        self.call_id = call_id
        self.session_token = token
        self._session = session

        async def run() -> Any:
            _core.pending_call_id.set(call_id)  # this task's own context
            return await work()
        self.task: "asyncio.Task[Any]" = asyncio.ensure_future(run())

    def __await__(self) -> Generator[Any, None, Any]:
        return self.task.__await__()

    def done(self) -> bool:
        return self.task.done()

    def result(self) -> Any:
        return self.task.result()

    def exception(self) -> Optional[BaseException]:
        return self.task.exception()

    def cancel(self) -> bool:
        """Cancels the task; its RPC is cancelled, which interrupts the code."""
        return self.task.cancel()

    async def interrupt(self, *, timeout: Optional[float] = None) -> bool:
        """Interrupts this very call (InterruptRequest.call_id): it raises
        Cancelled and the session keeps its state. True when it was running
        or has not arrived yet; False when it has ended."""
        return await self._session._client._interrupt(self.session_token, self.call_id,
                                                      timeout)


class _Calls:
    _client: "Client"

    async def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    async def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
                   has_value: bool, output: _core.Output,
                   functions: Optional[Mapping[str, Function]] = None) -> Result:
        token = await self._token()
        client = self._client
        call_id = _core.take_call_id(client._ids)
        fns = client._functions.for_call(functions)
        request = make(token)
        client._track(token, call_id)
        try:
            if fns is None:
                resp = await client._unary(method, request, token, timeout, call_id)
            else:
                resp = await client._run_rpc(method, request, token, timeout, fns, call_id)
        except PyExecError as err:
            self._lost(token, err)
            raise
        finally:
            client._untrack(token, call_id)
        res, deliveries = _core.outcome(resp, has_value, output)
        for callback, text in deliveries:
            await _deliver(callback, text)
        if isinstance(res, PythonError):
            raise res
        return res

    async def _stream(self, method: str, make: Callable[[str], Any],
                      timeout: Optional[float], output: _core.Output) -> Stream:
        token = await self._token()
        return self._client._open_stream(method, make(token), token, timeout, output,
                                         lambda err: self._lost(token, err))

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
                          on_stderr: Optional[OutputCallback] = None,
                          functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Evaluates one expression; returns its value and captured output.
        result_as_ref (bound sessions): return a Ref even for a convertible value.
        on_stdout/on_stderr receive the output when the call returns.
        functions: more functions pyexec.call may call, for this call only."""
        return await self._run(
            "Eval", lambda t: _core.eval_request(t, code, locals, result_as_ref), timeout, True,
            self._output(on_stdout, on_stderr), functions)

    async def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None,
                          functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Executes statements; the Result's value is None. With callbacks
        (here or the client's) it runs as an ExecStream: live output; a call
        that may call back (registered or per-call functions) runs through
        Run instead, its output delivered when it returns."""
        make = lambda t: _core.exec_request(t, code, locals)  # noqa: E731
        output = self._output(on_stdout, on_stderr)
        if output.live() and self._client._functions.for_call(functions) is None:
            return await self._exec_live(make, timeout, output)
        return await self._run("Exec", make, timeout, False, output, functions)

    async def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None,
                          result_as_ref: bool = False,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None,
                          functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted.
        on_stdout/on_stderr receive the output when the call returns."""
        return await self._run(
            "Call", lambda t: _core.call_request(t, module, function, args, kwargs,
                                                 result_as_ref), timeout, True,
            self._output(on_stdout, on_stderr), functions)

    async def call_method_result(self, ref: Ref, method: str, args: Sequence[Any] = (),
                                 kwargs: Optional[Mapping[str, Any]] = None, *,
                                 timeout: Optional[float] = None,
                                 result_as_ref: bool = False,
                                 on_stdout: Optional[OutputCallback] = None,
                                 on_stderr: Optional[OutputCallback] = None,
                                 functions: Optional[Mapping[str, Function]] = None
                                 ) -> Result:
        """Calls ref.method(*args, **kwargs) on the session's live object."""
        return await self._run("Call", lambda t: _core.call_request(
            t, "", method, args, kwargs, result_as_ref, target=ref), timeout, True,
            self._output(on_stdout, on_stderr), functions)

    async def call_method(self, ref: Ref, method: str, args: Sequence[Any] = (),
                          kwargs: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None, result_as_ref: bool = False,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None,
                          functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Calls ref.method(*args, **kwargs) and returns its value."""
        return (await self.call_method_result(ref, method, args, kwargs, timeout=timeout,
                                              result_as_ref=result_as_ref, on_stdout=on_stdout,
                                              on_stderr=on_stderr, functions=functions)).value

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
        """Calls module.function(...); returns a Stream of output chunks and
        Items (one per element of an iterable result; see the sync client)."""
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
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return (await self.eval_result(code, locals, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr, functions=functions)).value

    async def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> None:
        """Executes statements (live output with on_stdout/on_stderr)."""
        await self.exec_result(code, locals, timeout=timeout, on_stdout=on_stdout,
                               on_stderr=on_stderr, functions=functions)

    async def call(self, module: str, function: str, args: Sequence[Any] = (),
                   kwargs: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None, result_as_ref: bool = False,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return (await self.call_result(module, function, args, kwargs, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr, functions=functions)).value


class _SessionCalls(_Calls):
    """What only a bound session has: refs to release, calls to start and
    interrupt, snapshots."""

    def _bound_token(self) -> Optional[str]:
        raise NotImplementedError

    async def release(self, *refs: Union[Ref, str], timeout: Optional[float] = None) -> int:
        """Drops refs (Refs or ids) held by the session; returns how many were live."""
        token = self._bound_token()
        if token is None or not refs:
            return 0
        try:
            return int((await self._client._unary(
                "Release", _core.release_request(token, refs), token, timeout)).released)
        except PyExecError as err:
            self._lost(token, err)
            raise

    async def interrupt(self, call: Union[RunningCall, str, None] = None, *,
                        timeout: Optional[float] = None) -> bool:
        """Interrupts a call on the session (it raises Cancelled; the session
        keeps its state). With `call` (a RunningCall or its call_id), that very
        call, even if it has not reached the server yet. Without, the oldest
        call this client has in flight on the session (tasks already created
        get to send theirs first), else whatever runs there. False when
        nothing was running."""
        token = self._bound_token()
        if token is None:
            return False
        try:
            if call is not None:
                call_id = call.call_id if isinstance(call, RunningCall) else call
                if not isinstance(call_id, str) or not call_id:
                    raise InvalidArgument("pyexec_client: interrupt() takes a RunningCall or "
                                          "a call id")
                return await self._client._interrupt(token, call_id, timeout)
            await asyncio.sleep(0)  # a task created just before names its call
            ours = self._client._oldest_call(token)
            if ours is not None and await self._client._interrupt(token, ours, timeout):
                return True
            return await self._client._interrupt(token, "", timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise

    async def _start(self, work: Callable[[], Awaitable[Any]]) -> RunningCall:
        token = await self._token()
        return RunningCall(self, token, self._client._ids.new(), work)

    async def start_eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                         timeout: Optional[float] = None, result_as_ref: bool = False,
                         on_stdout: Optional[OutputCallback] = None,
                         on_stderr: Optional[OutputCallback] = None,
                         functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """eval() as a task; returns the RunningCall (await it for the value;
        interrupt() stops it)."""
        return await self._start(lambda: self.eval(
            code, locals, timeout=timeout, result_as_ref=result_as_ref, on_stdout=on_stdout,
            on_stderr=on_stderr, functions=functions))

    async def start_exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                         timeout: Optional[float] = None,
                         on_stdout: Optional[OutputCallback] = None,
                         on_stderr: Optional[OutputCallback] = None,
                         functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """exec() as a task (see start_eval).

            running = await s.start_exec("while True: pass")
            await running.interrupt()    # True: never lost
            await running                # raises Cancelled
        """
        return await self._start(lambda: self.exec(
            code, locals, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr,
            functions=functions))

    async def start_call(self, module: str, function: str, args: Sequence[Any] = (),
                         kwargs: Optional[Mapping[str, Any]] = None, *,
                         timeout: Optional[float] = None, result_as_ref: bool = False,
                         on_stdout: Optional[OutputCallback] = None,
                         on_stderr: Optional[OutputCallback] = None,
                         functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """call() as a task (see start_eval)."""
        return await self._start(lambda: self.call(
            module, function, args, kwargs, timeout=timeout, result_as_ref=result_as_ref,
            on_stdout=on_stdout, on_stderr=on_stderr, functions=functions))

    async def snapshot(self, *, timeout: Optional[float] = None) -> Snapshot:
        """The session's state as a Snapshot; the session carries on unchanged."""
        token = await self._token()
        try:
            return await self._client._snapshot(token, timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise


class Session(_SessionCalls):
    """A bound session; `async with client.session() as s:` binds and always
    unbinds. Leased by default (see pyexec_client.Session)."""

    def __init__(self, client: "Client", idle_timeout: Optional[int] = None, *,
                 lease: Optional[bool] = None,
                 restore: Union[Snapshot, bytes, None] = None) -> None:
        self._client = client
        self._idle_timeout_request = idle_timeout
        self._lease_wanted = client.options.lease if lease is None else bool(lease)
        self._restore = _core.restore_blob(restore)
        self._bound: Optional[Bound] = None
        self._lease: Optional["_Lease"] = None

    @property
    def token(self) -> Optional[str]:
        return self._bound.session if self._bound else None

    @property
    def idle_timeout(self) -> Optional[int]:
        return self._bound.idle_timeout if self._bound else None

    @property
    def owner(self) -> Optional[str]:
        """The address of the replica known to hold the session (see
        pyexec_client.Session.owner); None if unknown."""
        token = self.token
        if not token:
            return None
        known = self._client._owners.owner_of(token)
        if known is None and self._bound is not None:
            known = self._bound.owner or None
        return known

    @property
    def leased(self) -> bool:
        """True while this handle holds a lease on the session."""
        return self._lease is not None and self._lease.held()

    @property
    def lease_ended(self) -> Optional[str]:
        """Why the lease ended while the session was bound, if it did."""
        return self._lease.ended if self._lease is not None else None

    @property
    def restore_lost(self) -> Tuple[_core.LostName, ...]:
        return self._bound.restore_lost if self._bound else ()

    @property
    def restore_error(self) -> Optional[PythonError]:
        return self._bound.restore_error if self._bound else None

    async def bind(self, *, timeout: Optional[float] = None,
                   restore: Union[Snapshot, bytes, None] = None) -> "Session":
        """Binds (with restore: a new session with a Snapshot's state) and,
        unless lease=False, leases it; the lease is held when this returns."""
        if self._bound is not None:
            raise PyExecError("pyexec_client: session already bound")
        blob = _core.restore_blob(restore) if restore is not None else self._restore
        self._bound = await self._client._bind(self._idle_timeout_request, timeout, blob)
        if self._lease_wanted:
            self._lease = await self._client._start_lease(self._bound.session, timeout)
        return self

    async def unbind(self, *, timeout: Optional[float] = None) -> None:
        bound, self._bound = self._bound, None
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
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
        self._lease: Optional["_Lease"] = None

    @property
    def token(self) -> Optional[str]:
        return self._session

    async def _token(self) -> str:
        async with self._lock:
            if self._session is None:
                token = (await self._client._bind(None, None)).session
                if self._client.options.lease:
                    self._lease = await self._client._start_lease(token, None)
                self._session = token
            return self._session

    def _bound_token(self) -> Optional[str]:
        return self._session

    def _lost(self, token: str, err: PyExecError) -> None:
        if isinstance(err, (SessionNotFound, WorkerDied)) and self._session == token:
            self._session = None
            lease, self._lease = self._lease, None
            if lease is not None:
                lease.close()

    async def unbind(self) -> None:
        token, self._session = self._session, None
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
        if token is not None:
            await self._client._unbind(token, None)


# Lease stream errors that retrying cannot fix.
_LEASE_FINAL = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)


class _Lease:
    """A lease on one session: a task that holds an Attach stream open and
    opens it again when it fails (see pyexec_client.client._Lease)."""

    def __init__(self, client: "Client", token: str) -> None:
        self._client = client
        self.token = token
        self._held = False
        self._closed = False
        self._first = asyncio.Event()
        self.ended: Optional[str] = None
        self._task: Optional["asyncio.Task[None]"] = None

    def begin(self) -> "_Lease":
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def start(self, wait: float) -> "_Lease":
        self.begin()
        try:
            await asyncio.wait_for(asyncio.shield(self._first.wait()), wait)
        except asyncio.TimeoutError:
            pass
        return self

    def held(self) -> bool:
        return self._held and not self._closed

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._client._lease_closed(self)

    def _set(self, held: bool, ended: Optional[str] = None) -> None:
        self._held = held
        if ended is not None:
            self.ended = ended
        self._first.set()

    async def _loop(self) -> None:
        try:
            await self._attach()
        finally:
            self._first.set()
            self._client._lease_closed(self)

    async def _attach(self) -> None:
        client, token = self._client, self.token
        backoff = _core.LEASE_BACKOFF_MIN
        cap = _core.LEASE_BACKOFF_MAX
        failures = 0
        while not self._closed:
            owner = client._owners.route(token)
            stub = owner.stub if owner is not None else client._stub
            kw = client.options.rpc_kwargs(client.options.metadata, None)
            call = stub.Attach(pb.AttachRequest(session=token), **kw)
            try:
                async for ev in call:
                    kind = ev.WhichOneof("event")
                    if kind == "attached":
                        cap = _core.lease_backoff_cap(ev.attached.grace_seconds)
                        backoff, failures = _core.LEASE_BACKOFF_MIN, 0
                        if owner is None:
                            client._owners.learn_metadata(token, await call.initial_metadata())
                        self._set(True)
                    elif kind == "ended":
                        self._set(False, ev.ended.reason or "ended")
                        return
                self._set(False, "the lease stream ended")
                return
            except grpc.RpcError as rpc_err:
                err = from_rpc_error(rpc_err)
            except asyncio.CancelledError:
                call.cancel()
                raise
            if isinstance(err, SessionNotFound) or err.code in _LEASE_FINAL:
                self._set(False, str(err))
                return
            self._set(False)
            failures += 1
            if owner is not None and isinstance(err, Unavailable):
                client._owners.failed(token, owner)
                continue
            if failures > 1 or not isinstance(err, Unavailable):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)


class _AioOwners(OwnerTable[Owner]):
    def __init__(self, client: "Client") -> None:
        super().__init__(client.options.route_to_owner, client.options.target)
        self._make = client._make_channel

    def _open(self, address: str) -> Owner:
        channel = self._make(address)
        channel.get_state(try_to_connect=True)
        return Owner(address, channel, pb_grpc.PyExecStub(channel))

    def _connected(self, owner: Owner) -> bool:
        state = owner.channel.get_state(try_to_connect=False)
        if state == grpc.ChannelConnectivity.READY:
            owner.ever_ready = True
            return True
        if state == grpc.ChannelConnectivity.IDLE:
            if owner.ever_ready:
                return True
            owner.channel.get_state(try_to_connect=True)
        return False


class Client(_Calls):
    """An asyncio connection to pyexecd; same options as pyexec_client.Client.
    Create it inside the event loop that uses it."""

    def __init__(self, target: str, **options: Any) -> None:
        self._client = self
        self.options = _core.Options(target, **options)
        self._channel = self._make_channel(target)
        self._stub = pb_grpc.PyExecStub(self._channel)
        self._contexts: List[Optional[Context]] = [None] * self.options.num_contexts
        self._next_context = 0
        self._ids = _core.CallIds()
        self._functions = _callbacks.Registry()
        self._owners = _AioOwners(self)
        self._leases: Set[_Lease] = set()
        self._inflight: Dict[str, Dict[str, None]] = {}
        # Run calls whose response came and whose OK status is on its way.
        self._ending_runs: Set[Any] = set()
        self._closed = False

    def _make_channel(self, target: str) -> Any:
        creds = self.options.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(target, options=self.options.channel_options)
        return grpc.aio.secure_channel(target, creds, options=self.options.channel_options)

    async def _token(self) -> str:
        return ""

    # --- calls ---------------------------------------------------------------

    async def _unary(self, method: str, request: Any, token: str, timeout: Optional[float],
                     call_id: Optional[str] = None, wait_for_ready: bool = True) -> Any:
        """One unary RPC; a session's goes to its owner when known and
        connected, and is sent once more (through the target) if it fails
        UNAVAILABLE (see pyexec_client.Client._unary)."""
        if call_id is not None:
            md = self.options.call_metadata(call_id)
        elif method in ("Release", "Snapshot"):
            md = _core.nested_metadata(self.options.metadata)
        else:
            md = self.options.metadata
        at = _core.deadline(self.options.call_timeout(timeout))
        retrier = _core.Retrier(at)
        while True:
            owner = self._owners.route(token) if token else None
            stub = owner.stub if owner is not None else self._stub
            kw = self.options.rpc_kwargs(md, at, wait_for_ready)
            try:
                call = getattr(stub, method)(request, **kw)
                resp = await call
                if token and owner is None and self._owners.enabled:
                    self._owners.learn_metadata(token, await call.initial_metadata())
                return resp
            except grpc.RpcError as rpc_err:
                err = from_rpc_error(rpc_err)
            pause = retrier.pause(err, owner is not None) if token else None
            if pause is None:
                raise err
            if owner is not None:
                self._owners.failed(token, owner)
            await asyncio.sleep(pause)

    def _open_stream(self, method: str, request: Any, token: str, timeout: Optional[float],
                     output: _core.Output, on_error: Callable[[PyExecError], None]) -> Stream:
        md = self.options.call_metadata(_core.take_call_id(self._ids))
        at = _core.deadline(self.options.call_timeout(timeout))
        sent_to: List[Optional[Owner]] = [None]

        def start(owner: Optional[Owner]) -> Any:
            sent_to[0] = owner
            stub = owner.stub if owner is not None else self._stub
            return getattr(stub, method)(request, **self.options.rpc_kwargs(md, at))

        retrier = _core.Retrier(at)

        async def retry(err: PyExecError) -> Any:
            """The stream started again, or None (raise err)."""
            pause = retrier.pause(err, sent_to[0] is not None)
            if pause is None:
                return None
            if sent_to[0] is not None:
                self._owners.failed(token, sent_to[0])
            await asyncio.sleep(pause)
            return start(self._owners.route(token))

        async def on_first(call: Any) -> None:
            if sent_to[0] is None and self._owners.enabled:
                self._owners.learn_metadata(token, await call.initial_metadata())

        call = start(self._owners.route(token) if token else None)
        if not token:
            return Stream(call, on_error, output)
        return Stream(call, on_error, output, retry, on_first)

    async def _run_rpc(self, method: str, request: Any, token: str, timeout: Optional[float],
                       functions: Dict[str, Function], call_id: str) -> Any:
        """Eval/Exec/Call through Run: each callback Python asks for runs as a
        task of its own and is answered on the same stream; the response
        comes last, then the client half-closes and the OK status follows.
        Callbacks still running when the response comes are cancelled."""
        md = self.options.call_metadata(call_id)
        at = _core.deadline(self.options.call_timeout(timeout))
        retrier = _core.Retrier(at)
        while True:
            owner = self._owners.route(token) if token else None
            stub = owner.stub if owner is not None else self._stub
            call = stub.Run(**self.options.rpc_kwargs(md, at))
            run = _Run(call)
            response = None
            try:
                await call.write(_core.run_request(method, request))
                while True:
                    ev = await call.read()
                    if ev is grpc.aio.EOF:
                        break
                    got = _core.run_response(ev)
                    if got is None:
                        run.serve(ev.callback, functions)
                    else:
                        response = got
                        await run.half_close()
                        break
                if response is None:
                    raise PyExecError("pyexec_client: Run ended without its response")
                if token and owner is None and self._owners.enabled:
                    self._owners.learn_metadata(token, await call.initial_metadata())
                # The OK status comes in the background; the call is kept
                # referenced until then (a dropped call would be cancelled).
                self._ending_runs.add(call)
                call.add_done_callback(self._ending_runs.discard)
                return response
            except grpc.RpcError as rpc_err:
                if response is not None:
                    return response
                err = from_rpc_error(rpc_err)
            except BaseException:
                call.cancel()
                raise
            finally:
                run.end()
            # A callback served means the call ran: it is not sent again.
            pause = retrier.pause(err, owner is not None) if token and not run.served else None
            if pause is None:
                raise err
            if owner is not None:
                self._owners.failed(token, owner)
            await asyncio.sleep(pause)

    def _track(self, token: str, call_id: str) -> None:
        if token:
            self._inflight.setdefault(token, {})[call_id] = None

    def _untrack(self, token: str, call_id: str) -> None:
        if token:
            calls = self._inflight.get(token)
            if calls is not None:
                calls.pop(call_id, None)
                if not calls:
                    del self._inflight[token]

    def _oldest_call(self, token: str) -> Optional[str]:
        calls = self._inflight.get(token)
        return next(iter(calls)) if calls else None

    async def _interrupt(self, token: str, call_id: str, timeout: Optional[float]) -> bool:
        return bool((await self._unary("Interrupt",
                                       pb.InterruptRequest(session=token, call_id=call_id),
                                       token, timeout)).interrupted)

    async def _snapshot(self, token: str, timeout: Optional[float]) -> Snapshot:
        return _core.snapshot(await self._unary("Snapshot", pb.SnapshotRequest(session=token),
                                                token, timeout))

    async def _bind(self, idle_timeout: Optional[int], timeout: Optional[float],
                    restore: Optional[bytes] = None) -> Bound:
        bound = _core.bound(await self._unary(
            "Bind", _core.bind_request(idle_timeout, restore), "", timeout))
        self._owners.learn(bound.session, bound.owner)
        return bound

    async def _unbind(self, session: str, timeout: Optional[float]) -> None:
        # Never waits for a connection (see pyexec_client.Client._unbind).
        try:
            await self._unary("Unbind", pb.UnbindRequest(session=session), session, timeout,
                              wait_for_ready=False)
        finally:
            self._owners.forget(session)

    async def _start_lease(self, token: str, timeout: Optional[float]) -> _Lease:
        if self._closed:
            raise PyExecError("pyexec_client: the client is closed")
        lease = _Lease(self, token)
        self._leases.add(lease)
        wait = self.options.call_timeout(timeout)
        return await lease.start(10.0 if wait is None else wait)

    def _lease_closed(self, lease: _Lease) -> None:
        self._leases.discard(lease)

    # --- the public API ------------------------------------------------------

    def session(self, idle_timeout: Optional[int] = None, *, lease: Optional[bool] = None,
                restore: Union[Snapshot, bytes, None] = None) -> Session:
        """A session handle; bound by `async with` (or await bind()). lease:
        hold a lease while bound (default: the client's lease option).
        restore: a Snapshot (or its blob) the new session starts from."""
        return Session(self, idle_timeout, lease=lease, restore=restore)

    def attach(self, token: str, *, lease: bool = False) -> Session:
        """A handle on a session bound elsewhere (e.g. by `pyexec bind`), already
        bound; leaving its `async with` block unbinds it. lease=True leases it
        too (the lease is being taken when this returns)."""
        if not token:
            raise InvalidArgument("pyexec_client: empty session token")
        s = Session(self, lease=lease)
        s._bound = Bound(token, 0)
        if lease:
            if self._closed:
                raise PyExecError("pyexec_client: the client is closed")
            s._lease = _Lease(self, token)
            self._leases.add(s._lease)
            s._lease.begin()
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

    @overload
    def register_function(self, name: str, fn: F) -> F: ...

    @overload
    def register_function(self, name: F) -> F: ...

    @overload
    def register_function(self, name: Optional[str] = None) -> Callable[[F], F]: ...

    def register_function(self, name: Any = None, fn: Any = None) -> Any:
        """Registers a function (plain or coroutine) that Python code calls as
        pyexec.call(name, *args, **kwargs); also a decorator (see
        pyexec_client.Client.register_function). Each callback runs as a
        task of its own; calls it makes on the waiting session run nested."""
        return _callbacks.decorator_or_register(self._functions, name, fn)

    def unregister_function(self, name: str) -> bool:
        """Removes a registered function; False if there was none."""
        return self._functions.unregister(name)

    @property
    def functions(self) -> Tuple[str, ...]:
        """The names of the registered functions."""
        return self._functions.names()

    async def snapshot(self, session: Union[Session, Context, str], *,
                       timeout: Optional[float] = None) -> Snapshot:
        """The state of a session (a handle or its token) as a Snapshot."""
        if isinstance(session, str):
            return await self._snapshot(session, timeout)
        return await session.snapshot(timeout=timeout)

    async def stats(self, *, timeout: Optional[float] = None) -> Stats:
        return _core.stats(await self._unary("GetStats", pb.GetStatsRequest(), "", timeout))

    async def close(self) -> None:
        """Ends the leases (the server unbinds their sessions after its
        grace), unbinds the shared contexts (best effort) and closes the
        channels."""
        self._closed = True
        contexts, self._contexts = self._contexts, [None] * self.options.num_contexts
        for ctx in contexts:
            if ctx is not None:
                try:
                    await ctx.unbind()
                except PyExecError:
                    pass
        for lease in list(self._leases):
            lease.close()
        for owner in self._owners.close():
            await owner.channel.close()
        await self._channel.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Run:
    """The callbacks of one Run stream: each a task, answers written one at a
    time, none after the client's half-close."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._lock = asyncio.Lock()
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._closed = False
        self.served = False

    def serve(self, request: Any, functions: Dict[str, Function]) -> None:
        self.served = True
        task = asyncio.ensure_future(self._answer(request, functions))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Any, functions: Dict[str, Function]) -> None:
        fn = _callbacks.find(functions, request)
        if fn is None:
            answer = _callbacks.unknown(request)
        else:
            _callbacks.current_callback.set(request.id)  # this task's own context
            try:
                args, kwargs = _callbacks.arguments(request)
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
                answer = _callbacks.value_result(request.id, value)
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # noqa: BLE001 (Python sees it as CallbackError)
                answer = _callbacks.error_result(request.id, err)
        async with self._lock:
            if not self._closed:
                await self._call.write(pb.RunRequest(callback_result=answer))

    async def half_close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._call.done_writing()

    def end(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()


__all__: Tuple[str, ...] = ("Client", "Session", "Context", "Stream", "RunningCall")
