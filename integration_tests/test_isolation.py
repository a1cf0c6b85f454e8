"""Tenant isolation in every form we ship: a session reaches nothing outside
itself (issue 20).

Each attack below is user code a tenant may send. It runs against three
forms of the service:
  - RootFormTest: pyexecd as root, workers as the unprivileged worker user
    (--worker_user, the default pyexec-worker);
  - NonRootFormTest: pyexecd as uid 10001 with its secrets owned by 10001,
    mode 0400, as the container image and the manifests run it (workers then
    share pyexecd's uid: Landlock and the seccomp filter are what stop them);
  - ContainerFormTest: the image itself, built and started by
    integration_tests/container/run_container_tests.sh under the manifests'
    securityContext (PYEXEC_TEST_TARGET=container; the local forms do not run
    then, and the container form runs only then).

The attacks only use the API and what user code can see, so that one test
body serves every form. Alice and Bob are two principals with tokens.
"""

import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb

SC = grpc.StatusCode
TOKENS = {"alice": "tok-alice-0123456789abcdef", "bob": "tok-bob-0123456789abcdef0"}
PEER_SECRET = "peer-secret-0123456789abcdef"
# pyexecd's own environment holds a credential, as a pod's often does.
LEAKY_ENV = {"AWS_SECRET_ACCESS_KEY": "not-for-tenants-4242"}
NON_ROOT_UID = 10001
CONTAINER = os.environ.get("PYEXEC_TEST_TARGET") == "container"
# Flags of the local forms. The memory limit is the manifests'; the disk and
# process caps are smaller than theirs (96 MiB, and pyexecd's default of 512
# processes), so that the tests that go past them stay quick. The tests read
# each form's caps from the target, not from here.
LOCAL_DISK_CAP_MB = 8
COMMON_FLAGS = ("--worker_max_disk_mb=%d" % LOCAL_DISK_CAP_MB, "--worker_memory_limit_mb=1024",
                "--worker_max_processes=256")


def read_tokens(path):
    tokens = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and not parts[0].startswith("#"):
                tokens[parts[0]] = parts[1]
    return tokens


class LocalTarget:
    """pyexecd started here, as root or as NON_ROOT_UID."""

    def __init__(self, uid, *flags):
        self.dir = tempfile.mkdtemp(prefix="pyexec_isolation_")
        os.chmod(self.dir, 0o700)
        self.tokens_file = os.path.join(self.dir, "tokens")
        self.peer_secret_file = os.path.join(self.dir, "peer-secret")
        with open(self.tokens_file, "w") as f:
            f.write("".join("%s %s\n" % kv for kv in TOKENS.items()))
        with open(self.peer_secret_file, "w") as f:
            f.write(PEER_SECRET + "\n")
        for path in (self.tokens_file, self.peer_secret_file):
            os.chmod(path, 0o400)
            if uid is not None:
                os.chown(path, uid, uid)
        if uid is not None:
            os.chown(self.dir, uid, uid)
        self.tokens = dict(TOKENS)
        self.secret_files = [self.tokens_file, self.peer_secret_file]
        self.disk_cap_mb = LOCAL_DISK_CAP_MB
        self.server = fx.Server(
            "--auth_tokens_file=" + self.tokens_file,
            "--peer_secret_file=" + self.peer_secret_file, *(COMMON_FLAGS + flags),
            workers=2, max_workers=8, uid=uid, env=LEAKY_ENV)

    def start(self):
        self.server.start()
        self.stub = self.server.stub
        self.private_root = glob.glob(os.path.join(self.server.tmpdir, "pyexecd-*"))[0]

    def stop(self):
        self.server.cleanup()
        self.server.remove_log()
        shutil.rmtree(self.dir, True)

    def log_size(self):
        return self.server.log_size()

    def log_since(self, offset):
        return self.server.log_since(offset)

    def startup_log(self):
        return self.server.log_since(0)

    def pyexecd_alive(self):
        return self.server.proc.poll() is None

    def pyexecd_fd_count(self):
        return fx.fd_count(self.server.pid)

    def private_dirs(self):
        return glob.glob(os.path.join(self.private_root, "w-*"))

    def path_exists(self, path):
        return os.path.lexists(path)


class ContainerTarget:
    """The image, started by integration_tests/container/run_container_tests.sh."""

    def __init__(self):
        self.address = os.environ["PYEXEC_TEST_ADDRESS"]
        self.tokens = read_tokens(os.environ["PYEXEC_TEST_TOKENS_FILE"])
        self.secret_files = os.environ["PYEXEC_TEST_SECRET_FILES"].split(":")
        self.private_root = os.environ["PYEXEC_TEST_PRIVATE_ROOT"]
        self.container = os.environ["PYEXEC_TEST_CONTAINER"]
        # The manifest's --worker_max_disk_mb, as the harness started it.
        self.disk_cap_mb = int(os.environ["PYEXEC_TEST_WORKER_MAX_DISK_MB"])
        self._log_offset_base = 0

    def start(self):
        channel = grpc.insecure_channel(self.address)
        self.stub = fx.pb_grpc.PyExecStub(channel)

    def stop(self):
        pass

    def _podman(self, *args):
        podman = shlex.split(os.environ.get("PODMAN", "podman --runtime runc"))
        return subprocess.run(podman + list(args), capture_output=True, text=True, timeout=60)

    def _log(self):
        out = self._podman("logs", self.container)
        return out.stdout + out.stderr

    def log_size(self):
        return len(self._log())

    def log_since(self, offset):
        return self._log()[offset:]

    def startup_log(self):
        return self._log()

    def _host_pid(self):
        out = self._podman("inspect", "--format", "{{.State.Pid}}", self.container)
        return int(out.stdout.strip())

    def pyexecd_alive(self):
        out = self._podman("inspect", "--format", "{{.State.Running}}", self.container)
        return out.stdout.strip() == "true"

    def pyexecd_fd_count(self):
        return fx.fd_count(self._host_pid())

    def private_dirs(self):
        out = self._podman("exec", self.container, "sh", "-c",
                           "ls -d %s/w-* 2>/dev/null || true" % self.private_root)
        return out.stdout.split()

    def path_exists(self, path):
        return self._podman("exec", self.container, "test", "-e", path).returncode == 0


class IsolationAttacks:
    """The attacks; a subclass says which form they run against."""

    target = None

    @classmethod
    def make_target(cls):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.target = cls.make_target()
        try:
            cls.target.start()
        except BaseException:
            cls.target.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.target.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.log_offset = self.target.log_size()

    # -- calls on behalf of a principal

    def md(self, who):
        return (("authorization", "Bearer " + self.target.tokens[who]),)

    def bind(self, who):
        session = self.target.stub.Bind(pb.BindRequest(), metadata=self.md(who),
                                        timeout=30).session
        self.addCleanup(self.unbind_quietly, who, session)
        return session

    def unbind_quietly(self, who, session):
        try:
            self.target.stub.Unbind(pb.UnbindRequest(session=session), metadata=self.md(who),
                                    timeout=10)
        except grpc.RpcError:
            pass

    def run_code(self, who, code, session="", timeout=30):
        """Executes `code`, then returns the value of `result` (None if unset)."""
        resp = self.target.stub.Exec(pb.ExecRequest(session=session, code=code),
                                     metadata=self.md(who), timeout=timeout)
        self.assertFalse(resp.HasField("error"), "%s\n%s" % (resp.error.message,
                                                              resp.error.traceback))
        if not session:
            return None
        return self.ev(who, "globals().get('result')", session)

    def ev(self, who, code, session="", timeout=30):
        resp = self.target.stub.Eval(pb.EvalRequest(session=session, code=code),
                                     metadata=self.md(who), timeout=timeout)
        self.assertFalse(resp.HasField("error"), "%s\n%s" % (resp.error.message,
                                                              resp.error.traceback))
        return fx.from_value(resp.value)

    # What happened to each attempt: "ok", or the exception's class name.
    TRY = ("def attempt(f, *a):\n"
           "    try:\n"
           "        f(*a)\n"
           "        return 'ok'\n"
           "    except Exception as e:\n"
           "        return type(e).__name__\n")

    def attempts(self, who, body, session=None):
        """Runs `body` (which fills the dict `result` with attempt(...) outcomes)
        in a session of `who`; returns the dict."""
        session = session or self.bind(who)
        return self.run_code(who, self.TRY + "result = {}\n" + body, session)

    def assert_all_refused(self, outcomes):
        for name, outcome in outcomes.items():
            self.assertIn(outcome, ("PermissionError", "ProcessLookupError"),
                          "%s was not refused: %s" % (name, outcome))

    def assert_still_serving(self):
        self.assertTrue(self.target.pyexecd_alive())
        self.assertEqual(self.ev("bob", "6 * 7"), 42)
        self.assertNotIn("received SIGTERM", self.target.log_since(self.log_offset))

    # -- pyexecd's own secrets and process

    def test_secrets_are_unreadable(self):
        body = ""
        for i, path in enumerate(self.target.secret_files):
            body += "result['read %d'] = attempt(lambda: open(%r).read())\n" % (i, path)
            body += ("result['list dir %d'] = attempt(__import__('os').listdir, %r)\n"
                     % (i, os.path.dirname(path)))
        self.assert_all_refused(self.attempts("alice", body))
        # Stateless calls too.
        resp = self.target.stub.Eval(
            pb.EvalRequest(code="open(%r).read()" % self.target.secret_files[0]),
            metadata=self.md("alice"), timeout=30)
        self.assertEqual(resp.error.type, "PermissionError", resp)

    def test_pyexecd_and_the_zygote_cannot_be_signalled(self):
        outcomes = self.attempts("alice", (
            "import os, signal\n"
            "pyexecd = os.getppid()\n"
            "def comm(p):\n"
            "    try:\n"
            "        return open('/proc/%s/comm' % p).read().strip()\n"
            "    except OSError:\n"
            "        return None\n"
            "zygotes = [int(p) for p in os.listdir('/proc') if p.isdigit() and\n"
            "           comm(p) == 'pyexec_zygote']\n"
            "assert zygotes, 'no zygote found'\n"
            "result['kill pyexecd'] = attempt(os.kill, pyexecd, signal.SIGKILL)\n"
            "result['term pyexecd'] = attempt(os.kill, pyexecd, signal.SIGTERM)\n"
            "result['kill pid 1'] = attempt(os.kill, 1, signal.SIGTERM)\n"
            "result['kill zygote'] = attempt(os.kill, zygotes[0], signal.SIGKILL)\n"
            "result['kill -1'] = attempt(os.kill, -1, signal.SIGKILL)\n"
            "result['prlimit pyexecd'] = attempt(__import__('resource').prlimit, pyexecd,\n"
            "    __import__('resource').RLIMIT_CPU, (1, 1))\n"
            "result['renice pyexecd'] = attempt(os.setpriority, os.PRIO_PROCESS, pyexecd, 19)\n"))
        self.assert_all_refused(outcomes)
        time.sleep(0.5)
        self.assert_still_serving()

    def test_pyexecd_proc_entries_are_closed(self):
        outcomes = self.attempts("alice", (
            "import os\n"
            "p = '/proc/%d/' % os.getppid()\n"
            "result['environ'] = attempt(lambda: open(p + 'environ').read())\n"
            "result['cwd'] = attempt(os.readlink, p + 'cwd')\n"
            "result['root'] = attempt(os.listdir, p + 'root')\n"
            "result['fd'] = attempt(os.listdir, p + 'fd')\n"
            "result['mem'] = attempt(lambda: open(p + 'mem', 'rb').read(1))\n"))
        self.assert_all_refused(outcomes)

    def test_the_environment_is_clean(self):
        env = self.ev("alice", "dict(__import__('os').environ)")
        for name, value in LEAKY_ENV.items():
            self.assertNotIn(name, env)
            self.assertNotIn(value, repr(env))
        allowed = {"PATH", "LANG", "HOME", "TMPDIR"}
        for name in env:
            self.assertTrue(name in allowed or name.startswith("PYTHON"),
                            "pyexecd's %s reached the session" % name)

    # -- other sessions

    def test_other_sessions_processes_and_files_are_out_of_reach(self):
        alice = self.bind("alice")
        marker = "3600.%d" % os.getpid()
        self.run_code("alice", (
            "import os, subprocess\n"
            "open('alice-secret.txt', 'w').write('s3cret')\n"
            "child = subprocess.Popen(['sleep', %r], env=dict(os.environ, ALICE_TOKEN='a1'))\n"
            "result = (os.environ['HOME'], os.getpid(), child.pid)\n" % marker), alice)
        home, worker, child = self.ev("alice", "result", alice)
        outcomes = self.attempts("bob", (
            "import os, resource, signal\n"
            "def find(arg):\n"
            "    for p in os.listdir('/proc'):\n"
            "        try:\n"
            "            if p.isdigit() and arg in open('/proc/%%s/cmdline' %% p).read():\n"
            "                return int(p)\n"
            "        except OSError:\n"
            "            pass\n"
            "child = find(%r)\n"
            "assert child, 'the subprocess is not visible'\n"
            "for pid, who in ((child, 'subprocess'), (%d, 'worker')):\n"
            "    result[who + ' environ'] = attempt(lambda: open('/proc/%%d/environ' %% pid).read())\n"
            "    result[who + ' cwd'] = attempt(os.readlink, '/proc/%%d/cwd' %% pid)\n"
            "    result[who + ' kill'] = attempt(os.kill, pid, signal.SIGKILL)\n"
            "    result[who + ' prlimit'] = attempt(resource.prlimit, pid, resource.RLIMIT_CPU, (1, 1))\n"
            "result['list home'] = attempt(os.listdir, %r)\n"
            "result['read file'] = attempt(lambda: open(%r).read())\n"
            "result['list private root'] = attempt(os.listdir, %r)\n"
            % (marker, worker, home, os.path.join(home, "alice-secret.txt"),
               self.target.private_root)))
        self.assert_all_refused(outcomes)
        # Alice's processes lived through it.
        self.assertIsNone(self.ev("alice", "child.poll()", alice))
        self.assertEqual(self.ev("alice", "open('alice-secret.txt').read()", alice), "s3cret")

    def test_writes_outside_the_private_directory_are_refused(self):
        outcomes = self.attempts("alice", (
            "import errno, os\n"
            "result['/tmp'] = attempt(lambda: open('/tmp/planted', 'w'))\n"
            "result['/var/tmp'] = attempt(lambda: open('/var/tmp/planted', 'w'))\n"
            "if result['/var/tmp'] == 'OSError':\n"
            "    try:\n"
            "        open('/var/tmp/planted', 'w')\n"
            "    except OSError as e:\n"
            "        result['/var/tmp'] += ' ' + errno.errorcode.get(e.errno, str(e.errno))\n"
            "result['/dev/shm listing'] = attempt(os.listdir, '/dev/shm')\n"))
        # In the container /var/tmp is on the read-only root filesystem
        # (readOnlyRootFilesystem), which refuses the write with EROFS
        # before Landlock is asked. Everywhere else it is writable, and only
        # the session's own confinement may refuse it.
        var_tmp = outcomes.pop("/var/tmp")
        self.assertIn(var_tmp, ("PermissionError", "OSError EROFS") if CONTAINER
                      else ("PermissionError",), "/var/tmp was not refused")
        self.assert_all_refused(outcomes)

    def test_typing_into_a_terminal_is_refused(self):
        outcomes = self.attempts("alice", (
            "import fcntl, os, termios\n"
            "def tiocsti():\n"
            "    master, slave = os.openpty()\n"
            "    fcntl.ioctl(slave, termios.TIOCSTI, b'x')\n"
            "result['TIOCSTI into a pty'] = attempt(tiocsti)\n"
            "result['open /dev/tty'] = attempt(lambda: open('/dev/tty', 'w'))\n"))
        # Refused by the filter (EPERM), or no pseudo-terminal at all when
        # workers share a uid (Landlock keeps /dev/pts closed).
        self.assertEqual(outcomes["TIOCSTI into a pty"], "PermissionError")
        # No controlling terminal to open is refusal enough.
        self.assertIn(outcomes["open /dev/tty"], ("PermissionError", "OSError"))

    # -- resources one session must not take from others

    def test_a_deep_tree_left_behind_leaks_nothing(self):
        def one_session():
            s = self.bind("alice")
            try:
                self.run_code("alice", (
                    "import os\n"
                    "os.makedirs('d/' * 300)\n"
                    "for i in range(50):\n"
                    "    open('d/' * (i * 6) + 'f%d' % i, 'w').close()\n"), s)
            except grpc.RpcError as e:
                # Under the disk cap a tree this deep ends the session (it
                # cannot be measured with bounded descriptors); what it left
                # behind must still go. The cap may end it during a call
                # (ABORTED, saying why) or between the two (NOT_FOUND).
                self.assertIn(e.code(), (SC.ABORTED, SC.NOT_FOUND), e.details())
                if e.code() == SC.ABORTED:
                    self.assertIn("nest deeper", e.details())
            self.target.stub.Unbind(pb.UnbindRequest(session=s), metadata=self.md("alice"),
                                    timeout=10)
        one_session()  # settles the pool's own descriptors
        fx.wait_until(lambda: len(self.target.private_dirs()) <= 8, 20,
                      what="private directories to be cleaned up")
        fds = self.target.pyexecd_fd_count()
        for _ in range(4):
            one_session()
        fx.wait_until(lambda: self.target.pyexecd_fd_count() <= fds, 20,
                      what="pyexecd's descriptors back to %d" % fds)
        # No tree is left behind: the directories there are live workers'
        # and spares, all without the sessions' trees.
        fx.wait_until(lambda: not any(self.target.path_exists(os.path.join(p, "d"))
                                      for p in self.target.private_dirs()), 20,
                      what="the trees to be removed")

    def test_a_value_nested_170_deep_is_invalid_and_the_session_survives(self):
        s = self.bind("alice")
        self.run_code("alice", "x = 5", s)
        req = pb.CallRequest(session=s, module="builtins", function="len")
        req.args.add().CopyFrom(fx.nested_list_value(170))
        with self.assertRaises(grpc.RpcError) as cm:
            self.target.stub.Call(req, metadata=self.md("alice"), timeout=30)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, cm.exception.details())
        self.assertIn("nested deeper", cm.exception.details())
        self.assertEqual(self.ev("alice", "x", s), 5)

    def test_a_session_past_the_disk_cap_is_ended_with_a_clear_status(self):
        s = self.bind("alice")
        # 32 MiB past the form's cap, 1 MiB at a time: pyexecd measures the
        # private directory about once a second.
        mib = self.target.disk_cap_mb + 32
        with self.assertRaises(grpc.RpcError) as cm:
            self.target.stub.Exec(pb.ExecRequest(session=s, code=(
                "import os, time\n"
                "for i in range(%d):\n"
                "    with open('fill%%d' %% i, 'wb') as f:\n"
                "        f.write(b'x' * (1 << 20))\n"
                "        f.flush(); os.fsync(f.fileno())\n"
                "    time.sleep(0.1)\n" % mib)), metadata=self.md("alice"), timeout=60)
        self.assertEqual(cm.exception.code(), SC.ABORTED, cm.exception.details())
        self.assertIn("--worker_max_disk_mb", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.ev("alice", "1", s)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        # Bob was never affected.
        self.assertEqual(self.ev("bob", "6 * 7"), 42)

    def test_user_output_cannot_pass_for_pyexecd_log_lines(self):
        forged = "2026-01-01T00:00:00.000000Z E pyexecd[1] forged line %d" % os.getpid()
        self.run_code("alice", "import os\nos.write(1, %r.encode() + b'\\n')\n"
                      "os.write(2, b'\\x1b[2J' + %r.encode() + b'\\n')\n" % (forged, forged))
        log = fx.wait_until(lambda: forged in self.target.log_since(self.log_offset) and
                            self.target.log_since(self.log_offset), 10,
                            what="the forged line in the log")
        for line in log.splitlines():
            if forged in line:
                self.assertIn("worker output: ", line.split(forged)[0])
                self.assertFalse(line.startswith(forged), line)
                self.assertNotIn("\x1b", line)

    def process_cap(self):
        """The process cap pyexecd's start-up `isolation:` line reports, and
        how it counts: "per session" (a cgroup's pids.max), "per worker uid"
        or "shared by every process of the uid" (RLIMIT_NPROC)."""
        lines = re.findall(r"^\S+ I pyexecd\[\d+\] isolation: .*$", self.target.startup_log(),
                           re.M)
        self.assertEqual(len(lines), 1, "pyexecd's start-up isolation line")
        m = re.search(r"processes: (?:RLIMIT_NPROC )?(\d+) (per session|per worker uid|"
                      r"shared by every process of the uid)", lines[0])
        self.assertIsNotNone(m, lines[0])
        return int(m.group(1)), m.group(2)

    def test_one_sessions_processes_do_not_use_up_anothers(self):
        cap, counted = self.process_cap()
        s = self.bind("alice")
        made, error = self.run_code("alice", (
            "import errno, os, signal, time\n"
            "children = []\n"
            "error = None\n"
            "try:\n"
            "    for _ in range(%d):\n"
            "        pid = os.fork()\n"
            "        if pid == 0:\n"
            "            signal.pause()\n"
            "            os._exit(0)\n"
            "        children.append(pid)\n"
            "except OSError as e:\n"
            "    error = errno.errorcode.get(e.errno, str(e.errno))\n"
            "result = (len(children), error)\n" % (cap + 64)), s)
        # Reaped before the test ends, so that the tests after it (the same
        # uid, when workers share one) start with the count back to normal.
        reap = ("while children:\n"
                "    pid = children.pop()\n"
                "    os.kill(pid, signal.SIGKILL)\n"
                "    os.waitpid(pid, 0)\n")
        self.addCleanup(self.run_code, "alice", reap, s)
        # The cap stopped the bomb: fork failed with EAGAIN (pids.max or
        # RLIMIT_NPROC), not for want of memory.
        self.assertLess(made, cap)
        self.assertEqual(error, "EAGAIN", "after %d processes" % made)
        if counted != "per session":
            # No cgroup per session here (pyexecd as 10001 on this host, a
            # container): the cap is RLIMIT_NPROC, counted per uid, as the
            # start-up line says (docs/security.md), so other sessions of
            # that uid may wait for processes until the bomb is gone. Then
            # everyone is served again.
            self.run_code("alice", reap, s)
            self.assert_still_serving()
            return
        bob = self.run_code("bob", (
            "import threading\n"
            "stop = threading.Event()\n"
            "threads = [threading.Thread(target=stop.wait) for _ in range(50)]\n"
            "[t.start() for t in threads]\n"
            "stop.set(); [t.join() for t in threads]\n"
            "result = len(threads)\n"), self.bind("bob"))
        self.assertEqual(bob, 50)
        self.assert_still_serving()

    # -- ordinary programs still work

    def test_ordinary_programs_work(self):
        result = self.run_code("alice", (
            "import multiprocessing as mp, os, ssl, subprocess, tempfile, threading\n"
            "def put(q, lock):\n"
            "    with lock:\n"
            "        q.put(os.getpid())\n"
            "q, lock = mp.Queue(), mp.Lock()\n"
            "ps = [mp.Process(target=put, args=(q, lock)) for _ in range(3)]\n"
            "[p.start() for p in ps]\n"
            "got = sorted(q.get(timeout=20) for _ in ps)\n"
            "[p.join() for p in ps]\n"
            "with tempfile.NamedTemporaryFile() as f:\n"
            "    f.write(b'x'); f.flush()\n"
            "    tmp_ok = os.path.getsize(f.name) == 1\n"
            "ctx = ssl.create_default_context()\n"
            "stop = threading.Event()\n"
            "threads = [threading.Thread(target=stop.wait) for _ in range(200)]\n"
            "[t.start() for t in threads]\n"
            "stop.set(); [t.join() for t in threads]\n"
            "echo = subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout\n"
            "result = (len(got), tmp_ok, ctx.cert_store_stats()['x509_ca'] > 0, echo)\n"),
            self.bind("alice"))
        self.assertEqual(result, (3, True, True, "hi\n"))


class RootFormTest(IsolationAttacks, unittest.TestCase):
    @classmethod
    def make_target(cls):
        return LocalTarget(uid=None)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("the root form needs root")
        super().setUp()


class RootFormUidPerWorkerTest(IsolationAttacks, unittest.TestCase):
    """Root with --worker_uid_range: sessions apart by uid as well."""

    @classmethod
    def make_target(cls):
        return LocalTarget(None, "--worker_uid_range=40000-40063")

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("a uid per worker needs root")
        super().setUp()

    def test_each_session_has_a_uid_of_its_own_and_a_pty(self):
        uids = {self.ev("alice", "__import__('os').getuid()", self.bind("alice"))
                for _ in range(3)}
        self.assertEqual(len(uids), 3)
        self.assertTrue(all(40000 <= uid <= 40063 for uid in uids), uids)
        # Pseudo-terminals work here: a pty is its owner's alone.
        s = self.bind("bob")
        self.run_code("bob", "import os\nm, t = os.openpty()\nos.write(m, b'hi\\n')\n"
                      "result = os.read(t, 16)", s)
        self.assertEqual(self.ev("bob", "result", s), b"hi\n")


class NonRootFormTest(IsolationAttacks, unittest.TestCase):
    @classmethod
    def make_target(cls):
        return LocalTarget(uid=NON_ROOT_UID)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("starting pyexecd as uid 10001 needs root")
        super().setUp()


class ContainerFormTest(IsolationAttacks, unittest.TestCase):
    @classmethod
    def make_target(cls):
        return ContainerTarget()


def load_tests(loader, tests, pattern):
    """The container form runs only against a container; the local forms only
    without one."""
    suite = unittest.TestSuite()
    classes = ([ContainerFormTest] if CONTAINER else
               [RootFormTest, RootFormUidPerWorkerTest, NonRootFormTest])
    for cls in classes:
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


if __name__ == "__main__":
    unittest.main()
