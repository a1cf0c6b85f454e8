"""Functions that Python code calls back with pyexec.call(name, *args, **kwargs)
(erlang.call is an alias): the client's registry and the answers it sends.
Shared by the sync and the asyncio clients; no I/O happens here.

A call runs through the Run RPC when the client has registered functions or
the call names its own (functions=...): the server sends a CallbackRequest
per pyexec.call on the call's own stream and the client answers each with a
CallbackResult, the value the function returned or the error it raised.
Calls the client makes while it runs a callback carry the callback's id
(x-pyexec-callback), so that they run on the interpreter that waits for it
(re-entry) instead of queueing behind it.
"""

import contextvars
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar, Union

from ._stubs import pb
from .errors import InvalidArgument
from .values import from_value, to_value

Function = Callable[..., Any]
"""A registered function: called with the positional and keyword arguments
Python passed to pyexec.call, as native values; its return value goes back.
In the asyncio client it may be a coroutine function (awaited); in the sync
client a coroutine function runs on an event loop of its own."""

F = TypeVar("F", bound=Function)

CALLBACK_HEADER = "x-pyexec-callback"

# The callback (CallbackRequest.id) whose function is running in this thread
# or task: calls made from inside it name it, so that they run nested.
current_callback: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar(
    "pyexec_client_current_callback", default=None)


class Registry:
    """The functions a client registered; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._functions: Dict[str, Function] = {}

    def register(self, name: str, fn: Function) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("pyexec_client: a function's name must be a non-empty str, "
                                  "got %r" % (name,))
        if not callable(fn):
            raise InvalidArgument("pyexec_client: register_function(%r, ...) needs a callable, "
                                  "got %s" % (name, type(fn).__qualname__))
        with self._lock:
            self._functions[name] = fn

    def unregister(self, name: str) -> bool:
        with self._lock:
            return self._functions.pop(name, None) is not None

    def names(self) -> Tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._functions))

    def for_call(self, per_call: Optional[Mapping[str, Function]]) -> Optional[Dict[str, Function]]:
        """The functions a call may use, or None when it has none and goes
        as a plain Eval/Exec/Call. A per-call mapping (even an empty one)
        asks for Run; its names take precedence over the registered ones."""
        with self._lock:
            if per_call is None:
                return dict(self._functions) if self._functions else None
            functions = dict(self._functions)
        for name, fn in per_call.items():
            if not callable(fn):
                raise InvalidArgument("pyexec_client: functions[%r] is not callable" % (name,))
            functions[name] = fn
        return functions


def decorator_or_register(registry: Registry, name_or_fn: Union[str, Function, None],
                          fn: Optional[Function]) -> Any:
    """register_function's three shapes: (name, fn), @register_function and
    @register_function(name)."""
    if fn is not None:
        if not isinstance(name_or_fn, str):
            raise InvalidArgument("pyexec_client: register_function(name, fn): name must be "
                                  "a str")
        registry.register(name_or_fn, fn)
        return fn
    if callable(name_or_fn):
        registry.register(_name_of(name_or_fn), name_or_fn)
        return name_or_fn
    if name_or_fn is not None and not isinstance(name_or_fn, str):
        raise InvalidArgument("pyexec_client: register_function takes a name, a function, "
                              "or both")

    name: Optional[str] = name_or_fn

    def decorate(f: F) -> F:
        registry.register(name if name is not None else _name_of(f), f)
        return f
    return decorate


def _name_of(fn: Function) -> str:
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name or name == "<lambda>":
        raise InvalidArgument("pyexec_client: give the name: register_function(name, fn)")
    return name


def arguments(request: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """A CallbackRequest's arguments as native values."""
    return (tuple(from_value(v) for v in request.args),
            {name: from_value(v) for name, v in request.kwargs.items()})


def unknown(request: Any) -> Any:
    """The answer to a name the client has no function for: Python's
    pyexec.call raises pyexec.CallbackError (type LookupError)."""
    return pb.CallbackResult(id=request.id, error=pb.PythonError(
        type="LookupError",
        message="pyexec_client: no function registered as %r" % request.name))


def value_result(request_id: str, value: Any) -> Any:
    """The answer carrying the function's return value (an error answer if
    it has no Value kind)."""
    try:
        return pb.CallbackResult(id=request_id, value=to_value(value))
    except Exception as err:  # noqa: BLE001 (ValueConversionError and anything odd)
        return error_result(request_id, err)


def error_result(request_id: str, err: BaseException) -> Any:
    """The answer carrying the function's exception: pyexec.call raises
    pyexec.CallbackError with this type and message."""
    return pb.CallbackResult(id=request_id, error=pb.PythonError(
        type=type(err).__name__, message=str(err)))


def find(functions: Mapping[str, Function], request: Any) -> Optional[Function]:
    return functions.get(request.name)

