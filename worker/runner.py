"""The Python half of pyexec's worker runner.

Embedded into pyexec_worker at build time (worker/BUILD turns it into a C++
string) and loaded as the module `_pyexec_runner`. Kept in Python where that
is clearer than the C API: output capture, the code cache, namespaces and
exception formatting. It is also importable on its own, so that
runner_test.py tests it with a plain python3.
"""
import ast
import builtins
import collections.abc
import importlib
import inspect
import io
import linecache
import sys
import threading
import time
import traceback
import types

_MISSING = object()
_main = sys.modules['__main__'].__dict__

# KeyboardInterrupt (pyexecd's interrupt) is raised in the main thread at
# whatever bytecode it lands on, including just after a C call that acquired
# a lock and before the `with` block that releases it is entered (inside
# threading.Condition.__enter__, for one). A lock leaked that way deadlocks
# the next call. So the runner's own critical sections in the main thread
# defer the interrupt to their end: the SIGINT handler below only records it
# while one is open.
_main_thread = threading.main_thread()
_defer_depth = 0
_deferred_interrupt = False


def _on_sigint(signum, frame):
    global _deferred_interrupt
    if _defer_depth:
        _deferred_interrupt = True
        return
    raise KeyboardInterrupt


class _InterruptsDeferred:
    """In the main thread, holds back KeyboardInterrupt until the block
    ends, then raises it. Elsewhere it does nothing (only the main thread
    ever gets KeyboardInterrupt)."""

    __slots__ = ('_active',)

    def __enter__(self):
        global _defer_depth
        self._active = threading.current_thread() is _main_thread
        if self._active:
            _defer_depth += 1

    def __exit__(self, *exc):
        global _defer_depth, _deferred_interrupt
        if not self._active:
            return False
        _defer_depth -= 1
        if not _defer_depth and _deferred_interrupt:
            _deferred_interrupt = False
            raise KeyboardInterrupt
        return False


if threading.current_thread() is _main_thread:
    import signal
    signal.signal(signal.SIGINT, _on_sigint)


class Streamer:
    """Sends the output of a streamed call as chunks through emit(kind, text)
    (kind 1 = stdout, 2 = stderr) while the call runs.

    A chunk goes out at a line end, when 16 KiB are pending, when the other
    stream is written (so that the order of stdout and stderr is kept), or at
    most 50 ms after its first character was written (a timer thread; the
    main thread may be busy in user code). emit blocks while the server
    is not reading, which pauses the code that prints: that is the
    backpressure. Thread-safe: user code may print from its own threads.
    """

    CHUNK_BYTES = 16384
    INTERVAL_S = 0.05

    def __init__(self, emit):
        self._emit = emit
        self._cond = threading.Condition(threading.Lock())
        self._kind = 0
        self._parts = []
        self._size = 0
        self._first = 0.0
        self._active = True
        threading.Thread(target=self._timer, name='pyexec-stream-flush',
                         daemon=True).start()

    def write(self, kind, s):
        with _InterruptsDeferred(), self._cond:
            if not self._active or not s:
                return
            if self._kind != kind:
                self._flush_locked()
                self._kind = kind
            if not self._parts:
                self._first = time.monotonic()
                self._cond.notify()
            self._parts.append(s)
            self._size += len(s)
            if '\n' in s or self._size >= self.CHUNK_BYTES:
                self._flush_locked()

    def flush(self):
        with _InterruptsDeferred(), self._cond:
            if self._active:
                self._flush_locked()

    def close(self):
        """Sends what is pending; nothing is sent afterwards."""
        with _InterruptsDeferred(), self._cond:
            if self._active:
                self._flush_locked()
            self._active = False
            self._cond.notify()

    def _flush_locked(self):
        if not self._parts:
            return
        text = ''.join(self._parts)
        self._parts = []
        self._size = 0
        while text:
            # At most CHUNK_BYTES of UTF-8 (a character is at most 4 bytes).
            n = self.CHUNK_BYTES
            chunk = text[:n]
            while len(chunk.encode('utf-8', 'surrogatepass')) > self.CHUNK_BYTES:
                n //= 2
                chunk = text[:n]
            text = text[n:]
            self._emit(self._kind, chunk)

    def _timer(self):
        with self._cond:
            while self._active:
                if not self._parts:
                    self._cond.wait()
                    continue
                remaining = self._first + self.INTERVAL_S - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._flush_locked()


class Capture(io.TextIOBase):
    """A bounded stand-in for sys.stdout/sys.stderr during one call, or, with
    a Streamer, one that forwards what is written as stream `kind`."""

    def __init__(self, limit, streamer=None, kind=0):
        self._parts = []
        self._size = 0
        self._limit = limit
        self._streamer = streamer
        self._kind = kind
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
        if self._streamer is not None:
            self._streamer.write(self._kind, s)
            return n
        if not self.truncated:
            room = self._limit - self._size
            if n > room:
                s = s[:room]
                self.truncated = True
            self._parts.append(s)
            self._size += len(s)
        return n

    def flush(self):
        if self._streamer is not None:
            self._streamer.flush()

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
            # Top-level await: the code object then returns an awaitable,
            # which the caller awaits on the session's event loop.
            code = compile(source, filename, mode, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            linecache.cache[filename] = (len(source), None,
                                         source.splitlines(True), filename)
            self._entries[key] = code
        return code


_cache = _CodeCache(512)


def _namespace(fresh):
    if fresh:
        return {'__name__': '__main__', '__builtins__': builtins,
                'pyexec': sys.modules.get('pyexec'), 'erlang': sys.modules.get('erlang')}
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
    return _run_with_locals(ns, local_values, lambda: _settle(eval(code, ns)))


def run_exec(source, fresh, local_values):
    code = _cache.get(source, 'exec')
    ns = _namespace(fresh)
    # With a top-level await, eval of exec-mode code returns a coroutine.
    _run_with_locals(ns, local_values, lambda: _settle(eval(code, ns)))
    return None


# The worker's asyncio event loop, kept across calls (a session's tasks live
# on it between calls and run whenever a later call awaits). It is made on
# first use, in the worker itself (never in the zygote, whose epoll fd every
# worker would share).
_loop = None


def event_loop():
    global _loop
    if _loop is None or _loop.is_closed():
        import asyncio
        _loop = asyncio.new_event_loop()
    return _loop


def _install_loop_policy():
    """asyncio.get_event_loop() outside a running loop is the worker's loop,
    so that a task made by one call (ensure_future, create_task from a plain
    Exec) is on the loop that a later call's await runs. asyncio.run() and
    new_event_loop() work as usual; set_event_loop(None), which asyncio.run
    does when it ends, does not unset it."""
    import asyncio

    class _WorkerLoopPolicy(asyncio.DefaultEventLoopPolicy):
        def get_event_loop(self):
            return event_loop()

    asyncio.set_event_loop_policy(_WorkerLoopPolicy())


def _await(awaitable):
    """Runs `awaitable` to its end on the worker's loop. An interrupt
    (KeyboardInterrupt: pyexecd's deadline, cancel or Interrupt) cancels it
    and lets it clean up before the interrupt goes on."""
    import asyncio
    loop = event_loop()
    task = asyncio.ensure_future(awaitable, loop=loop)
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        task.cancel()
        try:
            loop.run_until_complete(task)
        except BaseException:
            pass
        raise


def _settle(result):
    """A result that is awaitable (a coroutine, a task, a future) is awaited;
    anything else is the result."""
    return _await(result) if inspect.isawaitable(result) else result


def run_call(module, function, args, kwargs, fresh, target=_MISSING,
             get_attribute=False):
    """Calls module.function(*args, **kwargs), or target.function(...) when a
    target object (a resolved ref) is given; with get_attribute, returns the
    attribute instead of calling it."""
    ns = _namespace(fresh)
    path = function.split('.')
    if target is not _MISSING:
        pass
    elif module in ('__main__', ''):
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
    if get_attribute:
        return target
    return _settle(target(*args, **kwargs))


def stream_items(result):
    """How CallStream sends `result`: None to send it as one value, else an
    iterator of the values to send one by one. Iterators, generators, async
    generators and other iterables (range, list, tuple, set) are iterated;
    str, bytes and mappings (dict) are one value."""
    if isinstance(result, (str, bytes, bytearray, memoryview, collections.abc.Mapping)):
        return None
    if hasattr(result, '__aiter__'):
        return _items_of_async(result)
    if isinstance(result, collections.abc.Iterable):
        return iter(result)
    return None


def _items_of_async(agen):
    it = agen.__aiter__()
    while True:
        try:
            item = _await(it.__anext__())
        except StopAsyncIteration:
            return
        yield item


class CallbackError(Exception):
    """A function the client registered failed, or has no such name:
    `type` and `message` are what the client reported."""

    def __init__(self, type_name, message):
        super().__init__('%s: %s' % (type_name, message) if type_name else message)
        self.type = type_name
        self.message = message


def install_client_modules(native_call):
    """Makes `pyexec.call(name, *args, **kwargs)` (and erlang_python's
    `erlang.call`) call the functions the client registered."""
    def call(name, /, *args, **kwargs):
        """Calls the client's function `name` with these arguments and returns
        its result. Raises CallbackError if it fails, TimeoutError if the
        client does not answer before the call's deadline, RuntimeError if
        the client registered no functions (it did not use Run)."""
        return native_call(name, args, kwargs)
    pyexec = types.ModuleType('pyexec', 'Calls back into the client that made the call.')
    pyexec.call = call
    pyexec.CallbackError = CallbackError
    erlang = types.ModuleType('erlang', 'erlang_python compatibility: erlang.call is pyexec.call.')
    erlang.call = call
    sys.modules['pyexec'] = pyexec
    sys.modules['erlang'] = erlang
    _install_loop_policy()
    # Code written for erlang_python calls erlang.call from a plain eval,
    # with no import: both names are there from the start (a session may
    # rebind them).
    _main['pyexec'] = pyexec
    _main['erlang'] = erlang


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


# threading's own os.register_at_fork hook, while the zygote has it
# disarmed: (the hook, its code).
_disarmed_threading_hook = None


def _do_nothing():
    pass


def before_forks():
    """In the zygote, once, after it has checked that it runs one thread:
    disarms threading's after-fork hook (threading._after_fork), which
    after_fork re-arms in each worker.

    That hook resets threading's locks and thread table in a forked child.
    For the zygote's workers the reset changes nothing: the zygote forks its
    only thread between requests, with no Python running and no lock held,
    and the child's thread ident is the zygote's (same thread-local block).
    Yet, as the first Python code run in each new worker, it copied about 80
    pages: a quarter of a worker's copy-on-write faults before its first
    call, and about a tenth of a session's CPU under churn."""
    global _disarmed_threading_hook
    t = sys.modules.get('threading')
    hook = getattr(t, '_after_fork', None)
    if _disarmed_threading_hook is not None or not isinstance(hook, types.FunctionType):
        return
    _disarmed_threading_hook = (hook, hook.__code__)
    hook.__code__ = _do_nothing.__code__


def after_fork(private_dir):
    """In a worker the zygote just forked, confined: what must differ from
    the zygote and between sessions. threading's after-fork hook is re-armed
    first (see before_forks): a process that user code forks may have other
    threads. os.register_at_fork hooks (random's own reseed among them)
    already ran; reseed again in case a preload replaced the module-level
    generator or seeded it deterministically. Python copied the environment
    when the zygote started: point os.environ (and tempfile) at the worker's
    private directory, its HOME and TMPDIR. Imports nothing: a module that
    the zygote did not load needs no fixing."""
    if _disarmed_threading_hook is not None:
        hook, code = _disarmed_threading_hook
        hook.__code__ = code
    r = sys.modules.get('random')
    if r is not None:
        r.seed()
    if private_dir is None:
        return
    environ = sys.modules['os'].environ
    environ['HOME'] = private_dir
    environ['TMPDIR'] = private_dir
    t = sys.modules.get('tempfile')
    if t is not None:
        t.tempdir = None
