"""The image, started by run_container_tests.sh under the manifests'
securityContext, serves what the manifests promise; and the `podman run`
block of deploy/container/README.md works as written.

Runs only against that container (PYEXEC_TEST_TARGET=container; the
harness sets it). ContainerSmokeTest checks that the harness runs the form
the manifests ship: the uid and groups a session has, the Secret as the
kubelet lays it out, the layers pyexecd reports, a session that cannot read
the Secret, and a restart through podman_target (a new pod: the old session
is gone). DocumentedRunLineTest runs the README's block with bash, the
image's default command included; only the published ports give way to a
network namespace of the test's own, so that the wildcard listen reaches no
network and no iptables rule is needed.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb, pb_grpc

from container import podman_target

SC = grpc.StatusCode
CONTAINER = os.environ.get("PYEXEC_TEST_TARGET") == "container"
TIMEOUT = 30


def read_tokens(path):
    with open(path) as f:
        return dict(line.split() for line in f if line.strip() and not line.startswith("#"))


@unittest.skipUnless(CONTAINER, "runs against the container of run_container_tests.sh")
class ContainerSmokeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.target = podman_target.Target.from_env()
        cls.pod = podman_target.Pod(podman_target.render(cls.target.pod_dir))
        cls.tokens = read_tokens(os.environ["PYEXEC_TEST_TOKENS_FILE"])
        cls.channel = grpc.insecure_channel(os.environ["PYEXEC_TEST_ADDRESS"])
        cls.stub = pb_grpc.PyExecStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def auth(self, who="alice"):
        return [("authorization", "Bearer " + self.tokens[who])]

    def bind(self, who="alice"):
        return self.stub.Bind(pb.BindRequest(), metadata=self.auth(who), timeout=TIMEOUT).session

    def eval(self, session, code, who="alice"):
        r = self.stub.Eval(pb.EvalRequest(session=session, code=code), metadata=self.auth(who),
                           timeout=TIMEOUT)
        self.assertFalse(r.HasField("error"), r.error)
        return fx.from_value(r.value)

    def exec(self, session, code, who="alice"):
        r = self.stub.Exec(pb.ExecRequest(session=session, code=code), metadata=self.auth(who),
                           timeout=TIMEOUT)
        self.assertFalse(r.HasField("error"), r.error)
        return r

    def test_session_runs_as_the_manifest_user(self):
        s = self.bind()
        self.assertEqual(self.eval(s, "6*7"), 42)
        self.exec(s, "import os")
        self.assertEqual(self.eval(s, "os.getuid()"), self.pod.uid)
        self.assertEqual(self.eval(s, "os.getgid()"), self.pod.gid)
        # Workers keep pyexecd's groups (it cannot drop them), fsGroup included.
        self.assertIn(self.pod.fs_group, self.eval(s, "os.getgroups()"))
        # The root filesystem is read-only; the emptyDir on /tmp is not.
        self.assertEqual(self.eval(s, "os.access('/usr', os.W_OK)"), False)
        self.assertTrue(self.eval(s, "os.environ['HOME']").startswith(
            os.environ["PYEXEC_TEST_PRIVATE_ROOT"] + "/"))

    def test_image_has_what_ordinary_programs_need(self):
        # python3 on PATH and sys.executable (subprocess, multiprocessing),
        # and CA certificates for ssl's default context.
        s = self.bind()
        self.exec(s, "import ssl, subprocess, sys")
        self.assertEqual(self.eval(s, "subprocess.run(['python3', '-c', 'print(6*7)'], "
                                      "capture_output=True, text=True).stdout"), "42\n")
        self.assertEqual(self.eval(s, "subprocess.run([sys.executable, '-c', 'print(7)'], "
                                      "capture_output=True, text=True).stdout"), "7\n")
        self.assertGreater(self.eval(s, "ssl.create_default_context().cert_store_stats()"
                                        "['x509_ca']"), 0)

    def test_authentication_is_on(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Eval(pb.EvalRequest(code="1"), timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)

    def test_pyexecd_reports_landlock_and_the_shared_uid(self):
        # pyexecd's own start-up line (worker output is prefixed otherwise).
        (line,) = re.findall(r"^\S+ I pyexecd\[\d+\] (isolation: .*)$", self.target.logs(), re.M)
        sys.stderr.write("\n    pyexecd: %s\n" % line)
        self.assertRegex(line, r"Landlock ABI (\d+)")
        self.assertGreaterEqual(int(re.search(r"Landlock ABI (\d+)", line).group(1)), 6)
        self.assertIn("workers share pyexecd's uid %d" % self.pod.uid, line)
        self.assertIn("seccomp filter", line)

    def test_secret_is_laid_out_as_the_kubelet_does(self):
        _, mode = next(iter(self.pod.secrets.values()))
        for path in os.environ["PYEXEC_TEST_SECRET_FILES"].split(":"):
            out = podman_target.podman("exec", self.target.name, "stat", "-L", "-c", "%u %g %a",
                                       path).stdout.split()
            self.assertEqual(out, ["0", str(self.pod.fs_group), "%o" % (mode | 0o440)], path)
            link = podman_target.podman("exec", self.target.name, "readlink", path).stdout.strip()
            self.assertEqual(link, "..data/" + os.path.basename(path))

    def test_session_cannot_read_the_secret(self):
        # uid, gid and groups would all allow it (the files are 0440 root:fsGroup
        # and workers hold fsGroup): only the Landlock domain refuses.
        s = self.bind()
        for path in os.environ["PYEXEC_TEST_SECRET_FILES"].split(":"):
            r = self.stub.Exec(pb.ExecRequest(session=s, code="open(%r).read()" % path),
                               metadata=self.auth(), timeout=TIMEOUT)
            self.assertTrue(r.HasField("error"), path)
            self.assertEqual(r.error.type, "PermissionError", path)

    def test_y_sigkilled_pyexecd_leaves_nothing_a_session_started(self):
        # pyexecd is the container's PID 1: when it dies, the kernel ends its
        # pid namespace, and every process a session started with it.
        marker = "pyexec-orphan-%d-%d" % (os.getpid(), time.monotonic_ns())
        s = self.bind()
        self.exec(s, "import subprocess, sys\n"
                     "child = subprocess.Popen([sys.executable, '-c', "
                     "'import time; time.sleep(1000)', %r])" % marker)

        def holders():
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        if marker.encode() in f.read():
                            found.append(int(pid))
                except OSError:
                    pass
            return found

        fx.wait_until(lambda: holders(), 10.0, what="the session's child, seen from the host")
        self.target.kill()
        fx.wait_until(lambda: not holders(), 10.0,
                      what="the session's child gone with the container's PID 1")
        self.target.start()

    def test_z_restart_is_a_new_pod(self):
        s = self.bind("bob")
        self.assertEqual(self.eval(s, "1+1", who="bob"), 2)
        self.target.restart()
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Eval(pb.EvalRequest(session=s, code="1"), metadata=self.auth("bob"),
                           timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        self.assertEqual(self.eval(self.bind("bob"), "6*7", who="bob"), 42)


README = os.path.join(podman_target.REPO, "deploy/container/README.md")
RUN_LINE_MARK = "<!-- run-line:"

# Runs in the test's network namespace: health, then a call with alice's
# token and one without.
CLIENT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb, pb_grpc
from container import podman_target
address, token = sys.argv[2], sys.argv[3]
fx.wait_until(lambda: podman_target.health_status(address, "") == podman_target.SERVING, 60,
              interval=0.2, what="health SERVING")
stub = pb_grpc.PyExecStub(grpc.insecure_channel(address))
r = stub.Eval(pb.EvalRequest(code="6*7"), metadata=[("authorization", "Bearer " + token)],
              timeout=30)
print("eval", fx.from_value(r.value))
try:
    stub.Eval(pb.EvalRequest(code="1"), timeout=30)
except grpc.RpcError as e:
    print("anonymous", e.code().name)
"""


def documented_block():
    """The sh block that follows the run-line mark in the README."""
    with open(README) as f:
        text = f.read()
    after = text[text.index(RUN_LINE_MARK):]
    m = re.search(r"```sh\n(.*?)```", after, re.S)
    return m.group(1)


@unittest.skipUnless(CONTAINER, "runs against the container of run_container_tests.sh")
class DocumentedRunLineTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyexec_runline_")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.netns = "pyexec-runline-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "delete", self.netns])
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self.name = "pyexec-runline-%d" % os.getpid()
        self.addCleanup(podman_target.podman, "rm", "--force", "--time=0", self.name, check=False)

    def test_readme_podman_run_block(self):
        block = documented_block()
        self.assertIn("podman run", block)
        image = podman_target.Target.from_env().image
        # `podman` as the README calls it, with what this machine needs: the
        # runtime, ulimits within its limits, detached (the block runs in the
        # foreground), the test's name and image, and the test's network
        # namespace instead of published ports.
        wrapper = """
podman() {
  [[ "$1" == run ]] || { command %(podman)s "$@"; return; }
  shift
  local args=(run --detach --network=ns:/run/netns/%(netns)s %(ulimits)s) skip=0 a
  for a in "$@"; do
    if ((skip)); then skip=0; continue; fi
    case "$a" in
      -p|--publish) skip=1 ;;
      --name) args+=(--name %(name)s); skip=1 ;;
      pyexec:0.1.0) args+=(%(image)s) ;;
      *) args+=("$a") ;;
    esac
  done
  command %(podman)s "${args[@]}"
}
""" % {"podman": " ".join(map(shlex.quote, podman_target.PODMAN)), "netns": self.netns,
       "ulimits": " ".join(podman_target._host_ulimits()), "name": self.name,
       "image": shlex.quote(image)}
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", wrapper + block], cwd=self.dir,
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        tokens = read_tokens(os.path.join(self.dir, "pyexec-auth/tokens"))
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        client = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", CLIENT, here,
             "127.0.0.1:50051", tokens["alice"]], capture_output=True, text=True, timeout=120)
        logs = podman_target.podman("logs", self.name, check=False)
        self.assertEqual(client.returncode, 0, client.stderr + logs.stdout + logs.stderr)
        self.assertEqual(client.stdout.split("\n")[:2], ["eval 42", "anonymous UNAUTHENTICATED"])
        # IPv6 of the same wildcard listen.
        client6 = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", CLIENT, here,
             "[::1]:50051", tokens["alice"]], capture_output=True, text=True, timeout=120)
        self.assertEqual(client6.stdout.split("\n")[:1], ["eval 42"], client6.stderr)


if __name__ == "__main__":
    unittest.main()
