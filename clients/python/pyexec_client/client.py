"""The synchronous pyexec client (grpcio).

    client = Client("127.0.0.1:50051")
    client.eval("6*7")                                  # 42, stateless
    with client.session() as s:                         # bound here ...
        s.exec("import math; r = 2")
        s.eval("math.pi * r**2")
    # ... and unbound here, even on error
    client.context(1).call("math", "gcd", [12, 18])     # a shared, numbered context
    client.exec("print('hi')", on_stdout=print)         # output as it is written
"""

import threading
from types import TracebackType
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union

import grpc

from . import _core
from ._core import Bound, Event, Item, OutputCallback, Result, Stats, Stderr, Stdout
from ._stubs import pb, pb_grpc
from .errors import (InvalidArgument, PyExecError, PythonError, SessionNotFound, WorkerDied,
                     from_rpc_error)
from .values import Ref


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
                 output: _core.Output = _core.Output()) -> None:
        self._call = call  # the grpc response iterator (also a grpc.Call)
        self._on_error = on_error
        self._output = output
        self._done = False

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
            self._done = True
            err = from_rpc_error(rpc_err)
            self._on_error(err)
            raise err from None
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


class _Calls:
    """eval/exec/call over one target: stateless, a session, or a context."""

    _client: "Client"

    def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
             has_value: bool, output: _core.Output) -> Result:
        token = self._token()
        try:
            resp = self._client._invoke(method, make(token), timeout)
        except PyExecError as err:
            self._lost(token, err)
            raise
        res, deliveries = _core.outcome(resp, has_value, output)
        for callback, text in deliveries:
            callback(text)
        if isinstance(res, PythonError):
            raise res
        return res

    def _stream(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
                output: _core.Output) -> Stream:
        token = self._token()
        call = self._client._start_stream(method, make(token), timeout)
        return Stream(call, lambda err: self._lost(token, err), output)

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
                    on_stderr: Optional[OutputCallback] = None) -> Result:
        """Evaluates one expression; returns its value and captured output.
        result_as_ref (bound sessions): return a Ref even for a convertible value.
        on_stdout/on_stderr receive the output when the call returns (Eval
        has no streaming RPC) instead of the Result."""
        return self._run("Eval", lambda t: _core.eval_request(t, code, locals, result_as_ref),
                         timeout, True, self._output(on_stdout, on_stderr))

    def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None) -> Result:
        """Executes statements; the Result's value is None. With on_stdout or
        on_stderr (here or the client's), the call runs as an ExecStream and
        the callbacks get each chunk as the code writes it; output without a
        callback stays in the Result."""
        make = lambda t: _core.exec_request(t, code, locals)  # noqa: E731
        output = self._output(on_stdout, on_stderr)
        if output.live():
            return self._exec_live(make, timeout, output)
        return self._run("Exec", make, timeout, False, output)

    def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None, result_as_ref: bool = False,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted.
        on_stdout/on_stderr receive the output when the call returns; for
        output while it runs, use call_stream(..., on_stdout=...)."""
        return self._run("Call", lambda t: _core.call_request(t, module, function, args, kwargs,
                                                              result_as_ref),
                         timeout, True, self._output(on_stdout, on_stderr))

    def call_method_result(self, ref: Ref, method: str, args: Sequence[Any] = (),
                           kwargs: Optional[Mapping[str, Any]] = None, *,
                           timeout: Optional[float] = None,
                           result_as_ref: bool = False,
                           on_stdout: Optional[OutputCallback] = None,
                           on_stderr: Optional[OutputCallback] = None) -> Result:
        """Calls ref.method(*args, **kwargs) on the session's live object;
        `method` may be a dotted path."""
        return self._run("Call", lambda t: _core.call_request(
            t, "", method, args, kwargs, result_as_ref, target=ref), timeout, True,
            self._output(on_stdout, on_stderr))

    def call_method(self, ref: Ref, method: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None, result_as_ref: bool = False,
                    on_stdout: Optional[OutputCallback] = None,
                    on_stderr: Optional[OutputCallback] = None) -> Any:
        """Calls ref.method(*args, **kwargs) and returns its value."""
        return self.call_method_result(ref, method, args, kwargs, timeout=timeout,
                                       result_as_ref=result_as_ref, on_stdout=on_stdout,
                                       on_stderr=on_stderr).value

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
        chunks and an Item per element when the result is an iterator or
        generator (else one Item, the result)."""
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
             on_stderr: Optional[OutputCallback] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return self.eval_result(code, locals, timeout=timeout, result_as_ref=result_as_ref,
                                on_stdout=on_stdout, on_stderr=on_stderr).value

    def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None) -> None:
        """Executes statements (live output with on_stdout/on_stderr, as
        exec_result)."""
        self.exec_result(code, locals, timeout=timeout, on_stdout=on_stdout,
                         on_stderr=on_stderr)

    def call(self, module: str, function: str, args: Sequence[Any] = (),
             kwargs: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None, result_as_ref: bool = False,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return self.call_result(module, function, args, kwargs, timeout=timeout,
                                result_as_ref=result_as_ref, on_stdout=on_stdout,
                                on_stderr=on_stderr).value


class _SessionCalls(_Calls):
    """What only a bound session has: refs to release, and a call to interrupt."""

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
            return int(self._client._invoke("Release", _core.release_request(token, refs),
                                            timeout).released)
        except PyExecError as err:
            self._lost(token, err)
            raise

    def interrupt(self, *, timeout: Optional[float] = None) -> bool:
        """Interrupts the call running on the session, from any thread; that
        call raises Cancelled and the session keeps its state. False when
        nothing was running (or the handle is not bound)."""
        token = self._bound_token()
        if token is None:
            return False
        try:
            return bool(self._client._invoke(
                "Interrupt", pb.InterruptRequest(session=token), timeout).interrupted)
        except PyExecError as err:
            self._lost(token, err)
            raise


class Session(_SessionCalls):
    """A session bound to one dedicated interpreter.

    `with client.session() as s:` binds on entry and unbinds on exit, also when
    the block raises. bind()/unbind() do the same by hand.
    """

    def __init__(self, client: "Client", idle_timeout: Optional[int] = None) -> None:
        self._client = client
        self._idle_timeout_request = idle_timeout
        self._bound: Optional[Bound] = None

    @property
    def token(self) -> Optional[str]:
        """The session token; None while not bound."""
        return self._bound.session if self._bound else None

    @property
    def idle_timeout(self) -> Optional[int]:
        """The idle timeout the server granted, in seconds; None while not bound."""
        return self._bound.idle_timeout if self._bound else None

    def bind(self, *, timeout: Optional[float] = None) -> "Session":
        if self._bound is not None:
            raise PyExecError("pyexec_client: session already bound")
        self._bound = self._client._bind(self._idle_timeout_request, timeout)
        return self

    def unbind(self, *, timeout: Optional[float] = None) -> None:
        """Unbinds; a no-op when not bound. Unknown or expired tokens are fine."""
        bound, self._bound = self._bound, None
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

    Its session is bound on first use and shared by every caller that picks the
    same number. If the server loses it (NOT_FOUND, ABORTED), that call raises
    and the next call binds a fresh session: state is never silently replaced.
    """

    def __init__(self, client: "Client", number: int) -> None:
        self._client = client
        self.number = number
        self._lock = threading.Lock()
        self._session: Optional[str] = None

    @property
    def token(self) -> Optional[str]:
        return self._session

    def _token(self) -> str:
        with self._lock:
            if self._session is None:
                self._session = self._client._bind(None, None).session
            return self._session

    def _bound_token(self) -> Optional[str]:
        with self._lock:
            return self._session

    def _lost(self, token: str, err: PyExecError) -> None:
        if isinstance(err, (SessionNotFound, WorkerDied)):
            with self._lock:
                if self._session == token:
                    self._session = None

    def unbind(self) -> None:
        """Unbinds the shared session now (the next call binds a new one)."""
        with self._lock:
            token, self._session = self._session, None
        if token is not None:
            self._client._unbind(token, None)


class Client(_Calls):
    """A connection to pyexecd. Thread-safe; the calls on the client itself are
    stateless (pooled interpreters). See pyexec_client._core.Options for the
    keyword arguments (TLS, bearer token, default timeout, contexts,
    wait_for_ready and reconnect back-off, output callbacks)."""

    def __init__(self, target: str, **options: Any) -> None:
        self._client = self
        self.options = _core.Options(target, **options)
        creds = self.options.credentials()
        if creds is None:
            self._channel = grpc.insecure_channel(target, options=self.options.channel_options)
        else:
            self._channel = grpc.secure_channel(target, creds,
                                                options=self.options.channel_options)
        self._stub = pb_grpc.PyExecStub(self._channel)
        self._contexts_lock = threading.Lock()
        self._contexts: List[Optional[Context]] = [None] * self.options.num_contexts

    def _token(self) -> str:
        return ""

    def _start_stream(self, method: str, request: Any, timeout: Optional[float]) -> Any:
        """Starts a server-streaming RPC; its errors surface while reading."""
        return getattr(self._stub, method)(request, **self.options.call_kwargs(timeout))

    def _invoke(self, method: str, request: Any, timeout: Optional[float],
                wait_for_ready: bool = True) -> Any:
        kw = self.options.call_kwargs(timeout, wait_for_ready)
        try:
            return getattr(self._stub, method)(request, **kw)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _bind(self, idle_timeout: Optional[int], timeout: Optional[float]) -> Bound:
        return _core.bound(self._invoke("Bind", _core.bind_request(idle_timeout), timeout))

    def _unbind(self, session: str, timeout: Optional[float]) -> None:
        # Never waits for a connection: a session on an unreachable server
        # cannot be released anyway, and close() and `with` must not hang.
        self._invoke("Unbind", pb.UnbindRequest(session=session), timeout,
                     wait_for_ready=False)

    def session(self, idle_timeout: Optional[int] = None) -> Session:
        """A session handle; bound by `with` (or bind()), unbound at the block's end."""
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
        """Shared context number n (1..num_contexts); None picks one by thread."""
        i = _core.context_index(n, self.options.num_contexts, threading.get_native_id())
        with self._contexts_lock:
            ctx = self._contexts[i]
            if ctx is None:
                ctx = self._contexts[i] = Context(self, i + 1)
            return ctx

    def stats(self, *, timeout: Optional[float] = None) -> Stats:
        """The server's pool figures."""
        return _core.stats(self._invoke("GetStats", pb.GetStatsRequest(), timeout))

    def close(self) -> None:
        """Unbinds the shared contexts (best effort) and closes the channel."""
        with self._contexts_lock:
            contexts, self._contexts = self._contexts, [None] * self.options.num_contexts
        for ctx in contexts:
            if ctx is not None:
                try:
                    ctx.unbind()
                except PyExecError:
                    pass
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__: Tuple[str, ...] = ("Client", "Session", "Context", "Stream")
