"""What the sync and the asyncio clients share: options, channel credentials,
request building and response decoding. No I/O happens here."""

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._stubs import pb
from .errors import InvalidArgument, PyExecError, PythonError
from .values import Ref, from_value, to_value, to_value_map

Metadata = Tuple[Tuple[str, str], ...]

OutputCallback = Callable[[str], object]
"""Receives one chunk of a call's stdout or stderr (on_stdout=, on_stderr=).
In the asyncio client it may also be a coroutine function; it is awaited."""

# Messages up to the server's own limit (64 MiB by default) in both directions.
_DEFAULT_CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Result:
    """A call's value together with the output it printed (bounded by the server)."""
    value: Any
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class Stats:
    """The server's pool figures (GetStats)."""
    num_workers: int = 0
    available_workers: int = 0
    checked_out: int = 0
    pending_requests: int = 0
    max_workers: int = 0
    starting_workers: int = 0
    busy_workers: int = 0
    workers_spawned: int = 0
    workers_died: int = 0
    calls_total: int = 0
    sessions: int = 0


@dataclass(frozen=True)
class Bound:
    """What Bind granted: the session token and the idle timeout in seconds."""
    session: str
    idle_timeout: int


def _read(path_or_bytes: Optional[Any]) -> Optional[bytes]:
    if path_or_bytes is None or isinstance(path_or_bytes, bytes):
        return path_or_bytes
    with open(os.fspath(path_or_bytes), "rb") as f:
        return f.read()


class Options:
    """Connection options shared by pyexec_client.Client and pyexec_client.aio.Client.

    tls: use TLS. Implied by any of root_certificates, private_key, certificate_chain.
    root_certificates: PEM bytes or a file path of the CA that signed the server
        (None: the system roots).
    private_key, certificate_chain: PEM bytes or file paths of a client
        certificate, for mutual TLS.
    server_name: overrides the name checked against the server certificate.
    token: a bearer token, sent as `authorization: Bearer TOKEN` on every call.
    metadata: more metadata sent on every call.
    timeout: default per-call timeout in seconds (None: no deadline, the server
        applies its own default).
    num_contexts: size of the pool of shared contexts (client.context(n)).
    wait_for_ready: calls wait for the channel to connect (until their
        deadline) instead of failing at once with Unavailable while the
        server cannot be reached. Unbind never waits: cleanup stays prompt.
    initial_reconnect_backoff, max_reconnect_backoff: seconds before the
        first reconnection attempt after a failed connection, and the cap of
        the growing delay between later attempts (grpc's
        grpc.initial_reconnect_backoff_ms / grpc.max_reconnect_backoff_ms;
        None: grpc's defaults, 1 s and 120 s).
    on_stdout, on_stderr: default output callbacks of every call (see
        OutputCallback and the README); a call's own on_stdout= / on_stderr=
        take precedence.
    channel_options: extra grpc channel arguments.
    """

    def __init__(self, target: str, *, tls: bool = False,
                 root_certificates: Optional[Any] = None, private_key: Optional[Any] = None,
                 certificate_chain: Optional[Any] = None, server_name: Optional[str] = None,
                 token: Optional[str] = None, metadata: Sequence[Tuple[str, str]] = (),
                 timeout: Optional[float] = None, num_contexts: Optional[int] = None,
                 wait_for_ready: bool = False,
                 initial_reconnect_backoff: Optional[float] = None,
                 max_reconnect_backoff: Optional[float] = None,
                 on_stdout: Optional[OutputCallback] = None,
                 on_stderr: Optional[OutputCallback] = None,
                 channel_options: Sequence[Tuple[str, Any]] = ()) -> None:
        if not target:
            raise InvalidArgument("pyexec_client: empty target address")
        self.target = target
        self.root_certificates = _read(root_certificates)
        self.private_key = _read(private_key)
        self.certificate_chain = _read(certificate_chain)
        self.tls = tls or any(x is not None for x in (
            self.root_certificates, self.private_key, self.certificate_chain))
        if (self.private_key is None) != (self.certificate_chain is None):
            raise InvalidArgument("pyexec_client: private_key and certificate_chain go together")
        md: List[Tuple[str, str]] = list(metadata)
        if token is not None:
            md.append(("authorization", "Bearer " + token))
        self.metadata: Metadata = tuple(md)
        self.timeout = timeout
        self.num_contexts = num_contexts or os.cpu_count() or 1
        self.wait_for_ready = bool(wait_for_ready)
        self.output = Output(_callback("on_stdout", on_stdout),
                             _callback("on_stderr", on_stderr))
        self.channel_options = list(_DEFAULT_CHANNEL_OPTIONS)
        initial_ms = _backoff_ms("initial_reconnect_backoff", initial_reconnect_backoff)
        max_ms = _backoff_ms("max_reconnect_backoff", max_reconnect_backoff)
        if initial_ms is not None and max_ms is not None and initial_ms > max_ms:
            raise InvalidArgument("pyexec_client: initial_reconnect_backoff %r is more than "
                                  "max_reconnect_backoff %r"
                                  % (initial_reconnect_backoff, max_reconnect_backoff))
        if initial_ms is not None:
            self.channel_options.append(("grpc.initial_reconnect_backoff_ms", initial_ms))
        if max_ms is not None:
            self.channel_options.append(("grpc.max_reconnect_backoff_ms", max_ms))
        self.channel_options.extend(channel_options)
        if server_name:
            self.channel_options.append(("grpc.ssl_target_name_override", server_name))

    def credentials(self) -> Optional[grpc.ChannelCredentials]:
        """TLS channel credentials, or None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates, private_key=self.private_key,
            certificate_chain=self.certificate_chain)

    def call_timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else timeout

    def call_output(self, on_stdout: Optional[OutputCallback],
                    on_stderr: Optional[OutputCallback]) -> "Output":
        """A call's callbacks: its own, else the client's."""
        stdout, stderr = _callback("on_stdout", on_stdout), _callback("on_stderr", on_stderr)
        return Output(self.output.stdout if stdout is None else stdout,
                      self.output.stderr if stderr is None else stderr)

    def call_kwargs(self, timeout: Optional[float], wait_for_ready: bool = True) -> Dict[str, Any]:
        """The grpc stub arguments of one call; wait_for_ready=False opts a
        call out of the client's wait_for_ready (cleanup)."""
        kw: Dict[str, Any] = {}
        if self.metadata:
            kw["metadata"] = self.metadata
        deadline = self.call_timeout(timeout)
        if deadline is not None:
            kw["timeout"] = deadline
        if self.wait_for_ready and wait_for_ready:
            kw["wait_for_ready"] = True
        return kw


def _backoff_ms(name: str, seconds: Optional[float]) -> Optional[int]:
    if seconds is None:
        return None
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or seconds <= 0):
        raise InvalidArgument("pyexec_client: %s must be a positive number of seconds, got %r"
                              % (name, seconds))
    return max(1, round(seconds * 1000))


def _callback(name: str, cb: Optional[OutputCallback]) -> Optional[OutputCallback]:
    if cb is not None and not callable(cb):
        raise InvalidArgument("pyexec_client: %s must be callable, got %s"
                              % (name, type(cb).__qualname__))
    return cb


@dataclass(frozen=True)
class Output:
    """Where a call's output goes: each stream to its callback, or, when it
    has none, into the call's Result (or PythonError)."""
    stdout: Optional[OutputCallback] = None
    stderr: Optional[OutputCallback] = None

    def live(self) -> bool:
        """True when some output goes to a callback."""
        return self.stdout is not None or self.stderr is not None

    def callback(self, ev: "Union[Stdout, Stderr]") -> Optional[OutputCallback]:
        """The callback that receives an output event, if any."""
        return self.stdout if isinstance(ev, Stdout) else self.stderr

    def split(self, stdout: str, stderr: str
              ) -> Tuple[List[Tuple[OutputCallback, str]], str, str]:
        """A finished call's captured output: (callback, text) deliveries, and
        the stdout and stderr left for the Result."""
        deliveries: List[Tuple[OutputCallback, str]] = []
        if self.stdout is not None:
            if stdout:
                deliveries.append((self.stdout, stdout))
            stdout = ""
        if self.stderr is not None:
            if stderr:
                deliveries.append((self.stderr, stderr))
            stderr = ""
        return deliveries, stdout, stderr


def eval_request(session: str, code: str, locals: Optional[Mapping[str, Any]],
                 result_as_ref: bool = False) -> Any:
    return pb.EvalRequest(session=session, code=code, locals=to_value_map(locals),
                          result_as_ref=result_as_ref)


def exec_request(session: str, code: str, locals: Optional[Mapping[str, Any]]) -> Any:
    return pb.ExecRequest(session=session, code=code, locals=to_value_map(locals))


def call_request(session: str, module: str, function: str, args: Sequence[Any],
                 kwargs: Optional[Mapping[str, Any]], result_as_ref: bool = False,
                 target: Optional[Ref] = None, get_attribute: bool = False) -> Any:
    """A CallRequest; with `target`, `function` is a method/attribute path of
    the ref's object and `module` must be empty."""
    if target is not None and not isinstance(target, Ref):
        raise InvalidArgument("pyexec_client: expected a Ref, got %s"
                              % type(target).__qualname__)
    return pb.CallRequest(session=session, module=module, function=function,
                          args=[to_value(a) for a in args], kwargs=to_value_map(kwargs),
                          result_as_ref=result_as_ref,
                          target_ref=target.id if target is not None else "",
                          get_attribute=get_attribute)


def release_request(session: str, refs: Sequence[Union[Ref, str]]) -> Any:
    ids = []
    for r in refs:
        if isinstance(r, Ref):
            ids.append(r.id)
        elif isinstance(r, str):
            ids.append(r)
        else:
            raise InvalidArgument("pyexec_client: release() takes Refs or ref ids, got %s"
                                  % type(r).__qualname__)
    return pb.ReleaseRequest(session=session, ref_ids=ids)


@dataclass(frozen=True)
class Stdout:
    """A stream event: a chunk the code wrote to stdout."""
    text: str


@dataclass(frozen=True)
class Stderr:
    """A stream event: a chunk the code wrote to stderr."""
    text: str


@dataclass(frozen=True)
class Item:
    """A call_stream event: one item of the iterator result, or the one result."""
    value: Any


Event = Union[Stdout, Stderr, Item]


def event(ev: Any) -> Optional[Event]:
    """Decodes an ExecEvent/CallEvent. None for the `end` event, or PythonError
    raised when the code raised (the stream's output was already delivered)."""
    kind = ev.WhichOneof("event")
    if kind == "stdout":
        return Stdout(ev.stdout)
    if kind == "stderr":
        return Stderr(ev.stderr)
    if kind == "value":
        return Item(from_value(ev.value))
    if kind == "end":
        if ev.end.HasField("error"):
            e = ev.end.error
            raise PythonError(e.type, e.message, e.traceback)
        return None
    raise PyExecError("pyexec_client: stream event with no kind")


def outcome(resp: Any, has_value: bool, output: Output
            ) -> Tuple[Union[Result, PythonError], List[Tuple[OutputCallback, str]]]:
    """Decodes an Eval/Exec/Call response into its Result, or the PythonError
    to raise, and the output deliveries to make first (see Output.split)."""
    deliveries, stdout, stderr = output.split(resp.stdout, resp.stderr)
    if resp.HasField("error"):
        e = resp.error
        return PythonError(e.type, e.message, e.traceback, stdout, stderr), deliveries
    return Result(from_value(resp.value) if has_value else None, stdout, stderr), deliveries


class Collected:
    """The output of a streamed call that has no callback, kept whole for its
    Result or PythonError (the server bounds only unary calls' output)."""

    def __init__(self, output: Output) -> None:
        self._output = output
        self._stdout: List[str] = []
        self._stderr: List[str] = []

    def add(self, ev: Event) -> None:
        if isinstance(ev, Stdout) and self._output.stdout is None:
            self._stdout.append(ev.text)
        elif isinstance(ev, Stderr) and self._output.stderr is None:
            self._stderr.append(ev.text)

    def result(self) -> Result:
        return Result(None, "".join(self._stdout), "".join(self._stderr))

    def error(self, err: PythonError) -> PythonError:
        """err (the stream's end) with the kept output."""
        return PythonError(err.type, err.message, err.traceback, "".join(self._stdout),
                           "".join(self._stderr))


def stats(resp: Any) -> Stats:
    return Stats(**{f.name: getattr(resp, f.name) for f in fields(Stats)})


def bound(resp: Any) -> Bound:
    return Bound(resp.session, resp.idle_timeout_seconds)


def bind_request(idle_timeout: Optional[int]) -> Any:
    return pb.BindRequest(idle_timeout_seconds=int(idle_timeout or 0))


def context_index(n: Optional[int], num_contexts: int, fallback: int) -> int:
    """1-based context number -> 0-based slot; `fallback` picks when n is None."""
    if n is None:
        return fallback % num_contexts
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_contexts:
        raise InvalidArgument("pyexec_client: context number %r outside 1..%d"
                              % (n, num_contexts))
    return n - 1

