"""Security rules against the real pyexecd: authentication, session ownership,
per-principal limits, isolation between clients, secure-by-default listening,
TLS and mTLS (issue 8, server side).

Tokens and certificates are made in a temporary directory for each class
(certificates with Debian's `openssl`).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import pyexecd_fixture as fx
from pyexecd_fixture import grpc, pb, pb_grpc
from grpcstd.reflection.v1 import reflection_pb2 as refl, reflection_pb2_grpc as refl_grpc

SC = grpc.StatusCode

# Principal names and tokens of the same length, so that a rewrite can keep
# the file's size (see test_sighup_reloads).
TOKENS = {"alice": "tok-alice-0123456789", "bob00": "tok-bob00-0123456789"}
PEER_SECRET = "peer-secret-0123456789abcdef"

PLANT = "import builtins\nbuiltins.planted = 'from another client'\n"
PROBE = "getattr(__import__('builtins'), 'planted', None)"


def write_tokens(path, tokens, extra=""):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write("# principal token\n" + extra)
        for principal, token in tokens.items():
            f.write("%s %s\n" % (principal, token))
    os.replace(tmp, path)


def auth(principal):
    return (("authorization", "Bearer " + TOKENS[principal]),)


class Client:
    """Calls on behalf of one principal (fixed metadata)."""

    def __init__(self, test, metadata):
        self.test = test
        self.md = tuple(metadata)

    def bind(self, **kw):
        resp = self.test.stub.Bind(pb.BindRequest(), metadata=self.md, timeout=10, **kw)
        self.test.addCleanup(self.unbind_quietly, resp.session)
        return resp.session

    def unbind(self, session):
        return self.test.stub.Unbind(pb.UnbindRequest(session=session), metadata=self.md,
                                     timeout=10)

    def unbind_quietly(self, session):
        try:
            self.unbind(session)
        except grpc.RpcError:
            pass

    def eval(self, code, session="", timeout=10):
        return self.test.stub.Eval(pb.EvalRequest(session=session, code=code),
                                   metadata=self.md, timeout=timeout)

    def ev(self, code, session="", timeout=10):
        return self.test.value_of(self.eval(code, session, timeout))

    def ex(self, code, session=""):
        resp = self.test.stub.Exec(pb.ExecRequest(session=session, code=code),
                                   metadata=self.md, timeout=10)
        self.test.assertFalse(resp.HasField("error"), resp.error)


class TokenAuthTest(fx.ServerTestCase):
    """One server with --auth_tokens_file and the per-principal limits."""

    WORKERS = 2
    MAX_WORKERS = 8

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_sec_")
        cls.tokens = os.path.join(cls.dir, "tokens")
        write_tokens(cls.tokens, TOKENS)
        secret = os.path.join(cls.dir, "peer_secret")
        with open(secret, "w") as f:
            f.write(PEER_SECRET + "\n")
        fx.give_to_server(cls.dir)
        cls.SERVER_FLAGS = ("--auth_tokens_file=" + cls.tokens,
                            "--peer_secret_file=" + secret,
                            "--max_sessions_per_principal=2", "--max_timeout=4s")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, True)

    def setUp(self):
        super().setUp()
        self.restore_tokens()
        self.alice = Client(self, auth("alice"))
        self.bob = Client(self, auth("bob00"))

    def restore_tokens(self, sighup=False):
        """Puts the original tokens back (if a test changed them) and waits for the reload."""
        with open(self.tokens) as f:
            current = f.read()
        write_tokens(self.tokens + ".want", TOKENS)
        with open(self.tokens + ".want") as f:
            wanted = f.read()
        if current == wanted:
            return
        offset = self.server.log_size()
        os.replace(self.tokens + ".want", self.tokens)
        if sighup:
            self.server.signal(signal.SIGHUP)
        fx.wait_until(lambda: "credentials reloaded" in self.server.log_since(offset), 10,
                      what="the tokens file to be reloaded")

    def test_calls_without_valid_credentials_are_unauthenticated(self):
        calls = [
            lambda md: self.stub.Bind(pb.BindRequest(), metadata=md, timeout=10),
            lambda md: self.stub.Unbind(pb.UnbindRequest(session="x"), metadata=md, timeout=10),
            lambda md: self.stub.Eval(pb.EvalRequest(code="1"), metadata=md, timeout=10),
            lambda md: self.stub.Exec(pb.ExecRequest(code="x=1"), metadata=md, timeout=10),
            lambda md: self.stub.Call(pb.CallRequest(module="builtins", function="len"),
                                      metadata=md, timeout=10),
            lambda md: self.stub.GetStats(pb.GetStatsRequest(), metadata=md, timeout=10),
        ]
        bad = [(), (("authorization", "Bearer nope"),),
               (("authorization", "Bearer " + TOKENS["alice"][:-1]),),
               (("authorization", "Basic " + TOKENS["alice"]),),
               (("authorization", TOKENS["alice"]),)]
        for call in calls:
            for md in bad:
                self.assertRpcError(SC.UNAUTHENTICATED, call, md)
        self.assertEqual(self.alice.ev("6 * 7"), 42)

    def test_health_and_reflection_stay_open(self):
        self.assertEqual(self.server.health_status(""), fx.SERVING)
        self.assertEqual(self.server.health_status(fx.SERVICE), fx.SERVING)
        # Deliberate: reflection describes the public schema only, so that
        # `grpcurl list` works without credentials (see SECURITY.md).
        stub = refl_grpc.ServerReflectionStub(self.server.channel)
        resps = list(stub.ServerReflectionInfo(
            iter([refl.ServerReflectionRequest(list_services="")]), timeout=10))
        names = [s.name for s in resps[0].list_services_response.service]
        self.assertIn(fx.SERVICE, names)

    def test_another_principals_session_is_not_found(self):
        session = self.alice.bind()
        self.alice.ex("secret = 'alice data'", session)
        err = self.assertRpcError(SC.NOT_FOUND, self.bob.eval, "secret", session)
        unknown = self.assertRpcError(SC.NOT_FOUND, self.bob.eval, "secret", "f" * 32)
        self.assertEqual(err.details(), unknown.details())
        # Bob's Unbind of alice's token does nothing.
        self.bob.unbind(session)
        self.assertEqual(self.alice.ev("secret", session), "alice data")
        self.alice.unbind(session)
        self.assertRpcError(SC.NOT_FOUND, self.alice.eval, "secret", session)

    def test_tokens_never_reach_the_log(self):
        self.alice.ev("1")
        for md in [(("authorization", "Bearer wrong-token-xyz"),)]:
            self.assertRpcError(SC.UNAUTHENTICATED, self.stub.Eval, pb.EvalRequest(code="1"),
                                metadata=md, timeout=10)
        log = self.server.log_since(0)
        for token in list(TOKENS.values()) + ["wrong-token-xyz", PEER_SECRET]:
            self.assertNotIn(token, log)

    def test_planted_builtin_reaches_neither_a_session_nor_another_principal(self):
        for _ in range(3):
            self.alice.ex(PLANT)
        for _ in range(4):
            self.assertIsNone(self.bob.ev(PROBE))
        for client in (self.alice, self.bob):
            session = client.bind()
            self.assertIsNone(client.ev(PROBE, session))
            client.unbind(session)

    def test_per_principal_session_limit(self):
        a1, a2 = self.alice.bind(), self.alice.bind()
        err = self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.alice.bind)
        self.assertIn("max_sessions_per_principal", err.details())
        b1 = self.bob.bind()  # another principal is not affected
        self.alice.unbind(a1)
        a3 = self.alice.bind()  # an unbind frees the slot
        self.assertEqual(self.alice.ev("1", a3), 1)
        del a2, b1

    def test_max_timeout_caps_long_deadlines(self):
        start = time.monotonic()
        self.assertRpcError(SC.DEADLINE_EXCEEDED, self.alice.eval,
                            "__import__('time').sleep(30)", "", 60)
        self.assertLess(time.monotonic() - start, 20)

    def test_token_file_is_reloaded_on_change(self):
        carol = (("authorization", "Bearer tok-carol-new"),)
        self.assertRpcError(SC.UNAUTHENTICATED, self.stub.Eval, pb.EvalRequest(code="1"),
                            metadata=carol, timeout=10)
        offset = self.server.log_size()
        write_tokens(self.tokens, {"alice": TOKENS["alice"], "carol": "tok-carol-new"})
        fx.wait_until(lambda: "credentials reloaded" in self.server.log_since(offset), 10,
                      what="the tokens file to be reloaded")
        self.assertEqual(self.value_of(self.stub.Eval(pb.EvalRequest(code="2"),
                                                      metadata=carol, timeout=10)), 2)
        # bob00 was removed from the file.
        self.assertRpcError(SC.UNAUTHENTICATED, self.bob.eval, "1")

    def test_sighup_reloads(self):
        session = self.bob.bind()
        # Bob's token now names principal erin0. Same size, same inode, old
        # mtime: only SIGHUP can notice the change.
        st = os.stat(self.tokens)
        with open(self.tokens, "r+") as f:
            text = f.read()
            f.seek(0)
            f.write(text.replace("bob00 ", "erin0 "))
        os.utime(self.tokens, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertEqual(self.bob.ev("1", session), 1)  # not reloaded yet
        offset = self.server.log_size()
        self.server.signal(signal.SIGHUP)
        fx.wait_until(lambda: "credentials reloaded (" in self.server.log_since(offset), 10,
                      what="SIGHUP to reload the tokens file")
        # The same token is now another principal: bob00's session is foreign.
        self.assertRpcError(SC.NOT_FOUND, self.bob.eval, "1", session)
        self.assertEqual(self.bob.ev("2"), 2)
        self.restore_tokens(sighup=True)
        self.assertEqual(self.bob.ev("3", session), 3)

    def test_broken_tokens_file_keeps_the_previous_tokens(self):
        offset = self.server.log_size()
        with open(self.tokens, "a") as f:
            f.write("three fields here\n")
        fx.wait_until(lambda: "credentials not reloaded" in self.server.log_since(offset), 10,
                      what="the broken tokens file to be refused")
        self.assertIn("line", self.server.log_since(offset))
        self.assertEqual(self.alice.ev("1"), 1)

    def test_principal_header_needs_an_authenticated_peer(self):
        session = self.alice.bind()
        self.alice.ex("x = 'owned by alice'", session)
        forged = Client(self, auth("bob00") + (("x-pyexec-principal", "alice"),))
        self.assertRpcError(SC.UNAUTHENTICATED, forged.eval, "x", session)
        wrong = Client(self, (("x-pyexec-principal", "alice"),
                              ("x-pyexec-peer-secret", PEER_SECRET[:-1] + "X")))
        self.assertRpcError(SC.UNAUTHENTICATED, wrong.eval, "x", session)
        # A peer replica forwarding alice's call (shared secret) reaches her
        # session; the principal travelled with the call.
        peer = Client(self, (("x-pyexec-forwarded", "1"), ("x-pyexec-principal", "alice"),
                             ("x-pyexec-peer-secret", PEER_SECRET)))
        self.assertEqual(peer.ev("x", session), "owned by alice")
        as_bob = Client(self, (("x-pyexec-forwarded", "1"), ("x-pyexec-principal", "bob00"),
                               ("x-pyexec-peer-secret", PEER_SECRET)))
        self.assertRpcError(SC.NOT_FOUND, as_bob.eval, "x", session)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoReplicasTest(unittest.TestCase):
    """The principal travels with calls forwarded between replicas (--peers)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_sec_")
        tokens = os.path.join(cls.dir, "tokens")
        write_tokens(tokens, TOKENS)
        secret = os.path.join(cls.dir, "peer_secret")
        with open(secret, "w") as f:
            f.write(PEER_SECRET + "\n")
        fx.give_to_server(cls.dir)
        addresses = ["127.0.0.1:%d" % free_port() for _ in range(2)]
        cls.replicas = []
        for address in addresses:
            r = fx.Server("--listen=" + address, "--advertise_address=" + address,
                          "--peers=" + ",".join(addresses), "--auth_tokens_file=" + tokens,
                          "--peer_secret_file=" + secret, workers=1, max_workers=4)
            cls.replicas.append(r)
            try:
                r.start()
            except BaseException:
                for started in cls.replicas:
                    started.cleanup()
                raise

    @classmethod
    def tearDownClass(cls):
        for r in cls.replicas:
            r.cleanup()
            r.remove_log()
        shutil.rmtree(cls.dir, True)

    def test_forwarded_calls_keep_the_callers_principal(self):
        owner, other = (pb_grpc.PyExecStub(r.channel) for r in self.replicas)
        session = owner.Bind(pb.BindRequest(), metadata=auth("alice"), timeout=10).session
        self.addCleanup(lambda: owner.Unbind(pb.UnbindRequest(session=session),
                                             metadata=auth("alice"), timeout=10))
        owner.Exec(pb.ExecRequest(session=session, code="x = 'alice data'"),
                   metadata=auth("alice"), timeout=10)
        # Through the other replica: alice reaches her session...
        resp = other.Eval(pb.EvalRequest(session=session, code="x"), metadata=auth("alice"),
                          timeout=10)
        self.assertEqual(fx.from_value(resp.value), "alice data")
        # ...bob gets NOT_FOUND from the owner, and his Unbind does nothing.
        with self.assertRaises(grpc.RpcError) as cm:
            other.Eval(pb.EvalRequest(session=session, code="x"), metadata=auth("bob00"),
                       timeout=10)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND, cm.exception.details())
        other.Unbind(pb.UnbindRequest(session=session), metadata=auth("bob00"), timeout=10)
        resp = other.Eval(pb.EvalRequest(session=session, code="x"), metadata=auth("alice"),
                          timeout=10)
        self.assertEqual(fx.from_value(resp.value), "alice data")
        # A client cannot pose as a forwarding peer.
        forged = auth("bob00") + (("x-pyexec-forwarded", "1"), ("x-pyexec-principal", "alice"))
        with self.assertRaises(grpc.RpcError) as cm:
            owner.Eval(pb.EvalRequest(session=session, code="x"), metadata=forged, timeout=10)
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)


class IsolationWithoutAuthTest(fx.ServerTestCase):
    """The issue's reproduction: stateless calls then a fresh Bind."""

    WORKERS = 2

    def test_planted_builtin_does_not_reach_a_new_session(self):
        for _ in range(3):
            self.ex(PLANT)
        for _ in range(3):
            session = self.bind()
            self.assertIsNone(self.ev(PROBE, session))
            self.stub.Unbind(pb.UnbindRequest(session=session), timeout=10)
        self.server.wait_pool_size()


class SecureByDefaultTest(unittest.TestCase):

    def run_pyexecd(self, *flags):
        proc = subprocess.run(fx.server_command() + ["--workers=1"] + list(flags),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def test_non_loopback_listen_without_auth_refuses_to_start(self):
        for listen in ("0.0.0.0:0", "[::]:0"):
            rc, out, err = self.run_pyexecd("--listen=" + listen)
            self.assertNotEqual(rc, 0)
            self.assertNotIn("listening on", out)
            self.assertIn("refusing to listen on " + listen, err)
            self.assertIn("--auth_tokens_file", err)
            self.assertIn("--allow_unauthenticated", err)

    def test_tls_alone_is_not_authentication(self):
        d = tempfile.mkdtemp(prefix="pyexec_sec_")
        self.addCleanup(shutil.rmtree, d, True)
        certs = Certs(d)
        fx.give_to_server(d)
        rc, out, err = self.run_pyexecd("--listen=0.0.0.0:0", "--tls_cert_file=" + certs.server_crt,
                                        "--tls_key_file=" + certs.server_key)
        self.assertNotEqual(rc, 0)
        self.assertIn("refusing to listen", err)

    def test_inconsistent_tls_flags_are_refused(self):
        rc, _, err = self.run_pyexecd("--tls_client_ca_file=/nonexistent")
        self.assertNotEqual(rc, 0)
        self.assertIn("--tls_cert_file", err)
        rc, _, err = self.run_pyexecd("--tls_cert_file=/nonexistent", "--tls_key_file=/nonexistent")
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot read /nonexistent", err)


# ---------------------------------------------------------------- TLS

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Certs:
    """A CA, a server certificate for 127.0.0.1 and client certificates."""

    def __init__(self, d, ca="ca"):
        self.d = d
        self.ca_key, self.ca_crt = self._ca(ca)
        self.server_key, self.server_crt = self.issue("server", "pyexecd",
                                                      "IP:127.0.0.1,DNS:localhost")

    def path(self, name):
        return os.path.join(self.d, name)

    def _ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", name + ".key", "-out", name + ".crt", "-days", "2",
                "-subj", "/CN=" + name, cwd=self.d)
        return self.path(name + ".key"), self.path(name + ".crt")

    def issue(self, name, cn, san, ca=None):
        ca_key, ca_crt = ca or (self.ca_key, self.ca_crt)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=self.d)
        with open(self.path(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca_crt, "-CAkey", ca_key,
                "-CAcreateserial", "-days", "2", "-out", name + ".crt",
                "-extfile", name + ".ext", cwd=self.d)
        return self.path(name + ".key"), self.path(name + ".crt")


def read(path):
    with open(path, "rb") as f:
        return f.read()


class TlsServer(fx.Server):
    """A pyexecd whose fixture channel speaks TLS with a client certificate."""

    def __init__(self, *flags, client_creds, **kw):
        super().__init__(*flags, **kw)
        self.client_creds = client_creds

    def new_channel(self, creds=None):
        return grpc.secure_channel(self.address, creds or self.client_creds)


class MtlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pyexec_tls_")
        cls.certs = Certs(cls.dir)
        c = cls.certs
        cls.alice = c.issue("alice", "alice-cn", "DNS:alice.clients.example")
        cls.bob = c.issue("bob", "bob-cn", "DNS:bob.clients.example")
        other_dir = os.path.join(cls.dir, "other")
        os.makedirs(other_dir)
        other = Certs(other_dir, ca="otherca")
        cls.stranger = other.issue("stranger", "stranger", "DNS:stranger.example",
                                   ca=(other.ca_key, other.ca_crt))
        fx.give_to_server(cls.dir)
        cls.health_address = "127.0.0.1:%d" % free_port()
        cls.server = TlsServer(
            "--tls_cert_file=" + c.server_crt, "--tls_key_file=" + c.server_key,
            "--tls_client_ca_file=" + c.ca_crt, "--tls_refresh_interval=1s",
            "--health_listen=" + cls.health_address,
            client_creds=cls.creds(cls.alice), workers=2, max_workers=4)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        cls.server.remove_log()
        shutil.rmtree(cls.dir, True)

    @classmethod
    def creds(cls, client=None, roots=None):
        key, crt = client if client else (None, None)
        return grpc.ssl_channel_credentials(
            root_certificates=read(roots or cls.certs.ca_crt),
            private_key=read(key) if key else None,
            certificate_chain=read(crt) if crt else None)

    def stub_for(self, creds):
        channel = self.server.new_channel(creds)
        self.addCleanup(channel.close)
        return pb_grpc.PyExecStub(channel)

    def test_client_certificate_is_the_principal(self):
        alice = self.stub_for(self.creds(self.alice))
        bob = self.stub_for(self.creds(self.bob))
        session = alice.Bind(pb.BindRequest(), timeout=10).session
        self.addCleanup(lambda: alice.Unbind(pb.UnbindRequest(session=session), timeout=10))
        resp = alice.Eval(pb.EvalRequest(session=session, code="40 + 2"), timeout=10)
        self.assertEqual(fx.from_value(resp.value), 42)
        with self.assertRaises(grpc.RpcError) as cm:
            bob.Eval(pb.EvalRequest(session=session, code="1"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)

    def test_clients_without_a_valid_certificate_are_refused(self):
        for creds in (self.creds(None), self.creds(self.stranger)):
            stub = self.stub_for(creds)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.Eval(pb.EvalRequest(code="1"), timeout=10)
            self.assertEqual(cm.exception.code(), SC.UNAVAILABLE)
        # Plaintext gets nowhere either.
        channel = grpc.insecure_channel(self.server.address)
        self.addCleanup(channel.close)
        with self.assertRaises(grpc.RpcError) as cm:
            pb_grpc.PyExecStub(channel).Eval(pb.EvalRequest(code="1"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.UNAVAILABLE)

    def test_probes_use_the_plaintext_health_port(self):
        # Kubernetes' gRPC probes present no client certificate: the main
        # port refuses them, --health_listen answers in plaintext, and
        # serves nothing but grpc.health.v1.
        channel = grpc.insecure_channel(self.health_address)
        self.addCleanup(channel.close)
        health = fx.health_pb2_grpc.HealthStub(channel)
        for service in ("", "pyexec.v1.PyExec"):
            self.assertEqual(health.Check(fx.health_pb2.HealthCheckRequest(service=service),
                                          timeout=10).status, fx.SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            pb_grpc.PyExecStub(channel).Eval(pb.EvalRequest(code="1"), timeout=10)
        self.assertEqual(cm.exception.code(), SC.UNIMPLEMENTED)
        reflection = refl_grpc.ServerReflectionStub(channel)
        with self.assertRaises(grpc.RpcError) as cm:
            list(reflection.ServerReflectionInfo(
                iter([refl.ServerReflectionRequest(list_services="")]), timeout=10))
        self.assertEqual(cm.exception.code(), SC.UNIMPLEMENTED)
        # The main port, without a client certificate: refused.
        plain = grpc.secure_channel(self.server.address, self.creds())
        self.addCleanup(plain.close)
        with self.assertRaises(grpc.RpcError):
            fx.health_pb2_grpc.HealthStub(plain).Check(fx.health_pb2.HealthCheckRequest(),
                                                       timeout=10)

    def test_rotated_server_certificate_is_picked_up(self):
        # A new server certificate from a new CA, swapped in by rename as a
        # rotation tool would; clients trusting only the new CA get in once
        # the file watcher (--tls_refresh_interval=1s) has seen it.
        d = os.path.join(self.dir, "rotated")
        os.makedirs(d, exist_ok=True)
        new = Certs(d, ca="newca")
        for src, dst in ((new.server_crt, self.certs.server_crt),
                         (new.server_key, self.certs.server_key)):
            shutil.copy(src, dst + ".tmp")
        # Key and certificate must change together: the watcher reads both.
        fx.give_to_server(self.dir)
        os.replace(self.certs.server_key + ".tmp", self.certs.server_key)
        os.replace(self.certs.server_crt + ".tmp", self.certs.server_crt)
        creds = self.creds(self.alice, roots=new.ca_crt)

        def new_cert_served():
            channel = self.server.new_channel(creds)
            try:
                stub = pb_grpc.PyExecStub(channel)
                return fx.from_value(stub.Eval(pb.EvalRequest(code="7"), timeout=5).value) == 7
            except grpc.RpcError:
                return False
            finally:
                channel.close()
        fx.wait_until(new_cert_served, 20, interval=0.5, what="the rotated certificate")


if __name__ == "__main__":
    unittest.main()
