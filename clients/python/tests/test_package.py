"""The package as its users get it, against a real pyexecd:

- `pip install ./clients/python` (from a copy of the checkout) into a venv
  made with --system-site-packages, so that Debian's grpcio and protobuf
  serve; pip never looks for an index (--no-index --no-build-isolation);
- the sdist carries the proto and builds and installs away from the repo;
- a program outside the repo (user_program.py) imports the installed package
  and calls the server, and passes `mypy --strict` against it;
- a read-only checkout imports with the stubs from $PYEXEC_CLIENT_STUBS, and
  without them fails with a clear ImportError, writing nothing.

Everything lives in one temporary directory, removed at the end.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from typing import Dict, List, Optional

import server

PIP_OFFLINE = ["--no-index", "--no-build-isolation", "--disable-pip-version-check",
               "--no-input", "--quiet"]
# Files of a checkout's clients/python that a build never needs.
NOT_COPIED = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
STEP_TIMEOUT_S = 180


def run(argv: List[str], cwd: str, env: Optional[Dict[str, str]] = None,
        check: bool = True) -> "subprocess.CompletedProcess[str]":
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=STEP_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s" % (" ".join(argv), proc.returncode,
                                                            proc.stdout))
    return proc


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no stub directory."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYEXEC_CLIENT_STUBS", "PYTHONHOME")}
    env.update(extra)
    return env


def tree(root: str) -> Dict[str, float]:
    """Every path under root with its mtime: what a write would change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_mtime
    return out


class PackageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="pyexec_client_pkg.")
        try:
            os.chmod(cls.tmp, 0o755)  # the read-only test reads it as another user
            # A checkout as a fresh clone has it: clients/python and the proto.
            cls.checkout = os.path.join(cls.tmp, "checkout")
            shutil.copytree(server.CLIENT_ROOT, os.path.join(cls.checkout, "clients", "python"),
                            ignore=NOT_COPIED)
            proto = os.path.join("proto", "pyexec", "v1", "pyexec.proto")
            os.makedirs(os.path.dirname(os.path.join(cls.checkout, proto)))
            shutil.copyfile(os.path.join(server.REPO, proto), os.path.join(cls.checkout, proto))
            # A program of a user, outside the repo.
            cls.scratch = os.path.join(cls.tmp, "scratch")
            os.mkdir(cls.scratch)
            shutil.copyfile(os.path.join(server.HERE, "user_program.py"),
                            os.path.join(cls.scratch, "user_program.py"))
            cls.venv = os.path.join(cls.tmp, "venv")
            run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", cls.venv], cls.tmp)
            cls.python = os.path.join(cls.venv, "bin", "python")
            cls.pip = os.path.join(cls.venv, "bin", "pip")
            run([cls.pip, "install"] + PIP_OFFLINE + ["./clients/python"], cls.checkout)
            cls.server = server.Pyexecd(workers=2, max_workers=4).start()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        # The read-only test's files are read-only: make them removable.
        for dirpath, _, _ in os.walk(cls.tmp):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(cls.tmp)

    def site_packages(self, venv: str) -> str:
        return run([os.path.join(venv, "bin", "python"), "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   self.tmp).stdout.strip()

    def run_user_program(self, python: str) -> Dict[str, object]:
        out = run([python, "-I", "user_program.py", self.server.address], self.scratch,
                  env=clean_env()).stdout
        report: Dict[str, object] = json.loads(out)
        self.assertEqual(report, dict(report, **{
            "eval": 42, "live": "live\n", "warnings": "careful\n", "attr": 2,
            "stream": [0, 1, 4, 9], "events": ["ev\n"], "released": 1, "divmod": [3, 1],
            "error": "ZeroDivisionError", "workers": True, "aio_live": "0\n1\n2\n",
            "aio_items": [1, 2, 3], "aio_eval": 6, "callback": 42, "interrupted": True,
            "restored": 2, "aio_callback": "K", "aio_interrupted": True}))
        return report

    def test_installed_from_the_checkout(self) -> None:
        site = self.site_packages(self.venv)
        package = os.path.join(site, "pyexec_client")
        # The build put the stubs into the package, and the type marker.
        for name in ("py.typed", "_gen/__init__.py", "_gen/pyexec_pb2.py",
                     "_gen/pyexec_pb2_grpc.py"):
            self.assertTrue(os.path.isfile(os.path.join(package, name)), name)
        # ... and nothing into the checkout's package directory.
        source_gen = os.path.join(self.checkout, "clients", "python", "pyexec_client", "_gen")
        self.assertEqual(sorted(os.listdir(source_gen)), ["__init__.py"])
        report = self.run_user_program(self.python)
        self.assertEqual(report["package"], os.path.join(package, "__init__.py"))

    def test_user_code_passes_mypy_strict(self) -> None:
        # Checked as a user checks it: outside the repo (no mypy config from
        # it), against the venv's installed package. A second file with a
        # type error must be refused, so the package's types are really used
        # and not taken as Any.
        with open(os.path.join(self.scratch, "wrong.py"), "w") as f:
            f.write("from pyexec_client import Client\n"
                    "answer: str = Client('localhost:1').stats().sessions\n"
                    "Client('localhost:1').eval(42)\n")
        proc = run(["mypy", "--strict", "--cache-dir=/dev/null", "--no-error-summary",
                    "--python-executable", self.python, "user_program.py", "wrong.py"],
                   self.scratch, env=clean_env(), check=False)
        self.assertEqual(sorted(proc.stdout.splitlines()), [
            'wrong.py:2: error: Incompatible types in assignment (expression has type "int", '
            'variable has type "str")  [assignment]',
            'wrong.py:3: error: Argument 1 to "eval" of "_Calls" has incompatible type "int"; '
            'expected "str"  [arg-type]'], proc.stdout)

    def test_sdist_carries_the_proto_and_builds_elsewhere(self) -> None:
        dist = os.path.join(self.tmp, "dist")
        source = os.path.join(self.checkout, "clients", "python")
        run([self.python, "-c", "import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))", dist], source)
        [name] = os.listdir(dist)
        with tarfile.open(os.path.join(dist, name)) as tar:
            members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
        self.assertIn("proto/pyexec/v1/pyexec.proto", members)
        self.assertIn("build_stubs.py", members)
        self.assertNotIn("pyexec_client/_gen/pyexec_pb2.py", members)
        # Installed into a second venv (its pip is the first venv's), from a
        # directory where no proto is near: the build must use the sdist's.
        other = os.path.join(self.tmp, "venv-sdist")
        run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", other],
            self.tmp)
        python = os.path.join(other, "bin", "python")
        run([self.pip, "--python", python, "install"] + PIP_OFFLINE + [os.path.join(dist, name)],
            self.scratch)
        report = self.run_user_program(python)
        self.assertEqual(report["package"],
                         os.path.join(self.site_packages(other), "pyexec_client", "__init__.py"))

    def test_read_only_checkout(self) -> None:
        # A checkout, read-only, with no stubs inside: imports with the
        # stubs from $PYEXEC_CLIENT_STUBS, and writes nothing.
        checkout = os.path.join(self.tmp, "readonly")
        shutil.copytree(self.checkout, checkout, ignore=NOT_COPIED)
        readonly = os.path.join(checkout, "clients", "python")
        stubs = os.path.join(self.tmp, "stubs")
        run([os.path.join(readonly, "gen_stubs.sh"), stubs], self.tmp)
        for dirpath, dirnames, filenames in os.walk(checkout):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
            os.chmod(dirpath, 0o555)
        before = tree(checkout)
        prog = ("import sys, pyexec_client\n"
                "print(pyexec_client.__file__)\n"
                "print(pyexec_client.Client(sys.argv[1], timeout=30).eval('6*7'))\n")
        # Root writes through file modes: run as nobody, whom they stop.
        as_user: List[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            as_user = ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                       "--clear-groups", "--"]
        argv = as_user + ["/usr/bin/python3", "-c", prog, self.server.address]
        proc = run(argv, self.scratch, env=clean_env(PYTHONPATH=readonly,
                                                     PYEXEC_CLIENT_STUBS=stubs))
        self.assertEqual(proc.stdout.splitlines(),
                         [os.path.join(readonly, "pyexec_client", "__init__.py"), "42"])
        # Without stubs: a clear ImportError, not a PermissionError.
        proc = run(argv, self.scratch, env=clean_env(PYTHONPATH=readonly), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("ImportError: pyexec_client: the generated protobuf stubs are missing",
                      proc.stdout)
        self.assertIn("gen_stubs.sh", proc.stdout)
        self.assertNotIn("PermissionError", proc.stdout)
        self.assertEqual(tree(checkout), before)


if __name__ == "__main__":
    sys.exit(unittest.main())
