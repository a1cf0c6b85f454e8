"""pyexec_client: a Python client for the pyexec.v1.PyExec service.

Sync API here (pyexec_client.Client); the asyncio flavour with the same names
is pyexec_client.aio. See clients/python/README.md.
"""

from ._callbacks import Function
from ._core import (Bound, Event, Item, LostName, OutputCallback, Result, Snapshot, Stats,
                    Stderr, Stdout)
from .client import Client, Context, RunningCall, Session, Stream
from .errors import (Cancelled, InvalidArgument, PermissionDenied, PoolExhausted, PyExecError,
                     PythonError, RefLimitExceeded, SessionNotFound, Timeout, Unauthenticated,
                     Unavailable, UnknownRef, ValueConversionError, WorkerDied)
from .values import Opaque, Ref, from_value, to_value

__all__ = [
    "Client", "Session", "Context", "Stream", "RunningCall", "Stdout", "Stderr", "Item", "Event",
    "Result", "OutputCallback", "Function", "Snapshot", "LostName",
    "Stats", "Bound", "Opaque", "Ref", "UnknownRef", "RefLimitExceeded",
    "PyExecError", "PythonError", "SessionNotFound", "Timeout", "PoolExhausted",
    "InvalidArgument", "Unavailable", "Cancelled", "WorkerDied", "Unauthenticated",
    "PermissionDenied", "ValueConversionError", "to_value", "from_value",
]
from . import aio  # noqa: E402,F401
