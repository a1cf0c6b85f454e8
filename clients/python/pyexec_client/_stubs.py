"""Loads the generated pyexec.v1 stubs (see pyexec_client._gen).

They are imported by name, so the rest of the package sees plain modules
(typed Any) whether or not type checkers can read the generated code.
"""

import importlib
from types import ModuleType
from typing import Tuple

_MODULES = ("pyexec_client._gen.pyexec_pb2", "pyexec_client._gen.pyexec_pb2_grpc")


def load() -> Tuple[ModuleType, ModuleType]:
    """Returns (pyexec_pb2, pyexec_pb2_grpc); ImportError saying how to get
    them when they are missing."""
    try:
        pb2, pb2_grpc = (importlib.import_module(name) for name in _MODULES)
    except ModuleNotFoundError as err:
        if err.name not in _MODULES:
            raise  # e.g. grpc itself is missing
        raise ImportError(
            "pyexec_client: the generated protobuf stubs are missing. Install the package "
            "(pip install ./clients/python builds them), or, in a source checkout, run "
            "clients/python/gen_stubs.sh DIR and set PYEXEC_CLIENT_STUBS=DIR") from None
    return pb2, pb2_grpc


pb, pb_grpc = load()
