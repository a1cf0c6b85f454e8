"""The image, started by run_container_tests.sh under the manifests'
securityContext, serves what the manifests promise.

Runs only against that container (PYEXEC_TEST_TARGET=container; the
harness sets it). Checks that the harness runs the form the manifests ship:
the uid and groups a session has, the Secret as the kubelet lays it out,
the layers pyexecd reports, a session that cannot read the Secret, and a
restart through podman_target (a new pod: the old session is gone).
"""

import os
import re
import sys
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

    def test_authentication_is_on(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Eval(pb.EvalRequest(code="1"), timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)

    def test_pyexecd_reports_landlock_and_the_shared_uid(self):
        (line,) = re.findall(r"isolation: .*", self.target.logs())
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

    def test_z_restart_is_a_new_pod(self):
        s = self.bind("bob")
        self.assertEqual(self.eval(s, "1+1", who="bob"), 2)
        self.target.restart()
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Eval(pb.EvalRequest(session=s, code="1"), metadata=self.auth("bob"),
                           timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)
        self.assertEqual(self.eval(self.bind("bob"), "6*7", who="bob"), 42)


if __name__ == "__main__":
    unittest.main()
