"""The synchronous pyexec client (grpcio).

    client = Client("127.0.0.1:50051")
    client.eval("6*7")                                  # 42, stateless
    with client.session() as s:                         # bound (and leased) here ...
        s.exec("import math; r = 2")
        s.eval("math.pi * r**2")
    # ... and unbound here, even on error
    client.context(1).call("math", "gcd", [12, 18])     # a shared, numbered context
    client.exec("print('hi')", on_stdout=print)         # output as it is written
    client.register_function("add", lambda a, b: a + b)
    client.eval("pyexec.call('add', 2, 3)")              # 5: Python calls the client
"""

import asyncio
import concurrent.futures
import inspect
import queue
import threading
import time
from types import TracebackType
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, Type, TypeVar, Union, overload)

import grpc

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
_HALF_CLOSE = None  # ends a Run's request iterator (the client's half-close)


class Stream:
    """The events of exec_stream/call_stream: Stdout and Stderr chunks as the
    code writes them and, for call_stream, an Item per value. Iterating ends
    when the code returns; if it raised, the iteration raises PythonError;
    service conditions raise the usual typed errors (Timeout, WorkerDied, ...).

    Stopping early cancels the RPC, which interrupts the Python code; a bound
    session keeps its state. That happens on cancel(), at the end of a `with`
    block, or when the stream is dropped (e.g. `break` out of a `for` over it).

    Output callbacks (on_stdout=, on_stderr=) are called with each output
    chunk as the iteration reads it, in the iterating thread, before the
    chunk's event is returned; items() calls them too.
    """

    def __init__(self, call: Any, on_error: Callable[[PyExecError], None],
                 output: _core.Output = _core.Output(),
                 retry: Optional[Callable[[PyExecError], Any]] = None,
                 on_first: Optional[Callable[[Any], None]] = None) -> None:
        self._call = call  # the grpc response iterator (also a grpc.Call)
        self._on_error = on_error
        self._output = output
        self._done = False
        # A session stream that fails before its first event is given to
        # retry(err), which starts it again or returns None (see
        # _core.Retrier); on_first sees the call once its first event came
        # (owner routing).
        self._retry = retry
        self._on_first = on_first
        self._started = False

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Event:
        if self._done:
            raise StopIteration
        try:
            resp = next(self._call)
        except StopIteration:
            self._done = True
            raise PyExecError("pyexec_client: the stream ended without its end event") from None
        except grpc.RpcError as rpc_err:
            if self._done:  # cancel() from another thread: end quietly
                raise StopIteration from None
            err = from_rpc_error(rpc_err)
            again = self._retry(err) if self._retry is not None and not self._started else None
            if again is not None:
                self._call = again
                if self._done:
                    self._call.cancel()
                return self.__next__()
            self._done = True
            self._on_error(err)
            raise err from None
        if not self._started:
            self._started = True
            self._retry = None
            if self._on_first is not None:
                self._on_first(self._call)
        try:
            ev = _core.event(resp)
        except PythonError:
            self._done = True
            raise
        if ev is None:
            self._done = True
            raise StopIteration
        if isinstance(ev, (Stdout, Stderr)):
            callback = self._output.callback(ev)
            if callback is not None:
                callback(ev.text)
        return ev

    def items(self) -> Iterator[Any]:
        """Only the values of the Item events (output chunks go to the
        callbacks, if any, and are dropped otherwise). Closing this generator
        early cancels the stream."""
        try:
            for ev in self:
                if isinstance(ev, Item):
                    yield ev.value
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Cancels the RPC (interrupting the Python code) unless it has ended.
        From another thread, it ends that thread's iteration quietly."""
        if not self._done:
            self._done = True
            self._call.cancel()

    close = cancel

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._call.cancel()


class RunningCall(concurrent.futures.Future[Any]):
    """A call started with start_eval/start_exec/start_call, running in a
    thread of its own. It is a concurrent.futures.Future of what the blocking
    method returns (result() raises its error); it is running from the start,
    so cancel() is False: interrupt() stops it.

    The call is named (call_id, sent as x-pyexec-call-id) before it leaves,
    and interrupt() names it, so an interrupt sent at once is never lost: the
    server keeps it for the call if it comes first.
    """

    def __init__(self, session: "_SessionCalls", token: str, call_id: str,
                 work: Callable[[], Any]) -> None:
        super().__init__()
        self.call_id = call_id
        self.session_token = token
        self._session = session
        self.set_running_or_notify_cancel()
        threading.Thread(target=self._work, args=(work,), daemon=True,
                         name="pyexec-call-" + call_id).start()

    def _work(self, work: Callable[[], Any]) -> None:
        _core.pending_call_id.set(self.call_id)
        try:
            value = work()
        except BaseException as err:  # noqa: BLE001 (handed to result())
            self.set_exception(err)
        else:
            self.set_result(value)

    def interrupt(self, *, timeout: Optional[float] = None) -> bool:
        """Interrupts this very call (InterruptRequest.call_id): it raises
        Cancelled and the session keeps its state. True when it was running
        or has not arrived yet (the server keeps the interrupt for it); False
        when it has ended."""
        return self._session._client._interrupt(self.session_token, self.call_id, timeout)


class _Calls:
    """eval/exec/call over one target: stateless, a session, or a context."""

    _client: "Client"

    def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
             has_value: bool, output: _core.Output,
             functions: Optional[Mapping[str, Function]] = None) -> Result:
        token = self._token()
        client = self._client
        call_id = _core.take_call_id(client._ids)
        fns = client._functions.for_call(functions)
        request = make(token)
        client._track(token, call_id)
        try:
            if fns is None:
                resp = client._unary(method, request, token, timeout, call_id)
            else:
                resp = client._run_rpc(method, request, token, timeout, fns, call_id)
        except PyExecError as err:
            self._lost(token, err)
            raise
        finally:
            client._untrack(token, call_id)
        res, deliveries = _core.outcome(resp, has_value, output)
        for callback, text in deliveries:
            callback(text)
        if isinstance(res, PythonError):
            raise res
        return res

    def _stream(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
                output: _core.Output) -> Stream:
        token = self._token()
        return self._client._open_stream(method, make(token), token, timeout, output,
                                         lambda err: self._lost(token, err))

    def _exec_live(self, make: Callable[[str], Any], timeout: Optional[float],
                   output: _core.Output) -> Result:
        """Exec through ExecStream, output to the callbacks as it is written.
        A callback that raises cancels the call (interrupting the code)."""
        kept = _core.Collected(output)
        with self._stream("ExecStream", make, timeout, output) as stream:
            try:
                for ev in stream:
                    kept.add(ev)
            except PythonError as err:
                raise kept.error(err) from None
        return kept.result()

    def _output(self, on_stdout: Optional[OutputCallback],
                on_stderr: Optional[OutputCallback]) -> _core.Output:
        return self._client.options.call_output(on_stdout, on_stderr)

    def eval_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None, result_as_ref: bool = False,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None,
                    functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Evaluates one expression; returns its value and captured output.
        result_as_ref (bound sessions): return a Ref even for a convertible value.
        on_stdout/on_stderr receive the output when the call returns (Eval
        has no streaming RPC) instead of the Result. functions: more
        functions the code may call with pyexec.call, for this call only."""
        return self._run("Eval", lambda t: _core.eval_request(t, code, locals, result_as_ref),
                         timeout, True, self._output(on_stdout, on_stderr), functions)

    def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None,
                    functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Executes statements; the Result's value is None. With on_stdout or
        on_stderr (here or the client's), the call runs as an ExecStream and
        the callbacks get each chunk as the code writes it; output without a
        callback stays in the Result. A call that may call back (registered
        or per-call functions) runs through Run instead: its output reaches
        the callbacks when it returns."""
        make = lambda t: _core.exec_request(t, code, locals)  # noqa: E731
        output = self._output(on_stdout, on_stderr)
        if output.live() and self._client._functions.for_call(functions) is None:
            return self._exec_live(make, timeout, output)
        return self._run("Exec", make, timeout, False, output, functions)

    def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None, result_as_ref: bool = False,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None,
                    functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted.
        on_stdout/on_stderr receive the output when the call returns; for
        output while it runs, use call_stream(..., on_stdout=...)."""
        return self._run("Call", lambda t: _core.call_request(t, module, function, args, kwargs,
                                                              result_as_ref),
                         timeout, True, self._output(on_stdout, on_stderr), functions)

    def call_method_result(self, ref: Ref, method: str, args: Sequence[Any] = (),
                           kwargs: Optional[Mapping[str, Any]] = None, *,
                           timeout: Optional[float] = None,
                           result_as_ref: bool = False,
                           on_stdout: Optional[OutputCallback] = None,
                           on_stderr: Optional[OutputCallback] = None,
                           functions: Optional[Mapping[str, Function]] = None) -> Result:
        """Calls ref.method(*args, **kwargs) on the session's live object;
        `method` may be a dotted path."""
        return self._run("Call", lambda t: _core.call_request(
            t, "", method, args, kwargs, result_as_ref, target=ref), timeout, True,
            self._output(on_stdout, on_stderr), functions)

    def call_method(self, ref: Ref, method: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None, result_as_ref: bool = False,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None,
                    functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Calls ref.method(*args, **kwargs) and returns its value."""
        return self.call_method_result(ref, method, args, kwargs, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr, functions=functions).value

    def getattr(self, obj: Union[Ref, str], attribute: str, *,
                timeout: Optional[float] = None, result_as_ref: bool = False) -> Any:
        """Reads an attribute (a dotted path) of a Ref's object, or of the
        module named by a str, e.g. getattr("math", "pi")."""
        module, target = (obj, None) if isinstance(obj, str) else ("", obj)
        make = lambda t: _core.call_request(t, module, attribute, (), None, result_as_ref,
                                            target=target, get_attribute=True)  # noqa: E731
        return self._run("Call", make, timeout, True, self._output(None, None)).value

    def exec_stream(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None) -> Stream:
        """Executes statements; returns a Stream of Stdout/Stderr events sent
        as the code writes them. The RPC starts now."""
        return self._stream("ExecStream", lambda t: _core.exec_request(t, code, locals),
                            timeout, self._output(on_stdout, on_stderr))

    def call_stream(self, module: str, function: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None) -> Stream:
        """Calls module.function(*args, **kwargs); returns a Stream of output
        chunks and an Item per element when the result is iterable (an
        iterator, generator, async generator, range, list, tuple, set; str,
        bytes and mappings are one value), else one Item, the result."""
        return self._stream("CallStream",
                            lambda t: _core.call_request(t, module, function, args, kwargs),
                            timeout, self._output(on_stdout, on_stderr))

    def call_method_stream(self, ref: Ref, method: str, args: Sequence[Any] = (),
                           kwargs: Optional[Mapping[str, Any]] = None, *,
                           timeout: Optional[float] = None,
                           on_stdout: Optional[OutputCallback] = None,
                           on_stderr: Optional[OutputCallback] = None) -> Stream:
        """call_stream on a method of a Ref's object."""
        return self._stream("CallStream", lambda t: _core.call_request(
            t, "", method, args, kwargs, target=ref), timeout,
            self._output(on_stdout, on_stderr))

    def eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None, result_as_ref: bool = False,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None,
             functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return self.eval_result(code, locals, timeout=timeout, result_as_ref=result_as_ref,
                                on_stdout=on_stdout, on_stderr=on_stderr,
                                functions=functions).value

    def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None,
             functions: Optional[Mapping[str, Function]] = None) -> None:
        """Executes statements (live output with on_stdout/on_stderr, as
        exec_result)."""
        self.exec_result(code, locals, timeout=timeout, on_stdout=on_stdout,
                         on_stderr=on_stderr, functions=functions)

    def call(self, module: str, function: str, args: Sequence[Any] = (),
             kwargs: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None, result_as_ref: bool = False,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None,
             functions: Optional[Mapping[str, Function]] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return self.call_result(module, function, args, kwargs, timeout=timeout,
                                result_as_ref=result_as_ref, on_stdout=on_stdout,
                                on_stderr=on_stderr, functions=functions).value


class _SessionCalls(_Calls):
    """What only a bound session has: refs to release, calls to start and
    interrupt, snapshots."""

    def _bound_token(self) -> Optional[str]:
        """The token if bound now; never binds."""
        raise NotImplementedError

    def release(self, *refs: Union[Ref, str], timeout: Optional[float] = None) -> int:
        """Drops refs (Refs or ids) held by the session; returns how many were
        live. Unknown ids are ignored; an unbound handle holds none (0)."""
        token = self._bound_token()
        if token is None or not refs:
            return 0
        try:
            return int(self._client._unary("Release", _core.release_request(token, refs), token,
                                           timeout).released)
        except PyExecError as err:
            self._lost(token, err)
            raise

    def interrupt(self, call: Union[RunningCall, str, None] = None, *,
                  timeout: Optional[float] = None) -> bool:
        """Interrupts a call on the session, from any thread; that call raises
        Cancelled and the session keeps its state.

        With `call` (a RunningCall or its call_id), that very call, even if it
        has not reached the server yet. Without, the oldest call this client
        has in flight on the session, else whatever runs there. False when
        nothing was running (or the handle is not bound)."""
        token = self._bound_token()
        if token is None:
            return False
        try:
            if call is not None:
                call_id = call.call_id if isinstance(call, RunningCall) else call
                if not isinstance(call_id, str) or not call_id:
                    raise InvalidArgument("pyexec_client: interrupt() takes a RunningCall or "
                                          "a call id")
                return self._client._interrupt(token, call_id, timeout)
            ours = self._client._oldest_call(token)
            if ours is not None and self._client._interrupt(token, ours, timeout):
                return True
            return self._client._interrupt(token, "", timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise

    def _start(self, work: Callable[[], Any]) -> RunningCall:
        token = self._token()
        return RunningCall(self, token, self._client._ids.new(), work)

    def start_eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None, result_as_ref: bool = False,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """eval() in a thread of its own; returns the RunningCall at once
        (result() gives the value; interrupt() stops it). Output callbacks and
        registered functions run in that thread."""
        return self._start(lambda: self.eval(code, locals, timeout=timeout,
                                             result_as_ref=result_as_ref, on_stdout=on_stdout,
                                             on_stderr=on_stderr, functions=functions))

    def start_exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """exec() in a thread of its own (see start_eval); result() is None.

            running = s.start_exec("while True: pass")
            running.interrupt()          # True: never lost
            running.result()             # raises Cancelled
        """
        return self._start(lambda: self.exec(code, locals, timeout=timeout, on_stdout=on_stdout,
                                             on_stderr=on_stderr, functions=functions))

    def start_call(self, module: str, function: str, args: Sequence[Any] = (),
                   kwargs: Optional[Mapping[str, Any]] = None, *,
                   timeout: Optional[float] = None, result_as_ref: bool = False,
                   on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   functions: Optional[Mapping[str, Function]] = None) -> RunningCall:
        """call() in a thread of its own (see start_eval)."""
        return self._start(lambda: self.call(module, function, args, kwargs, timeout=timeout,
                                             result_as_ref=result_as_ref, on_stdout=on_stdout,
                                             on_stderr=on_stderr, functions=functions))

    def snapshot(self, *, timeout: Optional[float] = None) -> Snapshot:
        """The session's state as a Snapshot (its blob restores it with
        client.session(restore=...)); the session carries on unchanged."""
        token = self._token()
        try:
            return self._client._snapshot(token, timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise


class Session(_SessionCalls):
    """A session bound to one dedicated interpreter.

    `with client.session() as s:` binds on entry and unbinds on exit, also when
    the block raises. bind()/unbind() do the same by hand. A session is leased
    by default: if the client closes or the process dies without unbinding,
    the server unbinds it after its --lease_grace.
    """

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
        """The session token; None while not bound."""
        return self._bound.session if self._bound else None

    @property
    def idle_timeout(self) -> Optional[int]:
        """The idle timeout the server granted, in seconds; None while not bound."""
        return self._bound.idle_timeout if self._bound else None

    @property
    def owner(self) -> Optional[str]:
        """The address of the replica known to hold the session (with
        --peers: BindResponse.owner, or x-pyexec-owner of a forwarded call);
        calls go there once connected, unless it is the target itself. None
        if unknown."""
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
        """Why the lease ended while the session was bound (the server's
        reason, e.g. the session was unbound elsewhere or its worker died)."""
        return self._lease.ended if self._lease is not None else None

    @property
    def restore_lost(self) -> Tuple[_core.LostName, ...]:
        """After bind(restore=...): the modules that did not import again."""
        return self._bound.restore_lost if self._bound else ()

    @property
    def restore_error(self) -> Optional[PythonError]:
        """After bind(restore=...): the error __pyexec_restore__() raised."""
        return self._bound.restore_error if self._bound else None

    def bind(self, *, timeout: Optional[float] = None,
             restore: Union[Snapshot, bytes, None] = None) -> "Session":
        """Binds (with restore: a new session with a Snapshot's state) and,
        unless lease=False, leases it; the lease is held when this returns."""
        if self._bound is not None:
            raise PyExecError("pyexec_client: session already bound")
        blob = _core.restore_blob(restore) if restore is not None else self._restore
        self._bound = self._client._bind(self._idle_timeout_request, timeout, blob)
        if self._lease_wanted:
            self._lease = self._client._start_lease(self._bound.session, timeout)
        return self

    def unbind(self, *, timeout: Optional[float] = None) -> None:
        """Unbinds; a no-op when not bound. Unknown or expired tokens are fine."""
        bound, self._bound = self._bound, None
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
        if bound is not None:
            self._client._unbind(bound.session, timeout)

    def _token(self) -> str:
        if self._bound is None:
            raise PyExecError("pyexec_client: session not bound")
        return self._bound.session

    def _bound_token(self) -> Optional[str]:
        return self.token

    def __enter__(self) -> "Session":
        if self._bound is None:
            self.bind()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            self.unbind()
        except PyExecError:
            if exc_type is None:
                raise
            # The block's own exception matters more than a failed unbind.


class Context(_SessionCalls):
    """One of the client's shared contexts, like erlang_python's py:context(N).

    Its session is bound (and leased by the client) on first use and shared by
    every caller that picks the same number. If the server loses it
    (NOT_FOUND, ABORTED), that call raises and the next call binds a fresh
    session: state is never silently replaced.
    """

    def __init__(self, client: "Client", number: int) -> None:
        self._client = client
        self.number = number
        self._lock = threading.Lock()
        self._session: Optional[str] = None
        self._lease: Optional["_Lease"] = None

    @property
    def token(self) -> Optional[str]:
        return self._session

    def _token(self) -> str:
        with self._lock:
            if self._session is None:
                token = self._client._bind(None, None).session
                if self._client.options.lease:
                    self._lease = self._client._start_lease(token, None)
                self._session = token
            return self._session

    def _bound_token(self) -> Optional[str]:
        with self._lock:
            return self._session

    def _lost(self, token: str, err: PyExecError) -> None:
        if isinstance(err, (SessionNotFound, WorkerDied)):
            lease = None
            with self._lock:
                if self._session == token:
                    self._session = None
                    lease, self._lease = self._lease, None
            if lease is not None:
                lease.close()

    def unbind(self) -> None:
        """Unbinds the shared session now (the next call binds a new one)."""
        with self._lock:
            token, self._session = self._session, None
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
        if token is not None:
            self._client._unbind(token, None)


class _Lease:
    """A lease on one session: an Attach stream read by a thread of its own.

    Opened again when it fails: at once when the session moved (the stream
    ends UNAVAILABLE: the client attaches through the target, which knows
    where it went) or its owner cannot be reached, then with a back-off
    capped under the server's grace, for as long as the session lives. It
    stops when the session ends (the `ended` event, NOT_FOUND) or on close().
    """

    def __init__(self, client: "Client", token: str) -> None:
        self._client = client
        self.token = token
        self._cond = threading.Condition()
        self._closed = False
        self._held = False
        self._first = False  # the first attempt has an outcome
        self.ended: Optional[str] = None
        self._call: Any = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pyexec-lease")

    def start(self, wait: float) -> "_Lease":
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._first, wait)
        return self

    def held(self) -> bool:
        with self._cond:
            return self._held and not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            call, self._call = self._call, None
            self._cond.notify_all()
        if call is not None:
            call.cancel()
        self._client._lease_closed(self)

    def _set(self, held: bool, ended: Optional[str] = None) -> None:
        with self._cond:
            self._held = held
            self._first = True
            if ended is not None:
                self.ended = ended
            self._cond.notify_all()

    def _loop(self) -> None:
        try:
            self._attach()
        finally:
            with self._cond:
                self._first = True
                self._cond.notify_all()
            self._client._lease_closed(self)

    def _attach(self) -> None:
        client, token = self._client, self.token
        backoff = _core.LEASE_BACKOFF_MIN
        cap = _core.LEASE_BACKOFF_MAX
        failures = 0
        while True:
            owner = client._owners.route(token)
            stub = owner.stub if owner is not None else client._stub
            kw = client.options.rpc_kwargs(client.options.metadata, None)
            call = stub.Attach(pb.AttachRequest(session=token), **kw)
            with self._cond:
                if self._closed:
                    call.cancel()
                    return
                self._call = call
            try:
                for ev in call:
                    kind = ev.WhichOneof("event")
                    if kind == "attached":
                        cap = _core.lease_backoff_cap(ev.attached.grace_seconds)
                        backoff, failures = _core.LEASE_BACKOFF_MIN, 0
                        if owner is None:
                            client._owners.learn_metadata(token, call.initial_metadata())
                        self._set(True)
                    elif kind == "ended":
                        self._set(False, ev.ended.reason or "ended")
                        return
                self._set(False, "the lease stream ended")
                return
            except grpc.RpcError as rpc_err:
                with self._cond:
                    if self._closed:
                        return
                err = from_rpc_error(rpc_err)
            if isinstance(err, SessionNotFound) or err.code in _LEASE_FINAL:
                self._set(False, str(err))
                return
            self._set(False)
            failures += 1
            if owner is not None and isinstance(err, Unavailable):
                client._owners.failed(token, owner)
                continue  # through the target, at once
            if failures > 1 or not isinstance(err, Unavailable):
                with self._cond:
                    if self._cond.wait_for(lambda: self._closed, backoff):
                        return
                backoff = min(backoff * 2, cap)


# Lease stream errors that retrying cannot fix: the server has no leases, or
# refuses this client.
_LEASE_FINAL = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)


class _SyncOwner(Owner):
    def __init__(self, address: str, channel: Any, stub: Any) -> None:
        super().__init__(address, channel, stub)
        self.state: Optional[grpc.ChannelConnectivity] = None
        channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state
        if state == grpc.ChannelConnectivity.READY:
            self.ever_ready = True

    def close(self) -> None:
        try:
            self.channel.unsubscribe(self._on_state)
        finally:
            self.channel.close()


class _SyncOwners(OwnerTable[_SyncOwner]):
    def __init__(self, client: "Client") -> None:
        super().__init__(client.options.route_to_owner, client.options.target)
        self._make = client._make_channel

    def _open(self, address: str) -> _SyncOwner:
        channel = self._make(address)
        return _SyncOwner(address, channel, pb_grpc.PyExecStub(channel))

    def _connected(self, owner: _SyncOwner) -> bool:
        state = owner.state
        return state == grpc.ChannelConnectivity.READY or (
            state == grpc.ChannelConnectivity.IDLE and owner.ever_ready)


class Client(_Calls):
    """A connection to pyexecd. Thread-safe; the calls on the client itself are
    stateless (pooled interpreters). See pyexec_client._core.Options for the
    keyword arguments (TLS, bearer token, default timeout, contexts,
    wait_for_ready and reconnect back-off, output callbacks, leases, owner
    routing)."""

    def __init__(self, target: str, **options: Any) -> None:
        self._client = self
        self.options = _core.Options(target, **options)
        self._channel = self._make_channel(target)
        self._stub = pb_grpc.PyExecStub(self._channel)
        self._contexts_lock = threading.Lock()
        self._contexts: List[Optional[Context]] = [None] * self.options.num_contexts
        self._ids = _core.CallIds()
        self._functions = _callbacks.Registry()
        self._owners = _SyncOwners(self)
        self._state_lock = threading.Lock()
        self._leases: Set[_Lease] = set()
        self._inflight: Dict[str, Dict[str, None]] = {}
        self._callback_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        # Run calls whose response came and whose OK status is on its way.
        self._ending_runs: Set[Any] = set()
        self._closed = False

    def _make_channel(self, target: str) -> Any:
        creds = self.options.credentials()
        if creds is None:
            return grpc.insecure_channel(target, options=self.options.channel_options)
        return grpc.secure_channel(target, creds, options=self.options.channel_options)

    def _token(self) -> str:
        return ""

    # --- calls ---------------------------------------------------------------

    def _unary(self, method: str, request: Any, token: str, timeout: Optional[float],
               call_id: Optional[str] = None, wait_for_ready: bool = True) -> Any:
        """One unary RPC. A session's goes to its owner when known and
        connected, and is sent once more (through the target) if it fails
        UNAVAILABLE: the server did not run it."""
        if call_id is not None:
            md = self.options.call_metadata(call_id)
        elif method in ("Release", "Snapshot"):
            md = _core.nested_metadata(self.options.metadata)
        else:
            md = self.options.metadata
        at = _core.deadline(self.options.call_timeout(timeout))
        rpc_method = method
        retrier = _core.Retrier(at)
        while True:
            owner = self._owners.route(token) if token else None
            stub = owner.stub if owner is not None else self._stub
            kw = self.options.rpc_kwargs(md, at, wait_for_ready)
            try:
                if token and owner is None and self._owners.enabled:
                    resp, call = getattr(stub, rpc_method).with_call(request, **kw)
                    self._owners.learn_metadata(token, call.initial_metadata())
                    return resp
                return getattr(stub, rpc_method)(request, **kw)
            except grpc.RpcError as rpc_err:
                err = from_rpc_error(rpc_err)
            pause = retrier.pause(err, owner is not None) if token else None
            if pause is None:
                raise err
            if owner is not None:
                self._owners.failed(token, owner)
            time.sleep(pause)

    def _open_stream(self, method: str, request: Any, token: str, timeout: Optional[float],
                     output: _core.Output, on_error: Callable[[PyExecError], None]) -> Stream:
        md = self.options.call_metadata(_core.take_call_id(self._ids))
        at = _core.deadline(self.options.call_timeout(timeout))
        sent_to: List[Optional[_SyncOwner]] = [None]

        def start(owner: Optional[_SyncOwner]) -> Any:
            sent_to[0] = owner
            stub = owner.stub if owner is not None else self._stub
            return getattr(stub, method)(request, **self.options.rpc_kwargs(md, at))

        retrier = _core.Retrier(at)

        def retry(err: PyExecError) -> Any:
            """The stream started again, or None (raise err)."""
            pause = retrier.pause(err, sent_to[0] is not None)
            if pause is None:
                return None
            if sent_to[0] is not None:
                self._owners.failed(token, sent_to[0])
            time.sleep(pause)
            return start(self._owners.route(token))

        def on_first(call: Any) -> None:
            if sent_to[0] is None and self._owners.enabled:
                self._owners.learn_metadata(token, call.initial_metadata())

        call = start(self._owners.route(token) if token else None)
        if not token:
            return Stream(call, on_error, output)
        return Stream(call, on_error, output, retry, on_first)

    def _run_rpc(self, method: str, request: Any, token: str, timeout: Optional[float],
                 functions: Dict[str, Function], call_id: str) -> Any:
        """Eval/Exec/Call through Run: the callbacks Python asks for are run
        on the client's callback threads and answered on the same stream;
        the response comes last, then the client half-closes and the OK
        status follows. The response is returned as soon as it comes: the
        stream ends in the background (the call is kept referenced until
        then, so that it is not cancelled when dropped)."""
        md = self.options.call_metadata(call_id)
        at = _core.deadline(self.options.call_timeout(timeout))
        retrier = _core.Retrier(at)
        while True:
            owner = self._owners.route(token) if token else None
            stub = owner.stub if owner is not None else self._stub
            requests: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
            requests.put(_core.run_request(method, request))
            call = stub.Run(iter(requests.get, _HALF_CLOSE), **self.options.rpc_kwargs(md, at))
            response = None
            served = False
            try:
                for ev in call:
                    got = _core.run_response(ev)
                    if got is None:
                        served = True
                        self._callbacks().submit(self._serve_callback, ev.callback, functions,
                                                 requests)
                    else:
                        response = got
                        requests.put(_HALF_CLOSE)
                        break
                if response is None:
                    raise PyExecError("pyexec_client: Run ended without its response")
                if token and owner is None and self._owners.enabled:
                    self._owners.learn_metadata(token, call.initial_metadata())
                self._ending_runs.add(call)
                call.add_done_callback(self._ending_runs.discard)
                return response
            except grpc.RpcError as rpc_err:
                requests.put(_HALF_CLOSE)
                if response is not None:
                    return response  # the answer came; how the stream closed does not matter
                err = from_rpc_error(rpc_err)
            # A callback served means the call ran: it is not sent again.
            pause = retrier.pause(err, owner is not None) if token and not served else None
            if pause is None:
                raise err
            if owner is not None:
                self._owners.failed(token, owner)
            time.sleep(pause)

    def _callbacks(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._callback_pool
        if pool is None:
            with self._state_lock:
                if self._callback_pool is None:
                    # Re-entry blocks a thread per level, so the pool is
                    # generous; idle threads are reused.
                    self._callback_pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=64, thread_name_prefix="pyexec-callback")
                pool = self._callback_pool
        return pool

    @staticmethod
    def _serve_callback(request: Any, functions: Dict[str, Function],
                        requests: "queue.SimpleQueue[Any]") -> None:
        fn = _callbacks.find(functions, request)
        if fn is None:
            requests.put(pb.RunRequest(callback_result=_callbacks.unknown(request)))
            return
        reset = _callbacks.current_callback.set(request.id)
        try:
            args, kwargs = _callbacks.arguments(request)
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = _await_in_new_loop(value)
            answer = _callbacks.value_result(request.id, value)
        except BaseException as err:  # noqa: BLE001 (Python sees it as CallbackError)
            answer = _callbacks.error_result(request.id, err)
        finally:
            _callbacks.current_callback.reset(reset)
        # After the call's response the iterator has ended: a late answer
        # goes nowhere.
        requests.put(pb.RunRequest(callback_result=answer))

    def _track(self, token: str, call_id: str) -> None:
        if token:
            with self._state_lock:
                self._inflight.setdefault(token, {})[call_id] = None

    def _untrack(self, token: str, call_id: str) -> None:
        if token:
            with self._state_lock:
                calls = self._inflight.get(token)
                if calls is not None:
                    calls.pop(call_id, None)
                    if not calls:
                        del self._inflight[token]

    def _oldest_call(self, token: str) -> Optional[str]:
        with self._state_lock:
            calls = self._inflight.get(token)
            return next(iter(calls)) if calls else None

    def _interrupt(self, token: str, call_id: str, timeout: Optional[float]) -> bool:
        return bool(self._unary("Interrupt", pb.InterruptRequest(session=token, call_id=call_id),
                                token, timeout).interrupted)

    def _snapshot(self, token: str, timeout: Optional[float]) -> Snapshot:
        return _core.snapshot(self._unary("Snapshot", pb.SnapshotRequest(session=token), token,
                                          timeout))

    def _bind(self, idle_timeout: Optional[int], timeout: Optional[float],
              restore: Optional[bytes] = None) -> Bound:
        bound = _core.bound(self._unary("Bind", _core.bind_request(idle_timeout, restore), "",
                                        timeout))
        self._owners.learn(bound.session, bound.owner)
        return bound

    def _unbind(self, session: str, timeout: Optional[float]) -> None:
        # Never waits for a connection: a session on an unreachable server
        # cannot be released anyway, and close() and `with` must not hang.
        try:
            self._unary("Unbind", pb.UnbindRequest(session=session), session, timeout,
                        wait_for_ready=False)
        finally:
            self._owners.forget(session)

    def _start_lease(self, token: str, timeout: Optional[float]) -> _Lease:
        lease = _Lease(self, token)
        with self._state_lock:
            if self._closed:
                raise PyExecError("pyexec_client: the client is closed")
            self._leases.add(lease)
        wait = self.options.call_timeout(timeout)
        return lease.start(10.0 if wait is None else wait)

    def _lease_closed(self, lease: _Lease) -> None:
        with self._state_lock:
            self._leases.discard(lease)

    # --- the public API ------------------------------------------------------

    def session(self, idle_timeout: Optional[int] = None, *, lease: Optional[bool] = None,
                restore: Union[Snapshot, bytes, None] = None) -> Session:
        """A session handle; bound by `with` (or bind()), unbound at the
        block's end. lease: hold a lease while bound (default: the client's
        lease option). restore: a Snapshot (or its blob) the new session
        starts from."""
        return Session(self, idle_timeout, lease=lease, restore=restore)

    def attach(self, token: str, *, lease: bool = False) -> Session:
        """A handle on a session bound elsewhere (e.g. by `pyexec bind`), already
        bound; leaving its `with` block unbinds it. lease=True leases it too
        (the session then also ends after the grace once this client is gone)."""
        if not token:
            raise InvalidArgument("pyexec_client: empty session token")
        s = Session(self, lease=lease)
        s._bound = Bound(token, 0)
        if lease:
            s._lease = self._start_lease(token, None)
        return s

    def context(self, n: Optional[int] = None) -> Context:
        """Shared context number n (1..num_contexts); None picks one by thread."""
        i = _core.context_index(n, self.options.num_contexts, threading.get_native_id())
        with self._contexts_lock:
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
        """Registers a function that Python code calls as
        pyexec.call(name, *args, **kwargs) (or erlang.call): it gets the
        arguments as native values and its return value goes back; an
        exception it raises reaches Python as pyexec.CallbackError. Also a
        decorator: @client.register_function or
        @client.register_function("name"). Functions run on the client's
        callback threads; calls they make on the waiting session run nested
        (re-entry). Once any is registered, eval/exec/call go through Run."""
        return _callbacks.decorator_or_register(self._functions, name, fn)

    def unregister_function(self, name: str) -> bool:
        """Removes a registered function; False if there was none."""
        return self._functions.unregister(name)

    @property
    def functions(self) -> Tuple[str, ...]:
        """The names of the registered functions."""
        return self._functions.names()

    def snapshot(self, session: Union[Session, Context, str], *,
                 timeout: Optional[float] = None) -> Snapshot:
        """The state of a session (a handle or its token) as a Snapshot."""
        if isinstance(session, str):
            return self._snapshot(session, timeout)
        return session.snapshot(timeout=timeout)

    def stats(self, *, timeout: Optional[float] = None) -> Stats:
        """The server's pool figures."""
        return _core.stats(self._unary("GetStats", pb.GetStatsRequest(), "", timeout))

    def close(self) -> None:
        """Ends the leases (the server unbinds their sessions after its
        grace), unbinds the shared contexts (best effort) and closes the
        channels."""
        with self._state_lock:
            self._closed = True
            leases = list(self._leases)
            pool, self._callback_pool = self._callback_pool, None
        with self._contexts_lock:
            contexts, self._contexts = self._contexts, [None] * self.options.num_contexts
        for ctx in contexts:
            if ctx is not None:
                try:
                    ctx.unbind()
                except PyExecError:
                    pass
        for lease in leases:
            lease.close()
        for owner in self._owners.close():
            owner.close()
        if pool is not None:
            pool.shutdown(wait=False)
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _await_in_new_loop(awaitable: Any) -> Any:
    """A coroutine function registered in the sync client runs on an event
    loop of its own, in the callback's thread."""
    async def wait() -> Any:
        return await awaitable
    return asyncio.run(wait())


__all__: Tuple[str, ...] = ("Client", "Session", "Context", "Stream", "RunningCall")
