"""Build hooks of pyexec-client; the metadata is in pyproject.toml.

- build_py generates the protobuf stubs into the built package
  (pyexec_client/_gen/pyexec_pb2.py, pyexec_pb2_grpc.py), never into the
  source tree: the wheel carries them, and importing never generates.
- sdist carries the proto (proto/pyexec/v1/pyexec.proto), so the sdist builds
  without the repo around it.
"""

import os
import shutil
import sys
from typing import List

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import ExecError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_stubs  # noqa: E402  (next to this file; not part of the package)

GEN_PACKAGE = os.path.join("pyexec_client", "_gen")


class BuildPyWithStubs(build_py):
    """build_py, then the generated stubs into the build's pyexec_client/_gen."""

    def run(self) -> None:
        super().run()
        if not self.dry_run:
            try:
                build_stubs.generate(os.path.join(self.build_lib, GEN_PACKAGE))
            except build_stubs.StubError as err:
                raise ExecError(str(err)) from None

    def get_outputs(self, include_bytecode: bool = True) -> List[str]:
        gen = [os.path.join(self.build_lib, GEN_PACKAGE, name)
               for name in build_stubs.STUB_FILES]
        return list(super().get_outputs(include_bytecode)) + gen


class SdistWithProto(sdist):
    """sdist, plus the proto under proto/ where build_stubs looks first."""

    def make_release_tree(self, base_dir: str, files: List[str]) -> None:
        super().make_release_tree(base_dir, files)
        dst = os.path.join(base_dir, "proto", build_stubs.PROTO_REL)
        if not os.path.exists(dst):  # an sdist made from an sdist has it already
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(build_stubs.find_proto_root(), build_stubs.PROTO_REL),
                            dst)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto})
