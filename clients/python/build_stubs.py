"""Generates the pyexec.v1 stubs (pyexec_pb2.py, pyexec_pb2_grpc.py) that
pyexec_client imports as pyexec_client._gen.

Used by the package build (setup.py runs it into the built package) and by
gen_stubs.sh (a directory for $PYEXEC_CLIENT_STUBS in a source checkout).
It is not part of the installed package. Needs protoc and grpc_python_plugin
(Debian: protobuf-compiler, protobuf-compiler-grpc).

The proto keeps its own file name, pyexec/v1/pyexec.proto, in the descriptor
pool, so these stubs coexist in one process with any other copy generated
from the same proto. Two things are rewritten: the import that
pyexec_pb2_grpc makes of pyexec_pb2, from `pyexec.v1` to the package-relative
`.`, so that the stubs live inside pyexec_client and need no top-level
`pyexec` package on sys.path; and the module name protoc gives the message
classes, to the one they are imported as.

    python3 build_stubs.py OUT_DIR     # the proto is found as find_proto_root() says
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

PROTO_REL = os.path.join("pyexec", "v1", "pyexec.proto")
HERE = os.path.dirname(os.path.abspath(__file__))
# Where the proto root is, relative to clients/python: the repo's proto/
# directory two levels up, or proto/ inside an sdist (which carries a copy).
PROTO_ROOT_CANDIDATES = (os.path.join(HERE, "proto"),
                         os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto"))
STUB_FILES = ("pyexec_pb2.py", "pyexec_pb2_grpc.py")

_PB2_IMPORT = re.compile(r"^from pyexec\.v1 import pyexec_pb2 as (\w+)$", re.MULTILINE)


class StubError(Exception):
    """The stubs cannot be generated; the message says what is missing."""


def find_proto_root(candidates: Sequence[str] = PROTO_ROOT_CANDIDATES) -> str:
    """The first directory holding pyexec/v1/pyexec.proto."""
    for root in candidates:
        if os.path.isfile(os.path.join(root, PROTO_REL)):
            return root
    raise StubError("pyexec_client: %s not found under any of %s"
                    % (PROTO_REL, ", ".join(candidates)))


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StubError("pyexec_client: %s not found on PATH; it generates the protobuf stubs "
                        "(Debian: apt-get install %s)" % (name, package))
    return path


def _relative_import(source: str) -> str:
    """pyexec_pb2_grpc's import of pyexec_pb2, made package-relative."""
    rewritten, n = _PB2_IMPORT.subn(r"from . import pyexec_pb2 as \1", source)
    if n != 1:
        # A plugin that writes its import differently would give a package
        # that fails at import time; stop the build here instead.
        raise StubError("pyexec_client: expected one 'from pyexec.v1 import pyexec_pb2 as ...' "
                        "line in the generated pyexec_pb2_grpc.py, found %d" % n)
    return rewritten


def _own_module_name(source: str) -> str:
    """The message classes' __module__ is the module they really live in
    (protoc writes the proto's package path, 'pyexec.v1.pyexec_pb2')."""
    return source.replace("'pyexec.v1.pyexec_pb2'", "__name__")


def _rewrite(path: str, edit: Callable[[str], str]) -> None:
    with open(path, encoding="utf-8") as f:
        source = edit(f.read())
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)


def generate(out_dir: str, proto_root: Optional[str] = None) -> List[str]:
    """Writes the stubs into out_dir (created if needed); returns their paths.

    Each file is written aside and renamed into place, so a concurrent
    importer never sees a half-written module.
    """
    root = proto_root or find_proto_root()
    protoc = _tool("protoc", "protobuf-compiler")
    plugin = _tool("grpc_python_plugin", "protobuf-compiler-grpc")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pyexec-stubs-", dir=out_dir) as tmp:
        proc = subprocess.run(
            [protoc, "-I", root, "--python_out=" + tmp, "--grpc_python_out=" + tmp,
             "--plugin=protoc-gen-grpc_python=" + plugin, os.path.join(root, PROTO_REL)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise StubError("pyexec_client: protoc failed (exit %d):\n%s"
                            % (proc.returncode, proc.stdout))
        generated = os.path.join(tmp, "pyexec", "v1")
        _rewrite(os.path.join(generated, "pyexec_pb2.py"), _own_module_name)
        _rewrite(os.path.join(generated, "pyexec_pb2_grpc.py"), _relative_import)
        written = []
        # pyexec_pb2_grpc.py last: it is the one that needs the other.
        for name in STUB_FILES:
            dst = os.path.join(out_dir, name)
            os.replace(os.path.join(generated, name), dst)
            written.append(dst)
    return written


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: build_stubs.py OUT_DIR", file=sys.stderr)
        return 2
    try:
        for path in generate(argv[1]):
            print(path)
    except StubError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
