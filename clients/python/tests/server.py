"""Starts a real pyexecd for the tests: $PYEXECD, else <repo>/bazel-bin/server/pyexecd,
on 127.0.0.1:0; the address comes from its `listening on HOST:PORT` line."""

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(CLIENT_ROOT))
if CLIENT_ROOT not in sys.path:
    sys.path.insert(0, CLIENT_ROOT)

STARTUP_TIMEOUT_S = 60.0
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def pyexecd_path() -> str:
    return os.environ.get("PYEXECD") or os.path.join(REPO, "bazel-bin", "server", "pyexecd")


class Pyexecd:
    """One pyexecd process; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, *flags: str, workers: int = 2, max_workers: int = 4,
                 listen: str = "127.0.0.1:0") -> None:
        self.flags: List[str] = ["--listen=" + listen, "--workers=%d" % workers,
                                 "--max_workers=%d" % max_workers] + list(flags)
        self.proc: Optional[subprocess.Popen] = None
        self.address = ""
        self._stderr = tempfile.TemporaryFile()

    def start(self) -> "Pyexecd":
        path = pyexecd_path()
        if not os.access(path, os.X_OK):
            raise RuntimeError("pyexecd not found at %s (build //server:pyexecd or set PYEXECD)"
                               % path)
        self.proc = subprocess.Popen([path] + self.flags, stdout=subprocess.PIPE,
                                     stderr=self._stderr, preexec_fn=_die_with_parent)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self._fail("pyexecd did not print its address in time")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self._fail("pyexecd exited early")
            line += chunk
        sel.close()
        text = line.decode().strip()
        if not text.startswith("listening on "):
            self.stop()
            raise RuntimeError("unexpected first line %r" % text)
        self.address = text[len("listening on "):]
        return self

    def _fail(self, what: str) -> None:
        log = self.log()
        self.stop()
        raise RuntimeError("%s:\n%s" % (what, log))

    def log(self) -> str:
        """The end of pyexecd's stderr; valid until stop()."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc = None
        self._stderr.close()
