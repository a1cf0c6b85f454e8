"""Shared fixture for the Python integration tests: starts the real pyexecd.

The binary comes from $PYEXECD, else <repo>/bazel-bin/server/pyexecd. It is
started on 127.0.0.1:0 and the fixture waits for its one stdout line
`listening on 127.0.0.1:PORT`, then for health SERVING. Its stderr goes to a
file that is printed (the part written during the test) when a test fails.

Stubs for pyexec.v1, grpc.health.v1 and grpc.reflection are generated with
Debian's protoc and grpc_python_plugin into $PYEXEC_PY_STUBS (set by
run_python_tests.sh), or into a temporary directory when the variable is
unset. The health and reflection protos are compiled under the Python package
`grpcstd` so that they do not shadow the real `grpc` package; their proto
package names (what goes on the wire) are unchanged.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf).
"""

import atexit
import ctypes
import glob
import faulthandler
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Upper bound for one test method; a hung test dumps every thread's stack and
# ends the process (the server dies with it through PR_SET_PDEATHSIG).
TEST_TIMEOUT_S = float(os.environ.get("PYEXEC_TEST_TIMEOUT", "150"))
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _generate_stubs(out):
    src = os.path.join(out, "_src")
    os.makedirs(os.path.join(src, "grpcstd"), exist_ok=True)
    for sub in ("health", "reflection"):
        dst = os.path.join(src, "grpcstd", sub)
        if not os.path.isdir(dst):
            shutil.copytree(os.path.join("/usr/share/grpc-proto/grpc", sub), dst)
    plugin = "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"
    subprocess.run(
        ["protoc", "-I", os.path.join(REPO, "proto"), "--python_out=" + out,
         "--grpc_python_out=" + out, plugin, os.path.join(REPO, "proto/pyexec/v1/pyexec.proto")],
        check=True)
    subprocess.run(
        ["protoc", "-I", src, "--python_out=" + out, "--grpc_python_out=" + out, plugin,
         "grpcstd/health/v1/health.proto", "grpcstd/reflection/v1alpha/reflection.proto",
         "grpcstd/reflection/v1/reflection.proto"],
        check=True, cwd=src)


def _ensure_stubs():
    out = os.environ.get("PYEXEC_PY_STUBS")
    if not out or not os.path.isfile(os.path.join(out, "pyexec/v1/pyexec_pb2.py")):
        out = tempfile.mkdtemp(prefix="pyexec_stubs_")
        atexit.register(shutil.rmtree, out, True)
        _generate_stubs(out)
        os.environ["PYEXEC_PY_STUBS"] = out
    if out not in sys.path:
        sys.path.insert(0, out)


_ensure_stubs()

# The tests fork (subprocess) while channels are open, and the children only
# exec. grpcio's fork support would re-initialise gRPC in each child, and with
# TLS channels open it aborts or hangs in its thread pool; it is not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc  # noqa: E402
from pyexec.v1 import pyexec_pb2 as pb  # noqa: E402
from pyexec.v1 import pyexec_pb2_grpc as pb_grpc  # noqa: E402
from grpcstd.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "pyexec.v1.PyExec"
MAX_CLIENT_MESSAGE = 64 * 1024 * 1024


def pyexecd_path():
    return os.environ.get("PYEXECD") or os.path.join(REPO, "bazel-bin/server/pyexecd")


# The uid test servers run as: $PYEXEC_TEST_SERVER_UID (10001 runs them as
# the container image does, beside root-owned test files), else the test's
# own user.
SERVER_UID = (int(os.environ["PYEXEC_TEST_SERVER_UID"])
              if os.environ.get("PYEXEC_TEST_SERVER_UID") else None)


def as_user(uid):
    """A command prefix that runs the rest as uid:uid with no other groups."""
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]


def server_command():
    """pyexecd's command line for a test that runs it directly, as SERVER_UID."""
    if SERVER_UID is None:
        return [pyexecd_path()]
    return as_user(SERVER_UID) + [binaries_for_any_user()]


def give_to_server(path):
    """Hands `path` (a file or a tree the test made) to SERVER_UID, so that a
    server run as that user can read its credentials there."""
    if SERVER_UID is None:
        return
    os.chown(path, SERVER_UID, SERVER_UID)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(top, name), SERVER_UID, SERVER_UID)


_ANY_USER_BINARIES = []


def binaries_for_any_user():
    """A copy of pyexecd and its worker that any uid may run (Bazel's outputs
    live under /root, which other users cannot enter): <dir>/server/pyexecd
    next to <dir>/worker/pyexec_worker, as pyexecd looks for its worker."""
    if not _ANY_USER_BINARIES:
        server = os.path.realpath(pyexecd_path())
        worker = os.path.join(os.path.dirname(server), "pyexec_worker")
        if not os.path.exists(worker):
            worker = os.path.join(os.path.dirname(os.path.dirname(server)),
                                  "worker", "pyexec_worker")
        top = tempfile.mkdtemp(prefix="pyexec_bin_")
        atexit.register(shutil.rmtree, top, True)
        os.chmod(top, 0o755)
        for sub, src in (("server", server), ("worker", worker)):
            os.mkdir(os.path.join(top, sub), 0o755)
            shutil.copy(src, os.path.join(top, sub))
            os.chmod(os.path.join(top, sub, os.path.basename(src)), 0o755)
        _ANY_USER_BINARIES.append(os.path.join(top, "server", "pyexecd"))
    return _ANY_USER_BINARIES[0]


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def proc_stat(pid):
    """(state, ppid, starttime) of a process, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def is_alive(pid, starttime=None):
    """True if pid exists and is not a zombie (and is the same process)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):
        return False
    return starttime is None or st[2] == starttime


def children(pid):
    """Live (non-zombie) direct children of pid."""
    out = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.update(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return {c for c in out if is_alive(c)}


def is_zygote(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip() == "pyexec_zygote"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid):
    out, todo = set(), [pid]
    while todo:
        for c in children(todo.pop()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def kill_if_alive(pid, starttime=None):
    """SIGKILLs pid if it is still the same live process (test cleanup)."""
    if is_alive(pid, starttime):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_gone(pids, timeout):
    """Waits until none of pids (pid -> starttime or None) is alive; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p for p, st in pids.items() if is_alive(p, st)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


# ---------------------------------------------------------------- server

class Server:
    """One pyexecd process with its channel and stubs."""

    def __init__(self, *flags, workers=2, max_workers=4, wrapper=(), uid=SERVER_UID, env=None):
        self.flags = ["--listen=127.0.0.1:0", "--workers=%d" % workers,
                      "--max_workers=%d" % max_workers] + list(flags)
        # A command that runs pyexecd (e.g. unshare); self.pid is then its pid.
        self.wrapper = list(wrapper)
        # Run pyexecd as this uid (and gid), as the container image does
        # (10001), instead of as the test's own user (None).
        self.uid = uid
        # More environment variables for pyexecd.
        self.env = dict(env or {})
        self.workers = workers
        self.proc = None
        self.port = None
        self.channel = None
        self._log = tempfile.NamedTemporaryFile(prefix="pyexecd_", suffix=".log", delete=False)
        self.log_path = self._log.name
        # pyexecd's TMPDIR, where it makes the root of the workers' private
        # directories: removed at cleanup, so that a server the test
        # SIGKILLed (which cannot remove its root) leaves nothing in /tmp.
        self.tmpdir = tempfile.mkdtemp(prefix="pyexecd_tmp_")
        os.chmod(self.tmpdir, 0o711)  # workers (another user) pass through

    # -- lifecycle

    def start(self):
        binary = pyexecd_path()
        if not os.access(binary, os.X_OK):
            raise AssertionError("pyexecd binary not found at %s (set PYEXECD)" % binary)
        wrapper = self.wrapper
        if self.uid is not None:
            os.chown(self.tmpdir, self.uid, self.uid)
            wrapper = as_user(self.uid) + wrapper
            binary = binaries_for_any_user()
        self.proc = subprocess.Popen(
            wrapper + [binary] + self.flags, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log, preexec_fn=_die_with_parent,
            env=dict(os.environ, TMPDIR=self.tmpdir, **self.env))
        line = self._read_stdout_line(STARTUP_TIMEOUT_S)
        prefix = "listening on 127.0.0.1:"
        if not line.startswith(prefix):
            self.kill()
            raise AssertionError("unexpected first stdout line %r\n%s" % (line, self.log_tail()))
        self.port = int(line[len(prefix):])
        self.address = "127.0.0.1:%d" % self.port
        self.channel = self.new_channel()
        self.stub = pb_grpc.PyExecStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        # Keep draining stdout so that the server never blocks on a full pipe.
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        wait_until(lambda: self.health_status("") == SERVING, STARTUP_TIMEOUT_S,
                   interval=0.05, what="health SERVING after start")
        return self

    def _read_stdout_line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise AssertionError("pyexecd printed no listening line within %.0fs\n%s"
                                         % (timeout, self.log_tail()))
                chunk = os.read(fd, 4096)
                if not chunk:
                    rc = self.proc.wait(STOP_TIMEOUT_S)
                    raise AssertionError("pyexecd exited with %s before listening\n%s"
                                         % (rc, self.log_tail()))
                buf += chunk
        finally:
            sel.close()
        self.extra_stdout = buf[buf.index(b"\n") + 1:]
        return buf[:buf.index(b"\n")].decode()

    def _drain_stdout(self):
        fd = self.proc.stdout.fileno()
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                self.extra_stdout += chunk
        except OSError:
            return

    def new_channel(self):
        return grpc.insecure_channel(
            self.address,
            options=[("grpc.max_receive_message_length", MAX_CLIENT_MESSAGE),
                     ("grpc.max_send_message_length", MAX_CLIENT_MESSAGE),
                     ("grpc.enable_retries", 0)])

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def stop(self):
        """SIGTERM, then SIGKILL after a timeout. Returns the exit status."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self.proc.stdout.close()
        return self.proc.returncode

    def cleanup(self):
        """Stops the server; the log stays until remove_log()."""
        self.stop()
        self._log.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def remove_log(self):
        if os.environ.get("PYEXEC_KEEP_LOGS") is None:
            try:
                os.unlink(self.log_path)
            except FileNotFoundError:
                pass

    # -- logs

    def log_size(self):
        return os.path.getsize(self.log_path)

    def log_since(self, offset, limit=200000):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        if len(data) > limit:
            data = b"...[log cut]...\n" + data[-limit:]
        return data.decode(errors="replace")

    def log_tail(self, limit=20000):
        return self.log_since(max(0, self.log_size() - limit), limit)

    # -- helpers over the API

    def health_status(self, service="", timeout=2.0):
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                     timeout=timeout).status
        except grpc.RpcError as e:
            return e.code()

    def stats(self, timeout=5.0):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=timeout)

    def wait_pool_size(self, timeout=15.0, sessions=None):
        """Waits until available_workers is back to --workers (and sessions, if given)."""
        def ok():
            s = self.stats()
            if s.available_workers != self.workers or s.starting_workers != 0:
                return False
            return sessions is None or s.sessions == sessions
        try:
            wait_until(ok, timeout, interval=0.05, what="pool back to size")
        except AssertionError as e:
            raise AssertionError("%s; last stats: %s" % (e, self.stats())) from None

    def worker_pids(self):
        # The zygote (--launcher=zygote) is a child of pyexecd but not a worker.
        return {p for p in children(self.pid) if not is_zygote(p)}


# ---------------------------------------------------------------- values

class Opaque(tuple):
    """An opaque value as seen by the client: (type, repr)."""

    def __new__(cls, type_, repr_):
        return tuple.__new__(cls, (type_, repr_))

    type = property(lambda self: self[0])
    repr = property(lambda self: self[1])


class Ref(tuple):
    """A live object held by a session, as seen by the client: (id, type, repr)."""

    def __new__(cls, id_, type_, repr_):
        return tuple.__new__(cls, (id_, type_, repr_))

    id = property(lambda self: self[0])
    type = property(lambda self: self[1])
    repr = property(lambda self: self[2])


def to_value(x):
    """Python object -> pb.Value (client side). Containers are flat: a marker
    kind plus `items` (and `keys` for a dict)."""
    v = pb.Value()
    if isinstance(x, Ref):
        v.ref.id = x.id
    elif x is None:
        v.none.SetInParent()
    elif isinstance(x, bool):
        v.bool = x
    elif isinstance(x, int):
        if -2 ** 63 <= x < 2 ** 63:
            v.int = x
        else:
            v.big_int = str(x)
    elif isinstance(x, float):
        v.float = x
    elif isinstance(x, str):
        v.str = x
    elif isinstance(x, (bytes, bytearray)):
        v.bytes = bytes(x)
    elif isinstance(x, list):
        v.list = True
        v.items.extend(to_value(i) for i in x)
    elif isinstance(x, tuple):
        v.tuple = True
        v.items.extend(to_value(i) for i in x)
    elif isinstance(x, (set, frozenset)):
        v.set = True
        v.items.extend(to_value(i) for i in x)
    elif isinstance(x, dict):
        v.dict = True
        for k, val in x.items():
            v.keys.add().CopyFrom(to_value(k))
            v.items.add().CopyFrom(to_value(val))
    else:
        raise TypeError("no Value for %r" % (x,))
    return v


def from_value(v):
    """pb.Value -> Python object; sets come back as frozenset, opaque as Opaque."""
    kind = v.WhichOneof("kind")
    if kind not in ("list", "tuple", "set", "dict"):
        assert not v.items and not v.keys, "scalar Value with elements: %r" % v
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str", "bytes"):
        return getattr(v, kind)
    if kind == "big_int":
        return int(v.big_int)
    if kind == "list":
        return [from_value(i) for i in v.items]
    if kind == "tuple":
        return tuple(from_value(i) for i in v.items)
    if kind == "set":
        return frozenset(from_value(i) for i in v.items)
    if kind == "dict":
        assert len(v.keys) == len(v.items), "dict with %d keys and %d items" % (
            len(v.keys), len(v.items))
        return {from_value(k): from_value(i) for k, i in zip(v.keys, v.items)}
    if kind == "opaque":
        return Opaque(v.opaque.type, v.opaque.repr)
    if kind == "ref":
        return Ref(v.ref.id, v.ref.type, v.ref.repr)
    raise AssertionError("Value with no kind set: %r" % v)


def nested_list_value(depth, leaf=None):
    v = to_value(leaf)
    for _ in range(depth):
        outer = pb.Value(list=True)
        outer.items.add().CopyFrom(v)
        v = outer
    return v


def nested_depth(x):
    d = 0
    while isinstance(x, list):
        assert len(x) == 1, x
        x, d = x[0], d + 1
    return d, x


# ---------------------------------------------------------------- test base

class ServerTestCase(unittest.TestCase):
    """Base class: one server per class (SERVER_FLAGS), logs printed on failure.

    Subclasses set SERVER_FLAGS / WORKERS / MAX_WORKERS, or set PER_TEST_SERVER
    to get a fresh server in self.server for every test.
    """

    SERVER_FLAGS = ()
    WORKERS = 2
    MAX_WORKERS = 4
    PER_TEST_SERVER = False
    server = None

    @classmethod
    def make_server(cls, *extra):
        return Server(*(tuple(cls.SERVER_FLAGS) + extra), workers=cls.WORKERS,
                      max_workers=cls.MAX_WORKERS)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not cls.PER_TEST_SERVER:
            cls.server = cls.make_server()
            try:
                cls.server.start()
            except BaseException:
                cls.server.cleanup()
                cls.server.remove_log()
                raise

    @classmethod
    def tearDownClass(cls):
        if not cls.PER_TEST_SERVER and cls.server is not None:
            cls.server.cleanup()
            cls.server.remove_log()
            cls.server = None
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        if self.PER_TEST_SERVER:
            self.server = self.make_server()
            self.addCleanup(self.server.cleanup)
            self.server.start()
        self._log_offset = self.server.log_size()

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        srv = self.__dict__.get("server") or type(self).server
        if srv is not None and len(result.failures) + len(result.errors) > before:
            try:
                log = srv.log_since(getattr(self, "_log_offset", 0))
            except OSError as e:
                log = "(no log: %s)" % e
            rc = srv.proc.poll() if srv.proc is not None else None
            if rc is not None:
                log += "\n(pyexecd has exited with status %s%s)" % (
                    rc, " = %s" % signal.Signals(-rc).name if rc < 0 else "")
            sys.stderr.write("\n---- pyexecd stderr during %s ----\n%s\n---- end of log ----\n"
                             % (self.id(), log))
        if self.PER_TEST_SERVER and "server" in self.__dict__:
            self.server.remove_log()
        return out

    # -- API shortcuts; every call carries a deadline unless timeout=None is passed

    @property
    def stub(self):
        return self.server.stub

    def bind(self, idle_timeout_seconds=0, timeout=10.0, cleanup=True):
        resp = self.stub.Bind(pb.BindRequest(idle_timeout_seconds=idle_timeout_seconds),
                              timeout=timeout)
        self.assertTrue(resp.session)
        if cleanup:
            self.addCleanup(self.unbind_quietly, resp.session)
        return resp.session

    def unbind_quietly(self, session):
        try:
            self.stub.Unbind(pb.UnbindRequest(session=session), timeout=5.0)
        except grpc.RpcError:
            pass

    def eval(self, code, session="", locals=None, timeout=10.0):
        req = pb.EvalRequest(session=session, code=code)
        for k, v in (locals or {}).items():
            req.locals[k].CopyFrom(v if isinstance(v, pb.Value) else to_value(v))
        return self.stub.Eval(req, timeout=timeout)

    def exec(self, code, session="", locals=None, timeout=10.0):
        req = pb.ExecRequest(session=session, code=code)
        for k, v in (locals or {}).items():
            req.locals[k].CopyFrom(v if isinstance(v, pb.Value) else to_value(v))
        return self.stub.Exec(req, timeout=timeout)

    def call(self, module, function, args=(), kwargs=None, session="", timeout=10.0):
        req = pb.CallRequest(session=session, module=module, function=function)
        req.args.extend(a if isinstance(a, pb.Value) else to_value(a) for a in args)
        for k, v in (kwargs or {}).items():
            req.kwargs[k].CopyFrom(v if isinstance(v, pb.Value) else to_value(v))
        return self.stub.Call(req, timeout=timeout)

    def value_of(self, resp):
        """The value of a successful Eval/Call response."""
        self.assertFalse(resp.HasField("error"), "unexpected Python error: %s" % resp.error)
        self.assertTrue(resp.HasField("value"), "response has no value: %s" % resp)
        return from_value(resp.value)

    def ev(self, code, session="", locals=None, timeout=10.0):
        return self.value_of(self.eval(code, session, locals, timeout))

    def ex(self, code, session="", locals=None, timeout=10.0):
        resp = self.exec(code, session, locals, timeout)
        self.assertFalse(resp.HasField("error"), "unexpected Python error: %s" % resp.error)
        return resp

    def session_pid(self, session):
        return self.ev("__import__('os').getpid()", session)

    def assertRpcError(self, code, fn, *args, **kwargs):
        """Runs fn and asserts that it raises grpc.RpcError with the given code(s)."""
        codes = code if isinstance(code, (tuple, list, set)) else (code,)
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kwargs)
        self.assertIn(cm.exception.code(), codes,
                      "got %s: %s" % (cm.exception.code(), cm.exception.details()))
        return cm.exception

    def marker(self):
        """A fresh file name; user code creates it in its own HOME (touch_code) to
        say that it is running. Sessions may write nowhere else (Landlock)."""
        return "pyexec_marker_%s" % uuid.uuid4().hex

    @staticmethod
    def touch_code(name):
        return ("open(__import__('os').path.join(__import__('os').environ['HOME'], %r), "
                "'w').close()\n" % name)

    def wait_file(self, name, timeout=10.0):
        """Waits until a session created `name` in its HOME; returns its path."""
        return wait_until(lambda: find_marker(name), timeout,
                          what="user code to start (%s)" % name)

    def session_home(self, session):
        return self.ev("__import__('os').environ['HOME']", session)


def find_marker(name):
    """The path of marker `name` in any test server's private directories, or None.
    Every Server gets its own TMPDIR (pyexecd_tmp_*), where pyexecd makes the root
    of its workers' directories."""
    found = glob.glob(os.path.join(tempfile.gettempdir(), "pyexecd_tmp_*", "pyexecd-*",
                                   "w-*", name))
    return found[0] if found else None


# ---------------------------------------------------------------- Run (callbacks)

class Callbacks:
    """Drives Run calls whose Python code calls back into `functions`.

    Each function is called as f(ctx, *args, **kwargs), where ctx.metadata is
    what a call made from inside it must carry (x-pyexec-callback) to run on
    the interpreter that waits for it. A function that raises answers with an
    error (its class name and message); an unknown name answers
    LookupError. Answers are sent as their functions return, from the thread
    that reads the stream (so one Run's callbacks run one at a time)."""

    class Context:
        def __init__(self, callback_id):
            self.callback_id = callback_id
            self.metadata = (("x-pyexec-callback", callback_id),)

    def __init__(self, stub, functions):
        self.stub = stub
        self.functions = dict(functions)
        self.requests_seen = []

    def answer(self, request):
        self.requests_seen.append(request)
        result = pb.CallbackResult(id=request.id)
        fn = self.functions.get(request.name)
        try:
            if fn is None:
                raise LookupError("no function registered as %r" % request.name)
            args = [from_value(a) for a in request.args]
            kwargs = {k: from_value(v) for k, v in request.kwargs.items()}
            result.value.CopyFrom(to_value(fn(self.Context(request.id), *args, **kwargs)))
        except Exception as e:  # noqa: BLE001 - every failure is the answer
            result.error.type = type(e).__name__
            result.error.message = str(e)
        return result

    def run(self, kind, request, timeout=10.0, metadata=(), answer=None):
        """Sends `request` (an EvalRequest, ExecRequest or CallRequest; `kind`
        is "eval", "exec" or "call") on a Run stream, answers every callback,
        and returns the response. `answer` replaces self.answer (returning
        None leaves a callback unanswered)."""
        import queue
        outbox = queue.Queue()
        outbox.put(pb.RunRequest(**{kind: request}))

        def requests():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        events = self.stub.Run(requests(), timeout=timeout, metadata=metadata)
        try:
            for event in events:
                which = event.WhichOneof("event")
                if which == "callback":
                    result = (answer or self.answer)(event.callback)
                    if result is not None:
                        outbox.put(pb.RunRequest(callback_result=result))
                    continue
                if which != kind:
                    raise AssertionError("Run answered %s to a %s" % (which, kind))
                response = getattr(event, which)
                # The response is the last message: the client closes its
                # side and the stream ends OK.
                outbox.put(None)
                extra = list(events)
                if extra:
                    raise AssertionError("messages after the response: %r" % extra)
                return response
            raise AssertionError("Run ended without a response")
        finally:
            outbox.put(None)

    def eval(self, code, session="", timeout=10.0, metadata=(), **kw):
        return self.run("eval", pb.EvalRequest(session=session, code=code), timeout, metadata, **kw)

    def exec(self, code, session="", timeout=10.0, metadata=(), **kw):
        return self.run("exec", pb.ExecRequest(session=session, code=code), timeout, metadata, **kw)
