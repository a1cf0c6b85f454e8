"""The Python half of pyexec's worker runner.

Embedded into pyexec_worker at build time (worker/BUILD turns it into a C++
string) and loaded as the module `_pyexec_runner`. Kept in Python where that
is clearer than the C API: output capture, the code cache, namespaces and
exception formatting. It is also importable on its own, so that
runner_test.py tests it with a plain python3.
"""
import builtins
import importlib
import io
import linecache
import sys
import traceback

_MISSING = object()
_main = sys.modules['__main__'].__dict__


class Capture(io.TextIOBase):
    """A bounded stand-in for sys.stdout/sys.stderr during one call."""

    def __init__(self, limit):
        self._parts = []
        self._size = 0
        self._limit = limit
        self.truncated = False

    def writable(self):
        return True

    def isatty(self):
        return False

    @property
    def encoding(self):
        return 'utf-8'

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError('write() argument must be str, not %s' % type(s).__name__)
        n = len(s)
        if not self.truncated:
            room = self._limit - self._size
            if n > room:
                s = s[:room]
                self.truncated = True
            self._parts.append(s)
            self._size += len(s)
        return n

    def getvalue(self):
        return ''.join(self._parts)


class _CodeCache:
    """Compiled code by (source, mode). Source lines are registered with
    linecache under a unique filename so that tracebacks show them."""

    def __init__(self, capacity):
        self._capacity = capacity
        self._entries = {}
        self._serial = 0

    def get(self, source, mode):
        key = (source, mode)
        code = self._entries.get(key)
        if code is None:
            if len(self._entries) >= self._capacity:
                for old in self._entries.values():
                    linecache.cache.pop(old.co_filename, None)
                self._entries.clear()
            self._serial += 1
            filename = '<pyexec-%d>' % self._serial
            code = compile(source, filename, mode)
            linecache.cache[filename] = (len(source), None,
                                         source.splitlines(True), filename)
            self._entries[key] = code
        return code


_cache = _CodeCache(512)


def _namespace(fresh):
    if fresh:
        return {'__name__': '__main__', '__builtins__': builtins}
    return _main


def _run_with_locals(ns, local_values, fn):
    """Runs fn with local_values bound in ns for this call only. A name the
    code rebinds keeps its new value; the others are restored."""
    if not local_values:
        return fn()
    saved = {k: ns.get(k, _MISSING) for k in local_values}
    ns.update(local_values)
    try:
        return fn()
    finally:
        for k, old in saved.items():
            if ns.get(k, _MISSING) is local_values[k]:
                if old is _MISSING:
                    ns.pop(k, None)
                else:
                    ns[k] = old


def run_eval(source, fresh, local_values):
    code = _cache.get(source, 'eval')
    ns = _namespace(fresh)
    return _run_with_locals(ns, local_values, lambda: eval(code, ns))


def run_exec(source, fresh, local_values):
    code = _cache.get(source, 'exec')
    ns = _namespace(fresh)
    _run_with_locals(ns, local_values, lambda: exec(code, ns))
    return None


def run_call(module, function, args, kwargs, fresh):
    ns = _namespace(fresh)
    path = function.split('.')
    if module in ('__main__', ''):
        if path[0] in ns:
            target = ns[path[0]]
        elif hasattr(builtins, path[0]):
            target = getattr(builtins, path[0])
        else:
            raise NameError("name '%s' is not defined in __main__" % path[0])
        path = path[1:]
    else:
        target = importlib.import_module(module)
    for name in path:
        target = getattr(target, name)
    return target(*args, **kwargs)


def format_exception(exc):
    """(type name, message, formatted traceback) without runner frames."""
    tb = exc.__traceback__
    # Drop the frames of this module and of the lambda wrappers above the
    # user's code; keep everything from the first user frame on.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        tb = None
    lines = traceback.format_exception(type(exc), exc, tb)
    return type(exc).__name__, str(exc), ''.join(lines)
