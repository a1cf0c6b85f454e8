"""TLS, mutual TLS and the bearer token, against a fake PyExec server written
here (pyexecd has no TLS or auth yet): the server records each call's metadata
and serves TLS with certificates this test generates with openssl."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import unittest
from concurrent import futures
from typing import Any, List, Optional, Tuple

import server  # noqa: F401  (puts the client package on sys.path)
import grpc
import pyexec_client
import pyexec_client.aio
from pyexec_client import Unavailable
from pyexec_client._stubs import pb, pb_grpc

TOKEN = "s3cret-token"


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_pki(d: str) -> None:
    """ca.pem/ca.key, server.pem/key (localhost, 127.0.0.1), client.pem/key, other_ca.pem."""
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=%s test CA" % ca, "-keyout", ca + ".key", "-out", ca + ".pem",
                 cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                 "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", name + ".ext",
                 "-out", name + ".pem", cwd=d)


class Recorder(pb_grpc.PyExecServicer):
    """Answers every RPC and records (method, metadata)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: List[Tuple[str, dict]] = []

    def _record(self, method: str, context: Any) -> None:
        with self.lock:
            self.calls.append((method, dict(context.invocation_metadata())))

    def Bind(self, request: Any, context: Any) -> Any:
        self._record("Bind", context)
        return pb.BindResponse(session="tok", idle_timeout_seconds=60)

    def Unbind(self, request: Any, context: Any) -> Any:
        self._record("Unbind", context)
        return pb.UnbindResponse()

    def Eval(self, request: Any, context: Any) -> Any:
        self._record("Eval", context)
        return pb.EvalResponse(value=pb.Value(int=7))

    def Exec(self, request: Any, context: Any) -> Any:
        self._record("Exec", context)
        return pb.ExecResponse()

    def Call(self, request: Any, context: Any) -> Any:
        self._record("Call", context)
        return pb.CallResponse(value=pb.Value(str="called"))

    def GetStats(self, request: Any, context: Any) -> Any:
        self._record("GetStats", context)
        return pb.GetStatsResponse(sessions=3)


class FakeServer:
    def __init__(self, creds: Optional[grpc.ServerCredentials] = None) -> None:
        self.recorder = Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_PyExecServicer_to_server(self.recorder, self.server)
        if creds is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait()


def _read(d: str, name: str) -> bytes:
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def exercise_sync(client: pyexec_client.Client) -> None:
    assert client.eval("1") == 7
    client.exec("x = 1")
    assert client.call("m", "f", [1]) == "called"
    assert client.stats().sessions == 3
    with client.session() as s:
        assert s.eval("1") == 7


async def exercise_async(client: Any) -> None:
    assert await client.eval("1") == 7
    await client.exec("x = 1")
    assert await client.call("m", "f", [1]) == "called"
    assert (await client.stats()).sessions == 3
    async with client.session() as s:
        assert await s.eval("1") == 7


ALL_METHODS = ["Eval", "Exec", "Call", "GetStats", "Bind", "Eval", "Unbind"]


class TlsAuthTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        if not shutil.which("openssl"):
            raise RuntimeError("openssl is required (Debian package openssl)")
        cls.pki = tempfile.mkdtemp(prefix="pyexec_pki_")
        make_pki(cls.pki)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.pki, ignore_errors=True)

    def pem(self, name: str) -> str:
        return os.path.join(self.pki, name)

    def server_creds(self, client_auth: bool) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(_read(self.pki, "server.key"), _read(self.pki, "server.pem"))],
            root_certificates=_read(self.pki, "ca.pem") if client_auth else None,
            require_client_auth=client_auth)

    def assert_bearer_on_every_call(self, fake: FakeServer) -> None:
        methods = [m for m, _ in fake.recorder.calls]
        self.assertEqual(methods, ALL_METHODS)
        for method, md in fake.recorder.calls:
            self.assertEqual(md.get("authorization"), "Bearer " + TOKEN, method)
            self.assertEqual(md.get("x-extra"), "1", method)

    def test_bearer_token_on_every_call_plaintext(self) -> None:
        fake = FakeServer()
        self.addCleanup(fake.stop)
        target = "127.0.0.1:%d" % fake.port
        with pyexec_client.Client(target, token=TOKEN, metadata=[("x-extra", "1")],
                                  timeout=10) as c:
            exercise_sync(c)
        self.assert_bearer_on_every_call(fake)
        fake.recorder.calls.clear()

        async def main() -> None:
            async with pyexec_client.aio.Client(target, token=TOKEN, metadata=[("x-extra", "1")],
                                                timeout=10) as c:
                await exercise_async(c)
        asyncio.run(main())
        self.assert_bearer_on_every_call(fake)

    def test_no_token_sends_no_authorization(self) -> None:
        fake = FakeServer()
        self.addCleanup(fake.stop)
        with pyexec_client.Client("127.0.0.1:%d" % fake.port, timeout=10) as c:
            c.eval("1")
        self.assertNotIn("authorization", fake.recorder.calls[0][1])

    def test_tls_with_root_ca(self) -> None:
        fake = FakeServer(self.server_creds(client_auth=False))
        self.addCleanup(fake.stop)
        target = "localhost:%d" % fake.port
        with pyexec_client.Client(target, root_certificates=self.pem("ca.pem"), token=TOKEN,
                                  metadata=[("x-extra", "1")], timeout=10) as c:
            exercise_sync(c)
        self.assert_bearer_on_every_call(fake)

        async def main() -> None:
            async with pyexec_client.aio.Client(target, root_certificates=self.pem("ca.pem"),
                                                timeout=10) as c:
                self.assertEqual(await c.eval("1"), 7)
        asyncio.run(main())
        # A client trusting another CA refuses the server; so does a plaintext one.
        with pyexec_client.Client(target, root_certificates=self.pem("other_ca.pem"),
                                  timeout=5) as c:
            with self.assertRaises(Unavailable):
                c.eval("1")
        with pyexec_client.Client(target, timeout=5) as c:
            with self.assertRaises(Unavailable):
                c.eval("1")

    def test_mutual_tls(self) -> None:
        fake = FakeServer(self.server_creds(client_auth=True))
        self.addCleanup(fake.stop)
        target = "localhost:%d" % fake.port
        with pyexec_client.Client(target, root_certificates=self.pem("ca.pem"),
                                  private_key=self.pem("client.key"),
                                  certificate_chain=self.pem("client.pem"), timeout=10) as c:
            self.assertEqual(c.eval("1"), 7)

        async def main() -> None:
            async with pyexec_client.aio.Client(
                    target, root_certificates=_read(self.pki, "ca.pem"),
                    private_key=_read(self.pki, "client.key"),
                    certificate_chain=_read(self.pki, "client.pem"), timeout=10) as c:
                self.assertEqual(await c.eval("1"), 7)
        asyncio.run(main())
        with pyexec_client.Client(target, root_certificates=self.pem("ca.pem"), timeout=5) as c:
            with self.assertRaises(Unavailable):
                c.eval("1")
        with self.assertRaises(pyexec_client.InvalidArgument):
            pyexec_client.Client(target, private_key=self.pem("client.key"))


if __name__ == "__main__":
    unittest.main()
