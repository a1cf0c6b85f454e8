"""Session snapshots: the Python half of WorkerRequest.snapshot and .restore.

Embedded into pyexec_worker at build time (worker/BUILD) and loaded as the
module `_pyexec_snapshot` right after the runner; importable on its own, so
that runner_test.py tests it with a plain python3 and a dict for namespace.

A session's state is its namespace (the worker's __main__), the modules it
imported and its live refs. The state is

    HEADER  pickle(meta)  cloudpickle(state)

HEADER names the format and the Python version (code objects are pickled by
value, so only the same minor version loads them). `meta` holds only str,
list and dict (the modules to import, and the names bound to modules); it is
loaded first, so that the modules are imported, and those that no longer
import are reported, before the rest is unpickled. `state` is
{'names': {name: value}, 'refs': {ref id: object}} in one pickle, so that an
object reachable from two names, or from a name and a ref, is still one
object after a restore.

Functions defined in the session keep the restored namespace as their
globals (`global x` in them rebinds the session's `x`), and their pickles do
not carry the globals they read: those come back as names of their own, so a
function that reads an unpicklable global is kept and the global alone is
lost.

What does not survive: objects that do not pickle (open sockets and files,
threads, locks, generators and coroutines in flight, asyncio tasks, most C
objects) and anything that holds one; modules that no longer import where
the state is restored. After a restore the worker (python_runner.cc) runs
the session's __pyexec_restore__() if it defines one, to reopen them.
"""
import builtins
import importlib
import io
import pickle
import re
import sys
import types

_HEADER_PREFIX = b'pyexec-snapshot 1 python '
_HEADER = _HEADER_PREFIX + ('%d.%d\n' % sys.version_info[:2]).encode()

# absl::StatusCode values of the failures a StateError carries.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9

# Names that describe the namespace's module, not the session's state.
_MODULE_ATTRIBUTES = frozenset((
    '__name__', '__doc__', '__package__', '__loader__', '__spec__',
    '__builtins__', '__file__', '__cached__'))
# The runner's own modules, never listed as modules of the session.
_RUNNER_MODULES = frozenset(('__main__', '_pyexec_runner', '_pyexec_snapshot'))
# A ref id: 96 bits in hex (python_runner.cc RefTable).
_REF_ID = re.compile(r'[0-9a-f]{24}\Z')
_REASON_CHARS = 300

# Modules present when this module loads (the interpreter's own and the
# runner's): every worker has them, so a snapshot does not list them.
_baseline_modules = frozenset(sys.modules)
# The modules the runner installs for the session (pyexec, erlang), by name:
# left out of a snapshot while a name is bound to them, since every worker
# has its own.
_installed = {}
# Modules that importing the pickler brought in: the session did not import
# them.
_pickler_modules = frozenset()
_pickler_class = None
# The namespace a restore is loading into (the globals of the session's
# functions), while it runs.
_restoring = None
_MISSING = object()


class StateError(Exception):
    """A snapshot or restore that cannot be done: `code` is the
    absl::StatusCode of the failure the worker answers with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def mark_installed(names):
    """Records the modules the runner bound in the namespace (by name in
    sys.modules), so that snapshots leave them out."""
    for name in names:
        if name in sys.modules:
            _installed[name] = sys.modules[name]


def _namespace_being_restored():
    """The globals of a session's function, once unpickled."""
    if _restoring is None:
        raise pickle.UnpicklingError('a session function outside a restore')
    return _restoring


class _NamespaceMarker:
    """Stands for the session's namespace in a pickled function."""

    def __reduce__(self):
        return _namespace_being_restored, ()


_NAMESPACE = _NamespaceMarker()


def _load_pickler():
    """The pickler class, made on first use: the import costs a worker that
    never snapshots nothing."""
    global _pickler_class, _pickler_modules
    if _pickler_class is not None:
        return _pickler_class
    before = set(sys.modules)
    import cloudpickle
    _pickler_modules = _pickler_modules | (set(sys.modules) - before)

    class SessionPickler(cloudpickle.CloudPickler):
        """cloudpickle, with the session's functions bound to the namespace
        they are restored into (not a copy of the globals they read)."""

        def __init__(self, file, namespace):
            super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
            self._namespace = namespace

        def reducer_override(self, obj):
            if (isinstance(obj, types.FunctionType)
                    and obj.__globals__ is self._namespace):
                return self._session_function_reduce(obj)
            if isinstance(obj, io.TextIOWrapper):
                # cloudpickle would carry a text file open for reading as a
                # StringIO of its whole content: not the file, and
                # unbounded. A file is lost like every other descriptor.
                raise pickle.PicklingError(
                    'an open file does not survive a snapshot; reopen it in '
                    '__pyexec_restore__')
            return super().reducer_override(obj)

        def _session_function_reduce(self, func):
            # cloudpickle's reduction of a function by value, with the
            # namespace marker for globals and no globals in its state.
            make, args, state, items, dict_items, setter = (
                self._dynamic_function_reduce(func))
            args = (args[0], _NAMESPACE) + tuple(args[2:])
            func_dict, slots = state
            slots = dict(slots)
            slots['__globals__'] = {}
            return make, args, (func_dict, slots), items, dict_items, setter

    _pickler_class = SessionPickler
    return SessionPickler


class _TooBig(Exception):
    pass


class _BoundedWriter:
    """A file for the pickler that refuses to grow past `limit` bytes (0: no
    limit), so that an oversized state stops early; `keep` False only
    counts."""

    def __init__(self, limit, keep=True):
        self._limit = limit
        self._buffer = io.BytesIO() if keep else None
        self.size = 0

    def write(self, data):
        n = memoryview(data).nbytes
        self.size += n
        if self._limit and self.size > self._limit:
            raise _TooBig()
        if self._buffer is not None:
            self._buffer.write(data)
        return n

    def getvalue(self):
        return self._buffer.getvalue()


def _type_name(obj):
    t = type(obj)
    if t.__module__ in ('builtins', None):
        return t.__qualname__
    return '%s.%s' % (t.__module__, t.__qualname__)


def _one_line(error):
    text = '%s: %s' % (type(error).__name__, error)
    text = ' '.join(text.split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + '...'


def _session_modules():
    """The modules the session imported, in import order: not the
    interpreter's or the runner's, not built in, and importable again by
    the name they are registered under."""
    out = []
    for name, module in list(sys.modules.items()):
        if (name in _baseline_modules or name in _pickler_modules
                or name in _RUNNER_MODULES or name in _installed
                or name in sys.builtin_module_names
                or not isinstance(module, types.ModuleType)):
            continue
        spec = getattr(module, '__spec__', None)
        if spec is not None and getattr(spec, 'name', None) == name:
            out.append(name)
    return out


def _out_of_memory():
    return StateError(RESOURCE_EXHAUSTED,
                      'the worker ran out of memory while pickling the '
                      'session state')


def _too_big(limit):
    return StateError(RESOURCE_EXHAUSTED,
                      'the session state is more than %d bytes, the most a '
                      'snapshot may take' % limit)


def snapshot(namespace, refs, max_bytes):
    """Serializes a session: its namespace, the modules it imported and
    `refs` ({ref id: object}). Reads the session and changes nothing.

    Returns (state, lost, modules, refs carried): lost is a list of (name,
    type, reason) for what could not be pickled, left out one by one (a
    ref's name is 'ref <id>'). Raises StateError(RESOURCE_EXHAUSTED) when
    the state would take more than max_bytes (0: no limit) or memory runs
    out."""
    modules = _session_modules()
    pickler = _load_pickler()
    names, bindings, lost = {}, {}, []
    for name, value in list(namespace.items()):
        if not isinstance(name, str):
            lost.append((repr(name)[:_REASON_CHARS], _type_name(value),
                         'the name is not a str'))
            continue
        if name in _MODULE_ATTRIBUTES or _installed.get(name, _MISSING) is value:
            continue
        if (isinstance(value, types.ModuleType)
                and sys.modules.get(value.__name__) is value):
            bindings[name] = value.__name__
        else:
            names[name] = value
    refs = dict(refs)

    meta = pickle.dumps({'modules': modules, 'bindings': bindings},
                        protocol=pickle.HIGHEST_PROTOCOL)
    prefix = _HEADER + meta
    if max_bytes and len(prefix) > max_bytes:
        raise _too_big(max_bytes)

    def dump(obj, keep=True):
        # The limit counts the prefix, which a probe (keep False) only counts.
        writer = _BoundedWriter(max_bytes, keep)
        writer.write(prefix)
        pickler(writer, namespace).dump(obj)
        return writer

    # One pickle of everything; when it fails, each name and ref is tried
    # alone, those that fail are left out and the rest is pickled again.
    # Each round removes at least one item, so this ends.
    while True:
        try:
            state = dump({'names': names, 'refs': refs}).getvalue()
            break
        except _TooBig:
            raise _too_big(max_bytes) from None
        except MemoryError:
            raise _out_of_memory() from None
        except Exception as whole_error:
            culprits = []
            for table, label in ((names, '%s'), (refs, 'ref %s')):
                for key, value in table.items():
                    try:
                        dump(value, keep=False)
                    except _TooBig:
                        raise _too_big(max_bytes) from None
                    except MemoryError:
                        raise _out_of_memory() from None
                    except Exception as error:
                        culprits.append((table, key, label % key, value, error))
            if not culprits:
                raise StateError(
                    FAILED_PRECONDITION,
                    'the session state does not pickle as a whole, though '
                    'each name does: ' + _one_line(whole_error)) from None
            for table, key, label, value, error in culprits:
                del table[key]
                lost.append((label, _type_name(value), _one_line(error)))
    return state, lost, modules, len(refs)


def restore(namespace, state):
    """Loads a state made by snapshot() into `namespace`, a fresh session's:
    imports its modules, then binds its names. Returns (refs, lost): the
    refs to hold again, by their ids, and a list of (name, type, reason)
    for the modules (and the names bound to them) that no longer import.

    Raises StateError: INVALID_ARGUMENT when the state is not one that
    snapshot() made or does not unpickle, FAILED_PRECONDITION when another
    Python version made it, RESOURCE_EXHAUSTED when memory runs out. The
    namespace is then as it was (imported modules stay imported)."""
    global _restoring
    state = bytes(state)
    if not state.startswith(_HEADER_PREFIX):
        raise StateError(INVALID_ARGUMENT, 'not a pyexec session snapshot')
    if not state.startswith(_HEADER):
        made_by = state[len(_HEADER_PREFIX):].split(b'\n', 1)[0][:20]
        raise StateError(
            FAILED_PRECONDITION,
            'the snapshot was made by Python %s; this worker runs %d.%d' % (
                made_by.decode('ascii', 'replace'), *sys.version_info[:2]))
    stream = io.BytesIO(state)
    stream.seek(len(_HEADER))
    try:
        meta = pickle.load(stream)
        modules = meta['modules']
        bindings = meta['bindings']
        if not (isinstance(modules, list) and isinstance(bindings, dict)
                and all(isinstance(m, str) for m in modules)
                and all(isinstance(k, str) and isinstance(v, str)
                        for k, v in bindings.items())):
            raise ValueError('malformed module list')
    except Exception as error:
        raise StateError(INVALID_ARGUMENT,
                         'the snapshot does not unpickle: ' + _one_line(error)) from None

    lost = []
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as error:
            failed[name] = _one_line(error)
            lost.append((name, 'module', failed[name]))

    saved = dict(namespace)
    _load_pickler()  # its reconstructors, and _pickler_modules
    _restoring = namespace
    try:
        loaded = pickle.load(stream)
        if stream.read(1):
            raise ValueError('trailing bytes after the state')
        names = loaded['names']
        refs = loaded['refs']
        if not (isinstance(names, dict) and isinstance(refs, dict)
                and all(isinstance(k, str) for k in names)
                and all(isinstance(k, str) and _REF_ID.match(k) for k in refs)):
            raise ValueError('malformed names or refs')
    except BaseException as error:
        # Unpickling may have set names already (a function's state does).
        namespace.clear()
        namespace.update(saved)
        if isinstance(error, MemoryError):
            raise StateError(RESOURCE_EXHAUSTED,
                             'the snapshot does not fit in memory') from None
        if isinstance(error, Exception):
            raise StateError(INVALID_ARGUMENT,
                             'the snapshot does not unpickle: ' + _one_line(error)) from None
        raise
    finally:
        _restoring = None
    namespace.update(names)
    namespace['__builtins__'] = saved.get('__builtins__', builtins)
    for name, module_name in bindings.items():
        if module_name in failed:
            lost.append((name, 'module', '%s: %s' % (module_name, failed[module_name])))
            continue
        try:
            namespace[name] = importlib.import_module(module_name)
        except (Exception, SystemExit) as error:
            lost.append((name, 'module', '%s: %s' % (module_name, _one_line(error))))
    return refs, lost
