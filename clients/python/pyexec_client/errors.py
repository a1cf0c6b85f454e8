"""The exception hierarchy of pyexec_client.

Every error the client raises is a PyExecError. A Python exception raised by
the remote code is a PythonError (the RPC itself succeeded); every other
subclass stands for one gRPC status code of the service.
"""

from typing import Dict, Optional, Tuple, Type

import grpc


class PyExecError(Exception):
    """Base class of every pyexec_client error.

    `code` is the gRPC status code behind the error (None for PythonError and
    for client-side errors), `details` the server's status message.
    """

    code: Optional[grpc.StatusCode] = None

    def __init__(self, message: str, *, code: Optional[grpc.StatusCode] = None,
                 details: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details


class PythonError(PyExecError):
    """The remote Python code raised. The session (if any) is intact."""

    def __init__(self, type: str, message: str, traceback: str,  # noqa: A002
                 stdout: str = "", stderr: str = "") -> None:
        super().__init__("%s: %s" % (type, message) if message else type)
        self.type = type
        self.message = message
        self.traceback = traceback
        # Output the call printed before it raised.
        self.stdout = stdout
        self.stderr = stderr


class SessionNotFound(PyExecError):
    """NOT_FOUND: the session token is unknown, unbound, expired or foreign."""
    code = grpc.StatusCode.NOT_FOUND


class Timeout(PyExecError):
    """DEADLINE_EXCEEDED: the deadline passed; the Python code was interrupted."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PoolExhausted(PyExecError):
    """RESOURCE_EXHAUSTED: no worker can be bound, or the wait queue is full."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class InvalidArgument(PyExecError):
    """INVALID_ARGUMENT: empty or oversized code, nesting too deep, bad value."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownRef(InvalidArgument):
    """INVALID_ARGUMENT `unknown ref`: a Ref the session does not hold (made
    up, released, from another session, or sent on a stateless call). The
    session itself is fine."""


class RefLimitExceeded(PyExecError):
    """RESOURCE_EXHAUSTED: the result would take the session past the server's
    --max_refs_per_session live refs. Nothing of it was kept; release() some."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(PyExecError):
    """UNAVAILABLE: the server is unreachable, draining or shutting down (also
    a bare CANCELLED that gRPC core gives a call the server never accepted
    while it shut down). Session calls are retried once before it is raised."""
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(PyExecError):
    """CANCELLED: the call was cancelled; the Python code was interrupted."""
    code = grpc.StatusCode.CANCELLED


class WorkerDied(PyExecError):
    """ABORTED: the worker died during the call; its session is gone."""
    code = grpc.StatusCode.ABORTED


class Unauthenticated(PyExecError):
    """UNAUTHENTICATED: missing or wrong credentials."""
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(PyExecError):
    """PERMISSION_DENIED: the credentials do not allow the call."""
    code = grpc.StatusCode.PERMISSION_DENIED


class ValueConversionError(PyExecError, TypeError):
    """A Python value has no pyexec Value kind (raised before any RPC)."""


_BY_CODE: Dict[grpc.StatusCode, Type[PyExecError]] = {
    cls.code: cls
    for cls in (SessionNotFound, Timeout, PoolExhausted, InvalidArgument, Unavailable,
                Cancelled, WorkerDied, Unauthenticated, PermissionDenied)
    if cls.code is not None
}


# Status codes that stand for more than one condition: the server's message
# tells them apart (see the status table in the repo's README).
_BY_DETAILS: Dict[grpc.StatusCode, Tuple[Tuple[str, Type[PyExecError]], ...]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (("unknown ref", UnknownRef),),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (("max_refs_per_session", RefLimitExceeded),),
}


# What gRPC core says when it ends a call itself: a server that shuts down
# may end calls it never accepted as a bare CANCELLED (grpc/grpc#41785). The
# server's own CANCELLED statuses (an Interrupt, a broken stream) always say
# why, and a call the client cancels ends with grpcio's "Locally cancelled by
# application!" (sync) or asyncio.CancelledError (asyncio), so a bare one is
# the server going away: Unavailable, which callers retry.
_BARE_CANCELLED = ("", "CANCELLED", "Cancelled", "cancelled")


def from_status(code: grpc.StatusCode, details: str) -> PyExecError:
    """The typed error for a non-OK status; PyExecError for other codes.
    A bare CANCELLED (no reason given: the server shutting down, not an
    Interrupt nor the client's own cancel) is Unavailable."""
    if code == grpc.StatusCode.CANCELLED and details.strip() in _BARE_CANCELLED:
        return Unavailable("UNAVAILABLE: the server ended the call (%s)"
                           % (details.strip() or "CANCELLED"),
                           code=grpc.StatusCode.UNAVAILABLE, details=details)
    cls = _BY_CODE.get(code, PyExecError)
    for needle, special in _BY_DETAILS.get(code, ()):
        if needle in details:
            cls = special
    name = code.name if code is not None else "UNKNOWN"
    return cls("%s: %s" % (name, details) if details else name, code=code, details=details)


def from_rpc_error(err: grpc.RpcError) -> PyExecError:
    """Maps a grpc.RpcError (sync or aio) to the typed error."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else str(err)) or ""
    return from_status(code, details)
