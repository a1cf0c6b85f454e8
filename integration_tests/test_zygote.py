"""The zygote launcher against the real pyexecd (issue 9): preloads shared by
every session, a failing preload stopping pyexecd with the traceback, fresh
random state per session, a killed zygote restarted while the sessions it
forked carry on, and the posix_spawn launcher still selectable."""

import os
import signal
import subprocess
import tempfile

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb


def zygote_pids(server_pid):
    return [p for p in fx.children(server_pid) if fx.is_zygote(p)]


def the_zygote(server_pid):
    """The one zygote. A worker the zygote has just forked is pyexecd's child
    too, and carries the zygote's name for the instant before it renames
    itself: wait for a moment with exactly one."""
    pids = []

    def exactly_one():
        pids[:] = zygote_pids(server_pid)
        return len(pids) == 1

    fx.wait_until(exactly_one, 10.0, what="exactly one zygote")
    return pids[0]


class PreloadTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--preload=json,decimal", )

    def test_preloaded_modules_are_there_in_every_session(self):
        for _ in range(2):
            s = self.bind()
            self.assertTrue(self.ev("'decimal' in __import__('sys').modules", s))
            self.assertEqual(self.ev("__import__('json').dumps([1])", s), "[1]")

    def test_sessions_do_not_inherit_the_zygotes_ld_bind_now(self):
        # pyexecd starts the zygote with LD_BIND_NOW=1; user code and the
        # programs it starts must not get it.
        s = self.bind()
        self.assertNotIn("LD_BIND_NOW", self.ev("dict(__import__('os').environ)", s))
        self.ex("import subprocess\nenv = subprocess.run(['env'], capture_output=True, "
                "text=True).stdout", s)
        self.assertNotIn("LD_BIND_NOW", self.ev("env", s))

    def test_a_process_forked_by_a_session_resets_threading(self):
        # The zygote disarms threading's after-fork hook for its own forks;
        # each worker re-arms it, so that a session's os.fork() with another
        # thread running gives a child that sees only its own thread.
        s = self.bind()
        self.ex("import os, threading\n"
                "ev = threading.Event()\n"
                "t = threading.Thread(target=ev.wait)\n"
                "t.start()\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    os._exit(0 if threading.enumerate() == [threading.main_thread()] else 3)\n"
                "_, status = os.waitpid(pid, 0)\n"
                "ev.set()\n"
                "t.join()\n", s)
        self.assertEqual(self.ev("os.waitstatus_to_exitcode(status)", s), 0)

    def test_random_differs_between_sessions(self):
        values = set()
        for _ in range(3):
            s = self.bind()
            values.add(self.ev("__import__('random').random()", s))
        self.assertEqual(len(values), 3)

    def test_one_zygote_and_workers_named_apart(self):
        srv = self.server
        the_zygote(srv.pid)
        s = self.bind()
        pid = self.session_pid(s)
        with open("/proc/%d/comm" % pid) as f:
            self.assertEqual(f.read().strip(), "pyexec_worker")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            self.assertEqual(f.read().rstrip(b"\0"), b"pyexec_worker (forked by the zygote)")
        with open("/proc/%d/cmdline" % the_zygote(srv.pid), "rb") as f:
            self.assertIn(b"--zygote", f.read())
        self.assertEqual(os.getpgid(pid), pid)


class PreloadFileTest(fx.ServerTestCase):
    SETUP = None

    @classmethod
    def setUpClass(cls):
        fd, cls.SETUP = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write("import os\nZYGOTE_PID = os.getpid()\n")
        os.chmod(cls.SETUP, 0o644)
        cls.SERVER_FLAGS = ("--preload_file=" + cls.SETUP, )
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.SETUP)

    def test_setup_ran_once_in_the_zygote(self):
        zygote = the_zygote(self.server.pid)
        s = self.bind()
        self.assertEqual(self.ev("ZYGOTE_PID", s), zygote)


class ZygoteDeathTest(fx.ServerTestCase):
    PER_TEST_SERVER = True

    def test_killed_zygote_is_restarted_and_sessions_carry_on(self):
        srv = self.server
        s = self.bind()
        self.ex("x = 41", s)
        zygote = the_zygote(srv.pid)
        os.kill(zygote, signal.SIGKILL)
        fx.wait_gone({zygote: None}, 5.0)
        self.assertEqual(self.ev("x + 1", s), 42)
        # New sessions need new workers, forked by a new zygote.
        sessions = [self.bind() for _ in range(srv.workers + 1)]
        for t in sessions:
            self.assertEqual(self.ev("6 * 7", t), 42)
        self.assertNotEqual(the_zygote(srv.pid), zygote)

    def test_a_new_zygote_guards_the_workers_of_the_one_that_died(self):
        # Forked workers have no watchdog thread of their own: the zygote
        # kills them if pyexecd dies. After a zygote dies, pyexecd starts a
        # new one (within about a second, with no Bind needed), which takes
        # over the old one's workers: a busy one, and the child process of
        # another, still die with a SIGKILLed pyexecd.
        srv = self.server
        s = self.bind(cleanup=False)
        self.ex("import subprocess\nchild = subprocess.Popen(['sleep', '1000'])", s)
        grandchild = self.ev("child.pid", s)
        busy = self.bind(cleanup=False)
        busy_pid = self.session_pid(busy)
        zygote = the_zygote(srv.pid)
        os.kill(zygote, signal.SIGKILL)
        fx.wait_gone({zygote: None}, 5.0)
        fx.wait_until(lambda: "worker(s) of an earlier zygote" in srv.log_tail(),
                      10.0, what="a new zygote to take over the workers")
        path = self.marker()
        fut = self.stub.Exec.future(pb.ExecRequest(
            session=busy, code=self.touch_code(path) + "while True: pass"), timeout=30)
        self.wait_file(path)
        old = {p: fx.proc_stat(p)[2] for p in (busy_pid, self.session_pid(s), grandchild)}
        for pid, st in old.items():
            self.addCleanup(fx.kill_if_alive, pid, st)
        srv.proc.kill()
        srv.proc.wait(10)
        with self.assertRaises(grpc.RpcError):
            fut.result(timeout=20)
        survivors = fx.wait_gone(old, 5.0)
        self.assertFalse(survivors, "processes of the dead zygote's sessions outlived "
                         "a SIGKILLed pyexecd: %s" % survivors)


class SpawnLauncherTest(fx.ServerTestCase):
    SERVER_FLAGS = ("--launcher=spawn", )

    def test_spawned_workers_serve_and_there_is_no_zygote(self):
        s = self.bind()
        self.assertEqual(self.ev("1 + 1", s), 2)
        self.assertEqual(zygote_pids(self.server.pid), [])


class StartupErrorTest(fx.ServerTestCase):
    # No server of its own: each test starts one that must fail.
    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    def setUp(self):
        pass

    def start_failure(self, *flags):
        proc = subprocess.run(
            [fx.pyexecd_path(), "--listen=127.0.0.1:0", "--workers=1"] + list(flags),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=60, text=True)
        return proc.returncode, proc.stdout, proc.stderr

    def test_failing_preload_stops_pyexecd_with_the_traceback(self):
        rc, out, err = self.start_failure("--preload=json,no_such_module_pyexec")
        self.assertNotEqual(rc, 0)
        self.assertNotIn("listening on", out)
        self.assertIn("Traceback", err)
        self.assertIn("No module named 'no_such_module_pyexec'", err)

    def test_failing_preload_file_stops_pyexecd_with_the_traceback(self):
        with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
            f.write("x = 1\nraise RuntimeError('setup broke')\n")
            f.flush()
            rc, out, err = self.start_failure("--preload_file=" + f.name)
        self.assertNotEqual(rc, 0)
        self.assertIn("RuntimeError: setup broke", err)
        self.assertIn("line 2", err)

    def test_a_preload_that_leaves_a_thread_stops_pyexecd(self):
        with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
            f.write("import threading, time\n"
                    "threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n")
            f.flush()
            rc, out, err = self.start_failure("--preload_file=" + f.name)
        self.assertNotEqual(rc, 0)
        self.assertNotIn("listening on", out)
        self.assertIn("left 1 thread(s) running in the zygote", err)

    def test_preload_needs_the_zygote(self):
        rc, _, err = self.start_failure("--launcher=spawn", "--preload=json")
        self.assertNotEqual(rc, 0)
        self.assertIn("--preload and --preload_file need --launcher=zygote", err)
