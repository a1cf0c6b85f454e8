"""What the sync and the asyncio clients share: options, channel credentials,
request building and response decoding. No I/O happens here."""

import contextvars
import itertools
import math
import os
import secrets
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._callbacks import CALLBACK_HEADER, current_callback
from ._stubs import pb
from .errors import InvalidArgument, PyExecError, PythonError, Unavailable
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
class LostName:
    """A name a snapshot could not carry (a socket, a thread, an open file...),
    or a module that no longer imports where the snapshot was restored."""
    name: str
    type: str
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """A session's state (Snapshot RPC): give `blob` to
    client.session(restore=blob) (or bind(restore=blob)) for a new session
    with that state, for the same principal only. `lost` lists what the blob
    lacks, `modules` what a restore re-imports, `refs` the live refs it
    carries (under the same ids)."""
    blob: bytes
    lost: Tuple[LostName, ...] = ()
    modules: Tuple[str, ...] = ()
    refs: int = 0


@dataclass(frozen=True)
class Bound:
    """What Bind granted: the session token and the idle timeout in seconds;
    the replica that holds it (with --peers); after a restore, what did not
    come back and the error __pyexec_restore__() raised."""
    session: str
    idle_timeout: int
    owner: str = ""
    restore_lost: Tuple[LostName, ...] = ()
    restore_error: Optional[PythonError] = None


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
    lease: lease the sessions the client binds (sessions, `with` blocks,
        shared contexts): an Attach stream held open while the client lives;
        when it ends (the client closes, the process dies, the connection is
        lost) the server unbinds the session after its --lease_grace. False:
        sessions only expire when idle. A session may say otherwise
        (client.session(lease=...)).
    route_to_owner: send a session's calls straight to the replica that holds
        it (BindResponse.owner, x-pyexec-owner) once a channel to it has
        connected; the target stays the fallback. Without --peers on the
        server there is no owner and nothing changes.
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
                 lease: bool = True, route_to_owner: bool = True,
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
        self.lease = bool(lease)
        self.route_to_owner = bool(route_to_owner)
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
        return self.rpc_kwargs(self.metadata, deadline(self.call_timeout(timeout)),
                               wait_for_ready)

    def rpc_kwargs(self, metadata: Metadata, at: Optional[float],
                   wait_for_ready: bool = True) -> Dict[str, Any]:
        """The grpc stub arguments of one attempt of a call whose deadline is
        `at` (time.monotonic(); None: none)."""
        kw: Dict[str, Any] = {}
        if metadata:
            kw["metadata"] = metadata
        if at is not None:
            kw["timeout"] = max(0.0, at - time.monotonic())
        if self.wait_for_ready and wait_for_ready:
            kw["wait_for_ready"] = True
        return kw

    def call_metadata(self, call_id: str) -> Metadata:
        """The metadata of an Eval/Exec/Call/stream/Run: the client's, the
        call's name (x-pyexec-call-id, for an Interrupt that names it), and
        the callback being run, if any (x-pyexec-callback: the call runs
        nested on the interpreter that waits for it)."""
        md = self.metadata + ((CALL_ID_HEADER, call_id),)
        return nested_metadata(md)


CALL_ID_HEADER = "x-pyexec-call-id"
# A pause before a session call that failed UNAVAILABLE through the target is
# sent again (a draining replica's GOAWAY has then reached the channel).
RETRY_PAUSE = 0.05
# A session whose replica drains is moved to another one; until the move is
# done (about a second) its calls fail UNAVAILABLE with this in the message.
# They did not run: they are sent again with back-off from RETRY_PAUSE up to
# MOVE_RETRY_MAX_PAUSE, for up to MOVE_RETRY_FOR seconds (within the call's
# deadline).
MOVING = "is moving to another replica"
MOVE_RETRY_MAX_PAUSE = 1.0
MOVE_RETRY_FOR = 15.0


class Retrier:
    """Whether a session call that failed is sent again, and after which
    pause. Only UNAVAILABLE is retried (the server did not run the call; the
    same call id goes again). From an owner replica: at once, through the
    target (the owner is suspended by the caller). Through the target: once
    after RETRY_PAUSE, or, while the session is moving, with back-off until
    the move is done. Never past the call's deadline `at`."""

    def __init__(self, at: Optional[float]) -> None:
        self._at = at
        self._start: Optional[float] = None
        self._tries = 0
        self._pause = RETRY_PAUSE

    def pause(self, err: PyExecError, via_owner: bool = False) -> Optional[float]:
        """Seconds to wait before the call goes again, or None: raise err."""
        if not isinstance(err, Unavailable):
            return None
        if via_owner:
            return 0.0
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._tries += 1
        if MOVING in err.details:
            if now - self._start > MOVE_RETRY_FOR:
                return None
        elif self._tries > 1:
            return None
        pause = self._pause
        self._pause = min(self._pause * 2, MOVE_RETRY_MAX_PAUSE)
        if self._at is not None and now + pause >= self._at:
            return None
        return pause
# Lease streams that fail are opened again after a back-off that starts here
# and doubles up to a third of the server's grace (at most 1 s), so that the
# lease is back before the grace runs out.
LEASE_BACKOFF_MIN = 0.05
LEASE_BACKOFF_MAX = 1.0


def lease_backoff_cap(grace_seconds: int) -> float:
    return max(LEASE_BACKOFF_MIN, min(LEASE_BACKOFF_MAX, grace_seconds / 3.0))


def nested_metadata(md: Metadata) -> Metadata:
    """md, plus x-pyexec-callback when called from a running callback."""
    callback = current_callback.get()
    if callback is not None:
        return md + ((CALLBACK_HEADER, callback),)
    return md


def deadline(timeout: Optional[float]) -> Optional[float]:
    """The time.monotonic() deadline of a call of `timeout` seconds."""
    return None if timeout is None else time.monotonic() + timeout


class CallIds:
    """Unique names for the calls of one client: a random prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count(1)

    def new(self) -> str:
        return "%s.%x" % (self._prefix, next(self._next))


# The name a started call (start_eval/start_exec/start_call) gives the call it
# makes: set in its thread or task before the call, taken by the call.
pending_call_id: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar(
    "pyexec_client_pending_call_id", default=None)


def take_call_id(ids: CallIds) -> str:
    """The call's name: the one a started call set, else a new one."""
    named = pending_call_id.get()
    if named is not None:
        pending_call_id.set(None)  # callbacks and nested calls get their own
        return named
    return ids.new()


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


def lost_names(items: Any) -> Tuple[LostName, ...]:
    return tuple(LostName(x.name, x.type, x.reason) for x in items)


def bound(resp: Any) -> Bound:
    error = None
    if resp.HasField("restore_error"):
        e = resp.restore_error
        error = PythonError(e.type, e.message, e.traceback)
    return Bound(resp.session, resp.idle_timeout_seconds, resp.owner,
                 lost_names(resp.restore_lost), error)


def bind_request(idle_timeout: Optional[int], restore: Optional[bytes] = None) -> Any:
    if restore is not None and not isinstance(restore, (bytes, bytearray, memoryview)):
        raise InvalidArgument("pyexec_client: restore= takes a Snapshot's blob (bytes) or a "
                              "Snapshot, got %s" % type(restore).__qualname__)
    return pb.BindRequest(idle_timeout_seconds=int(idle_timeout or 0),
                          restore=bytes(restore) if restore is not None else b"")


def restore_blob(restore: Union[Snapshot, bytes, None]) -> Optional[bytes]:
    return restore.blob if isinstance(restore, Snapshot) else restore


def snapshot(resp: Any) -> Snapshot:
    return Snapshot(resp.blob, lost_names(resp.lost), tuple(resp.modules), resp.refs)


def run_request(method: str, request: Any) -> Any:
    """The first message of a Run: the Eval/Exec/Call request."""
    return pb.RunRequest(**{method.lower(): request})


def run_response(ev: Any) -> Optional[Any]:
    """A RunEvent's Eval/Exec/Call response, or None for a callback request."""
    kind = ev.WhichOneof("event")
    if kind == "callback":
        return None
    if kind is None:
        raise PyExecError("pyexec_client: Run event with no kind")
    return getattr(ev, kind)


def context_index(n: Optional[int], num_contexts: int, fallback: int) -> int:
    """1-based context number -> 0-based slot; `fallback` picks when n is None."""
    if n is None:
        return fallback % num_contexts
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_contexts:
        raise InvalidArgument("pyexec_client: context number %r outside 1..%d"
                              % (n, num_contexts))
    return n - 1

