"""The generated pyexec.v1 stubs: pyexec_pb2 and pyexec_pb2_grpc.

They are build output, never committed. Building the package (pip install,
or any PEP 517 build) writes them next to this file in the built package.
A source checkout has none here: $PYEXEC_CLIENT_STUBS then names a directory
that clients/python/gen_stubs.sh filled, searched after this one. Importing
never generates or writes anything.
"""

import os

_extra = os.environ.get("PYEXEC_CLIENT_STUBS")
if _extra:
    __path__.append(_extra)
