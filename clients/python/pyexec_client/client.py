"""The synchronous pyexec client (grpcio).

    client = Client("127.0.0.1:50051")
    client.eval("6*7")                                  # 42, stateless
    with client.session() as s:                         # bound here ...
        s.exec("import math; r = 2")
        s.eval("math.pi * r**2")
    # ... and unbound here, even on error
    client.context(1).call("math", "gcd", [12, 18])     # a shared, numbered context
"""

import threading
from types import TracebackType
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Type

import grpc

from . import _core
from ._core import Bound, Result, Stats
from ._stubs import pb_grpc
from .errors import InvalidArgument, PyExecError, SessionNotFound, WorkerDied, from_rpc_error


class _Calls:
    """eval/exec/call over one target: stateless, a session, or a context."""

    _client: "Client"

    def _token(self) -> str:
        raise NotImplementedError

    def _lost(self, token: str, err: PyExecError) -> None:
        """Called with the token of a call that failed with `err`."""

    def _run(self, method: str, make: Callable[[str], Any], timeout: Optional[float],
             has_value: bool) -> Result:
        token = self._token()
        try:
            return self._client._unary(method, make(token), timeout, has_value)
        except PyExecError as err:
            self._lost(token, err)
            raise

    def eval_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None) -> Result:
        """Evaluates one expression; returns its value and captured output."""
        return self._run("Eval", lambda t: _core.eval_request(t, code, locals), timeout, True)

    def exec_result(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None) -> Result:
        """Executes statements; the Result's value is None."""
        return self._run("Exec", lambda t: _core.exec_request(t, code, locals), timeout, False)

    def call_result(self, module: str, function: str, args: Sequence[Any] = (),
                    kwargs: Optional[Mapping[str, Any]] = None, *,
                    timeout: Optional[float] = None) -> Result:
        """Calls module.function(*args, **kwargs); `function` may be dotted."""
        return self._run("Call", lambda t: _core.call_request(t, module, function, args, kwargs),
                         timeout, True)

    def eval(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None) -> Any:
        """Evaluates one expression and returns its value."""
        return self.eval_result(code, locals, timeout=timeout).value

    def exec(self, code: str, locals: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None) -> None:
        """Executes statements."""
        self.exec_result(code, locals, timeout=timeout)

    def call(self, module: str, function: str, args: Sequence[Any] = (),
             kwargs: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None) -> Any:
        """Calls module.function(*args, **kwargs) and returns its value."""
        return self.call_result(module, function, args, kwargs, timeout=timeout).value


class Session(_Calls):
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


class Context(_Calls):
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
    keyword arguments (TLS, bearer token, default timeout, contexts)."""

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

    def _unary(self, method: str, request: Any, timeout: Optional[float],
               has_value: bool) -> Result:
        return _core.result(self._invoke(method, request, timeout), has_value)

    def _invoke(self, method: str, request: Any, timeout: Optional[float]) -> Any:
        kw = _core.stub_kwargs(self.options.metadata, self.options.call_timeout(timeout))
        try:
            return getattr(self._stub, method)(request, **kw)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _bind(self, idle_timeout: Optional[int], timeout: Optional[float]) -> Bound:
        return _core.bound(self._invoke("Bind", _core.bind_request(idle_timeout), timeout))

    def _unbind(self, session: str, timeout: Optional[float]) -> None:
        self._invoke("Unbind", _core.pb.UnbindRequest(session=session), timeout)

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
        return _core.stats(self._invoke("GetStats", _core.pb.GetStatsRequest(), timeout))

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


__all__: Tuple[str, ...] = ("Client", "Session", "Context")
