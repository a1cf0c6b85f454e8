"""deploy/kubernetes/overlays/mtls, run in the image as the kubelet would.

The overlay's pod (TLS with client certificates on the gRPC port,
--health_listen on a plaintext port that the probes use) is started with
podman_target beside the harness's container, with a Secret pyexec-tls made
here with openssl (a CA, a server certificate for 127.0.0.1, a client
certificate for alice). podman_target waits for the readiness probe's
service on the probe's port, as the kubelet would; then:
  - the health port answers in plaintext, with no client certificate, for
    the whole server and for pyexec.v1.PyExec, and serves nothing else;
  - the gRPC port takes TLS with a client certificate (and a bearer token),
    and refuses a handshake without one and plaintext.

Runs only under run_container_tests.sh (PYEXEC_TEST_TARGET=container).
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb, pb_grpc

from container import podman_target

SC = grpc.StatusCode
CONTAINER = os.environ.get("PYEXEC_TEST_TARGET") == "container"
MTLS_DIR = os.path.join(podman_target.KUSTOMIZE_DIR, "overlays/mtls")
TIMEOUT = 30


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d):
    """ca.crt; tls.crt/tls.key for 127.0.0.1; client.crt/client.key for alice."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=pyexec test CA", cwd=d)
    for name, subject, san in (("tls", "/CN=pyexec", "IP:127.0.0.1"),
                               ("client", "/CN=alice", "DNS:alice")):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject,
                "-addext", "subjectAltName=" + san, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "1",
                "-copy_extensions", "copyall", cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


@unittest.skipUnless(CONTAINER, "runs under run_container_tests.sh")
class MtlsOverlayTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        base = podman_target.Target.from_env()
        cls.dir = tempfile.mkdtemp(prefix="pyexec_mtls_")
        pod = podman_target.Pod(podman_target.render(MTLS_DIR))
        secret_dirs, cls.tokens = podman_target.write_auth_secret(pod, cls.dir)
        certs = os.path.join(cls.dir, "certs")
        os.mkdir(certs)
        make_certificates(certs)
        ((tls_mount, (tls_secret, mode)),) = [
            (m, s) for m, s in pod.secrets.items() if s[0] == "pyexec-tls"]
        secret_dirs[tls_mount] = os.path.join(cls.dir, tls_secret)
        podman_target.write_secret_volume(
            secret_dirs[tls_mount],
            {n: read(certs, n) for n in ("tls.crt", "tls.key", "ca.crt")}, mode, pod.fs_group)
        cls.credentials = grpc.ssl_channel_credentials(
            root_certificates=read(certs, "ca.crt"), private_key=read(certs, "client.key"),
            certificate_chain=read(certs, "client.crt"))
        cls.server_only = grpc.ssl_channel_credentials(root_certificates=read(certs, "ca.crt"))
        cls.target = podman_target.Target(base.image, "pyexec-mtls-%d" % os.getpid(), cls.dir,
                                          pod_dir=MTLS_DIR, secret_dirs=secret_dirs)
        try:
            cls.target.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.target.remove()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_probes_get_plaintext_health_without_a_certificate(self):
        self.assertNotEqual(self.target.probe_address, self.target.address)
        for service in ("", fx.SERVICE):
            self.assertEqual(podman_target.health_status(self.target.probe_address, service),
                             podman_target.SERVING, service)
        # Health only: PyExec is not served there.
        with grpc.insecure_channel(self.target.probe_address) as channel:
            with self.assertRaises(grpc.RpcError) as cm:
                pb_grpc.PyExecStub(channel).Eval(pb.EvalRequest(code="1"), timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(), SC.UNIMPLEMENTED)

    def test_calls_need_a_client_certificate(self):
        auth = [("authorization", "Bearer " + self.tokens["alice"])]
        with grpc.secure_channel(self.target.address, self.credentials) as channel:
            r = pb_grpc.PyExecStub(channel).Eval(pb.EvalRequest(code="6*7"), metadata=auth,
                                                 timeout=TIMEOUT)
            self.assertEqual(fx.from_value(r.value), 42)
        with grpc.secure_channel(self.target.address, self.server_only) as channel:
            with self.assertRaises(grpc.RpcError) as cm:
                pb_grpc.PyExecStub(channel).Eval(pb.EvalRequest(code="1"), metadata=auth,
                                                 timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(), SC.UNAVAILABLE)
        self.assertIsNone(podman_target.health_status(self.target.address, ""))


if __name__ == "__main__":
    unittest.main()
