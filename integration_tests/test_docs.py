"""Runs the docs: every command in README.md and docs/*.md, against a real pyexecd.

Each fenced block is read from the Markdown:

- ```sh (or bash, shell) blocks are shell commands. A file's blocks run in
  order in one bash, as a reader would run them in one terminal: variables
  and background jobs carry from block to block, and are killed when the
  file is done. Commands run from the repository root, each with stdin
  /dev/null; a block may take at most BLOCK_TIMEOUT_S.
- ```python blocks run with /usr/bin/python3, with the Python client
  importable (PYTHONPATH=clients/python, PYEXEC_CLIENT_STUBS).
- A block preceded by the HTML comment `<!-- docs-test: skip (REASON) -->`
  is not run (a cluster, the Quick start itself); it is counted and listed.
- Expected outputs: a trailing `# => TEXT` on a command's last line, or a
  block whose info string holds the word `output` right after a runnable
  block (the output of its last command, or a Python block's whole stdout).
  `exit=N` (or `exit=nonzero`) in that info string is the exit status the
  command must have; otherwise it must succeed. Outputs are compared as a
  sequence of JSON values when the expected text parses as one (the string
  "…" matches any value), else as text in which `…` matches anything.
  stderr is part of a shell command's output.

Before running, addresses are made real: `127.0.0.1:50051` and
`localhost:50051` become the test's pyexecd (started from $PYEXECD on
127.0.0.1:0, with its metrics on `127.0.0.1:9090`'s stand-in), the CLI gets
`--addr`, every other loopback port a docs block uses is mapped to a free
one, and `/tmp/pyexec-*` paths to a temporary directory.

grpcurl is not packaged in Debian 12. Every `grpcurl` a command runs is a
translation (_Grpcurl): it reads the server's reflection service as grpcurl
does (or compiles -proto files with protoc), parses `-d` JSON into the
request, makes the call with grpcio, and prints the responses and errors in
grpcurl's format (golang/protobuf's jsonpb: lowerCamelCase names, int64 as
strings, zero values left out unless -emit-defaults, null for unset messages
with it; `ERROR:` blocks and exit status 64 + code). The `grpcurl` on the
commands' PATH is a small client that hands its arguments to the test
process, which runs the translation; `test_docs.py --as-grpcurl ARGS` runs
it standalone. When a real `grpcurl` is on PATH, the files that use it run a
second time with it, against the same expected outputs.

Prints `docs test: N commands run, M grpcurl examples checked, K marked not
to run`. The test_check_* cases prove that a wrong output, a failing command
and a wrong grpcurl answer each fail the run.

Run with /usr/bin/python3 (python3-grpcio, python3-protobuf); needs jq,
protoc and grpc_python_plugin.
"""

import base64
import decimal
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# Acting as grpcurl (a child of the test) needs only grpcio and the stubs the
# test generated; the fixture is for the test itself.
_AS_GRPCURL = __name__ == "__main__" and sys.argv[1:2] == ["--as-grpcurl"]
if _AS_GRPCURL:
    sys.path.insert(0, os.environ["PYEXEC_PY_STUBS"])
else:
    import pyexecd_fixture
import grpc  # noqa: E402
from google.protobuf import (descriptor, descriptor_pb2, descriptor_pool, json_format,  # noqa: E402
                             message_factory)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = "bazel-bin/clients/cpp/pyexec"
SKIP_MARKER = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((.+)\)\s*-->\s*$")
SHELL_LANGS = ("sh", "bash", "shell")
BLOCK_TIMEOUT_S = 60
# Docs addresses that stand for the test's own server.
MAIN_PORT = "50051"
METRICS_PORT = "9090"

# ---------------------------------------------------------------- grpcurl

# grpcurl's flags that the docs may use, by kind (Go's flag package: -name,
# --name, -name=value, -name value).
_GRPCURL_BOOL_FLAGS = {"plaintext", "insecure", "emit-defaults", "v", "keep-proto-names"}
_GRPCURL_VALUE_FLAGS = {"d", "cacert", "cert", "key", "servername", "authority", "max-time",
                        "connect-timeout", "max-msg-sz", "format"}
_GRPCURL_MULTI_FLAGS = {"H", "rpc-header", "reflect-header", "proto", "import-path"}

# Go's names of the status codes (google.golang.org/grpc/codes), as grpcurl prints them.
_GO_CODE_NAMES = {
    "OK": "OK", "CANCELLED": "Canceled", "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument", "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied", "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition", "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange", "UNIMPLEMENTED": "Unimplemented", "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable", "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}


class _GrpcurlExit(Exception):
    def __init__(self, code, message=None):
        super().__init__(message)
        self.code = code
        self.message = message


def _grpcurl_parse_args(argv):
    """(flags, positional) as grpcurl's flag.Parse would split them."""
    flags = {name: [] for name in _GRPCURL_MULTI_FLAGS}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in _GRPCURL_BOOL_FLAGS:
            flags[name] = value is None or value.lower() in ("1", "t", "true")
        elif name in _GRPCURL_VALUE_FLAGS or name in _GRPCURL_MULTI_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise _GrpcurlExit(2, "flag needs an argument: -%s" % name)
                value = argv[i]
            if name in _GRPCURL_MULTI_FLAGS:
                flags[name].append(value)
            else:
                flags[name] = value
        else:
            # Not a flag this translation knows: the docs use something the
            # test cannot check, so fail loudly.
            raise _GrpcurlExit(2, "grpcurl translation: unsupported flag %s" % arg)
        i += 1
    return flags, argv[i:]


def _go_float(f):
    """A float64 as Go's encoding/json writes it."""
    if math.isinf(f):
        return '"Infinity"' if f > 0 else '"-Infinity"'
    if math.isnan(f):
        return '"NaN"'
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = repr(f)
        m = re.match(r"^(-?[\d.]+)e([+-])0?(\d+)$", s)
        if m:
            s = "%se%s%s" % (m.group(1), m.group(2), m.group(3).rjust(2, "0")
                             if m.group(2) == "+" else m.group(3))
        return s
    s = format(decimal.Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


class _Raw(str):
    """Text written into the JSON as it is (a number formatted Go's way)."""


def _go_string(s):
    out = json.dumps(s, ensure_ascii=False)
    return (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _go_dump(value, indent=""):
    """JSON text as Go's json.Indent(…, "", "  ") lays it out."""
    inner = indent + "  "
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ["%s%s: %s" % (inner, _go_string(k), _go_dump(v, inner)) for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _go_dump(v, inner) for v in value) + "\n" + indent + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _go_string(value)
    return str(value)


def _jsonpb_scalar(fd, v, emit_defaults):
    t = fd.type
    F = descriptor.FieldDescriptor
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return _Raw(_go_float(v))
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64):
        return str(v)
    if t == F.TYPE_BYTES:
        return base64.b64encode(v).decode()
    if t == F.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else _Raw(str(v))
    if t == F.TYPE_MESSAGE:
        return _jsonpb(v, emit_defaults)
    if t == F.TYPE_BOOL:
        return bool(v)
    return _Raw(str(v)) if isinstance(v, int) else v


def _jsonpb(msg, emit_defaults):
    """A message as golang/protobuf's jsonpb.Marshaler (grpcurl's formatter)
    turns it into JSON: declaration order, lowerCamelCase names, int64 as
    strings, unset oneofs left out, and with emit_defaults the zero value of
    every other field (null for a message)."""
    out = {}
    done_oneofs = set()
    desc = msg.DESCRIPTOR
    for fd in desc.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            if oneof.name in done_oneofs:
                continue
            done_oneofs.add(oneof.name)
            which = msg.WhichOneof(oneof.name)
            if which is None:
                continue
            fd = desc.fields_by_name[which]
        value = getattr(msg, fd.name)
        is_map = (fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)
        if fd.label == fd.LABEL_REPEATED:
            present = len(value) > 0
        elif fd.type == fd.TYPE_MESSAGE:
            present = msg.HasField(fd.name)
        else:
            present = oneof is not None or value != fd.default_value
        if not present and not emit_defaults:
            continue
        if is_map:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.json_name] = {str(k): _jsonpb_scalar(vfd, value[k], emit_defaults)
                                 for k in sorted(value)}
        elif fd.label == fd.LABEL_REPEATED:
            out[fd.json_name] = [_jsonpb_scalar(fd, v, emit_defaults) for v in value]
        elif fd.type == fd.TYPE_MESSAGE and not present:
            out[fd.json_name] = None
        else:
            out[fd.json_name] = _jsonpb_scalar(fd, value, emit_defaults)
    return out


def _metadata_text(md):
    if not md:
        return "(empty)"
    lines = []
    for k, v in sorted(md, key=lambda kv: kv[0]):
        if isinstance(v, bytes):
            v = base64.b64encode(v).decode()
        lines.append("%s: %s" % (k, v))
    return "\n".join(lines)


class _Grpcurl:
    """grpcurl's command line, carried out with grpcio and the descriptors
    that the server's reflection service gives (as grpcurl gets them)."""

    def __init__(self, argv, out, err, stdin=None, cwd=None):
        self.out = out
        self.err = err
        self.stdin = stdin  # what -d @ reads: a file object
        self.cwd = cwd or os.getcwd()
        self.flags, self.args = _grpcurl_parse_args(argv)

    def fail(self, message, code=1):
        raise _GrpcurlExit(code, message)

    def run(self):
        f = self.flags
        args = list(self.args)
        if not args:
            self.fail("Too few arguments.", 2)
        target = None
        if args[0] not in ("list", "describe"):
            target = args.pop(0)
        if not args:
            self.fail("Too few arguments.", 2)
        verb = "invoke"
        if args[0] in ("list", "describe"):
            verb = args.pop(0)
        symbol = args.pop(0) if args else ""
        if args:
            self.fail("Too many arguments.", 2)
        if target is None:
            self.fail("No host:port specified.", 2)
        if f.get("insecure"):
            self.fail("grpcurl translation: -insecure has no grpcio equivalent", 2)
        if f.get("format", "json") != "json":
            self.fail("grpcurl translation: only -format json", 2)
        if not f.get("plaintext") and (f.get("cert") is None) != (f.get("key") is None):
            self.fail("The -cert and -key arguments must be used together and both be present.", 2)
        if f.get("plaintext") and (f.get("cert") or f.get("key") or f.get("cacert")):
            self.fail("The -cert argument can only be used with TLS.", 2)
        self.channel = self.dial(target)
        self.headers = self.parse_headers(f["H"])
        try:
            self.pool, self.services = self.load_descriptors()
            if verb == "list":
                self.do_list(symbol)
            elif verb == "describe":
                self.do_describe(symbol)
            else:
                self.do_invoke(symbol)
        finally:
            self.channel.close()

    # -- connection

    def dial(self, target):
        f = self.flags
        options = [("grpc.enable_retries", 0),
                   ("grpc.max_receive_message_length", int(f.get("max-msg-sz") or 4194304))]
        if f.get("plaintext"):
            if f.get("authority"):
                options.append(("grpc.default_authority", f["authority"]))
            channel = grpc.insecure_channel(target, options=options)
        else:
            def read(path):
                if not path:
                    return None
                with open(os.path.join(self.cwd, path), "rb") as fh:
                    return fh.read()
            creds = grpc.ssl_channel_credentials(read(f.get("cacert")), read(f.get("key")),
                                                 read(f.get("cert")))
            name = f.get("servername") or f.get("authority")
            if name:
                options.append(("grpc.ssl_target_name_override", name))
            channel = grpc.secure_channel(target, creds, options=options)
        # grpcurl's BlockingDial: connected, or fail on the first failure.
        state = {}
        ready = threading.Event()

        def watch(s):
            if s in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
                state["s"] = s
                ready.set()
        channel.subscribe(watch, try_to_connect=True)
        ok = ready.wait(float(f.get("connect-timeout") or 10))
        channel.unsubscribe(watch)
        if not ok or state.get("s") != grpc.ChannelConnectivity.READY:
            channel.close()
            self.fail('Failed to dial target host "%s": %s' % (
                target, "context deadline exceeded" if not ok else "connection failed"))
        return channel

    def parse_headers(self, headers):
        md = []
        for h in headers:
            if ":" not in h:
                self.fail("grpcurl translation: header %r is not 'name: value'" % h, 2)
            k, v = h.split(":", 1)
            md.append((k.strip().lower(), v.strip()))
        return md

    def deadline(self):
        t = self.flags.get("max-time")
        return float(t) if t else None

    # -- descriptors from the server's reflection service

    def reflection(self, requests):
        from grpcstd.reflection.v1alpha import reflection_pb2 as rpb, reflection_pb2_grpc as rgrpc
        stub = rgrpc.ServerReflectionStub(self.channel)
        try:
            return list(stub.ServerReflectionInfo(
                iter([rpb.ServerReflectionRequest(**r) for r in requests]),
                metadata=self.headers, timeout=self.deadline() or 30))
        except grpc.RpcError as e:
            self.fail("Failed to list services: rpc error: code = %s desc = %s" % (
                _GO_CODE_NAMES.get(e.code().name, e.code().name), e.details()))

    def load_descriptors(self):
        if self.flags["proto"]:
            return self.descriptors_from_protos()
        services = [s.name for r in self.reflection([{"list_services": ""}])
                    for s in r.list_services_response.service]
        files = {}
        todo = [{"file_containing_symbol": s} for s in services]
        while todo:
            for r in self.reflection(todo):
                if r.HasField("error_response"):
                    continue
                for raw in r.file_descriptor_response.file_descriptor_proto:
                    fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
                    files[fdp.name] = fdp
            todo = [{"file_by_filename": d} for fdp in files.values() for d in fdp.dependency
                    if d not in files]
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(name):
            if name in added or name not in files:
                return
            for d in files[name].dependency:
                add(d)
            pool.Add(files[name])
            added.add(name)
        for name in sorted(files):
            add(name)
        return pool, sorted(services)

    def descriptors_from_protos(self):
        """-proto files (with -import-path): parsed here as grpcurl parses
        them, with protoc; reflection is not used then."""
        out = os.path.join(tempfile.mkdtemp(prefix="grpcurl_protos_"), "set.pb")
        try:
            subprocess.run(["protoc", "--include_imports", "--descriptor_set_out=" + out]
                           + ["-I" + p for p in self.flags["import-path"] or ["."]]
                           + self.flags["proto"], check=True, capture_output=True, cwd=self.cwd)
            with open(out, "rb") as f:
                fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        except subprocess.CalledProcessError as e:
            self.fail("Failed to process proto source files.: %s" % e.stderr.decode().strip())
        finally:
            shutil.rmtree(os.path.dirname(out), True)
        pool = descriptor_pool.DescriptorPool()
        for fdp in fds.file:
            pool.Add(fdp)
        named = {p.replace(os.sep, "/") for p in self.flags["proto"]}
        services = sorted("%s.%s" % (fdp.package, sd.name) if fdp.package else sd.name
                          for fdp in fds.file if fdp.name in named for sd in fdp.service)
        return pool, services

    def message_class(self, desc):
        try:
            return message_factory.GetMessageClass(desc)
        except AttributeError:
            return message_factory.MessageFactory(self.pool).GetPrototype(desc)

    def find_method(self, symbol):
        name = symbol.lstrip(".")
        if "/" in name:
            service, method = name.split("/", 1)
        else:
            service, _, method = name.rpartition(".")
        try:
            sd = self.pool.FindServiceByName(service)
        except KeyError:
            raise _GrpcurlExit(1, 'Error invoking method "%s": target server does not expose '
                                  'service "%s"' % (symbol, service))
        md = sd.methods_by_name.get(method)
        if md is None:
            raise _GrpcurlExit(1, 'Error invoking method "%s": service "%s" does not include a '
                                  'method named "%s"' % (symbol, service, method))
        return sd, md

    # -- verbs

    def do_list(self, symbol):
        if not symbol:
            for s in self.services:
                self.out.write(s + "\n")
            return
        try:
            sd = self.pool.FindServiceByName(symbol)
        except KeyError:
            self.fail('Failed to list methods for service "%s": Service not found: %s' % (
                symbol, symbol))
        for m in sorted(m.full_name for m in sd.methods):
            self.out.write(m + "\n")

    def type_name(self, fd):
        F = descriptor.FieldDescriptor
        if fd.type == F.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                k, v = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                return "map<%s, %s>" % (self.type_name(k), self.type_name(v))
            return "." + fd.message_type.full_name
        if fd.type == F.TYPE_ENUM:
            return "." + fd.enum_type.full_name
        return {F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64",
                F.TYPE_UINT64: "uint64", F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64",
                F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool", F.TYPE_STRING: "string",
                F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
                F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32",
                F.TYPE_SINT64: "sint64"}[fd.type]

    def method_text(self, m):
        return "rpc %s ( %s.%s ) returns ( %s.%s );" % (
            m.name, "stream " if getattr(m, "client_streaming", False) else "",
            m.input_type.full_name, "stream " if getattr(m, "server_streaming", False) else "",
            m.output_type.full_name)

    def do_describe(self, symbol):
        name = symbol.lstrip(".")
        try:
            sd = self.pool.FindServiceByName(name)
        except KeyError:
            sd = None
        if sd is not None:
            self.out.write("%s is a service:\nservice %s {\n" % (sd.full_name, sd.name))
            for m in sorted(sd.methods, key=lambda m: m.name):
                self.out.write("  %s\n" % self.method_text(m))
            self.out.write("}\n")
            return
        try:
            md = self.pool.FindMessageTypeByName(name)
        except KeyError:
            self.fail('Failed to resolve symbol "%s": Symbol not found: %s' % (symbol, name))
        self.out.write("%s is a message:\nmessage %s {\n" % (md.full_name, md.name))
        done = set()
        for fd in md.fields:
            label = "repeated " if (fd.label == fd.LABEL_REPEATED and not (
                fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)) else ""
            if fd.containing_oneof is not None:
                o = fd.containing_oneof
                if o.name in done:
                    continue
                done.add(o.name)
                self.out.write("  oneof %s {\n" % o.name)
                for of in o.fields:
                    self.out.write("    %s %s = %d;\n" % (self.type_name(of), of.name, of.number))
                self.out.write("  }\n")
                continue
            self.out.write("  %s%s %s = %d;\n" % (label, self.type_name(fd), fd.name, fd.number))
        self.out.write("}\n")

    def requests(self, md):
        cls = self.message_class(md.input_type)
        data = self.flags.get("d", "")
        if data == "@":
            data = (self.stdin or sys.stdin).read()
        msgs = []
        dec = json.JSONDecoder()
        pos = 0
        while True:
            while pos < len(data) and data[pos].isspace():
                pos += 1
            if pos >= len(data):
                break
            try:
                obj, pos = dec.raw_decode(data, pos)
                msg = cls()
                json_format.ParseDict(obj, msg)
            except (ValueError, json_format.ParseError) as e:
                self.fail('Error invoking method "%s": error getting request data: %s' % (
                    md.full_name, e))
            msgs.append(msg)
        if not msgs and not getattr(md, "client_streaming", False):
            msgs.append(cls())
        return msgs

    def do_invoke(self, symbol):
        sd, md = self.find_method(symbol)
        verbose = self.flags.get("v")
        emit = bool(self.flags.get("emit-defaults"))
        path = "/%s/%s" % (sd.full_name, md.name)
        out_cls = self.message_class(md.output_type)
        ser = lambda m: m.SerializeToString()  # noqa: E731
        de = out_cls.FromString
        reqs = self.requests(md)
        metadata = self.headers + self.parse_headers(self.flags["rpc-header"])
        client_streaming = getattr(md, "client_streaming", False)
        server_streaming = getattr(md, "server_streaming", False)
        if verbose:
            self.out.write("\nResolved method descriptor:\n%s\n" % self.method_text(md))
            self.out.write("\nRequest metadata to send:\n%s\n" % _metadata_text(metadata))
        kind = {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}[
                    (client_streaming, server_streaming)]
        multi = getattr(self.channel, kind)(path, request_serializer=ser,
                                            response_deserializer=de)
        arg = iter(reqs) if client_streaming else reqs[0]
        responses = 0
        call = None
        status = None

        def show(resp):
            nonlocal responses
            responses += 1
            if verbose:
                self.out.write("\nResponse contents:\n")
            self.out.write(_go_dump(_jsonpb(resp, emit)) + "\n")
            self.out.flush()
        try:
            if server_streaming:
                call = multi(arg, metadata=metadata, timeout=self.deadline())
                first = True
                for resp in call:
                    if first and verbose:
                        self.out.write("\nResponse headers received:\n%s\n" % _metadata_text(
                            call.initial_metadata()))
                    first = False
                    show(resp)
            else:
                resp, call = multi.with_call(arg, metadata=metadata, timeout=self.deadline())
                if verbose:
                    self.out.write("\nResponse headers received:\n%s\n" % _metadata_text(
                        call.initial_metadata()))
                show(resp)
        except grpc.RpcError as e:
            status = e
            call = e
        if verbose:
            trailers = call.trailing_metadata() if call is not None else ()
            self.out.write("\nResponse trailers received:\n%s\n" % _metadata_text(trailers))
            self.out.write("Sent %d request%s and received %d response%s\n" % (
                len(reqs), "" if len(reqs) == 1 else "s", responses, "" if responses == 1 else "s"))
        if status is not None:
            name = status.code().name
            self.out.flush()
            self.err.write("ERROR:\n  Code: %s\n  Message: %s\n" % (
                _GO_CODE_NAMES.get(name, name), status.details()))
            raise _GrpcurlExit(64 + status.code().value[0])


def grpcurl_main(argv):
    """Runs as grpcurl would; returns its exit status."""
    return run_grpcurl(argv, sys.stdout, sys.stderr)


def run_grpcurl(argv, out, err, stdin=None, cwd=None):
    try:
        _Grpcurl(argv, out, err, stdin, cwd).run()
        return 0
    except _GrpcurlExit as e:
        out.flush()
        if e.message:
            err.write(e.message + "\n")
        return e.code


# The `grpcurl` the docs' commands run: a small client that hands its
# arguments, working directory and (for -d @) standard input to the test
# process over a Unix socket, where _GrpcurlServer carries the command out;
# it prints what comes back and exits with grpcurl's status. One grpcio
# process serves every command, instead of one per command.
_GRPCURL_CLIENT = r"""#!/usr/bin/python3 -SB
import json, os, socket, sys
args = sys.argv[1:]
reads_stdin = any(a in ("-d=@", "--d=@") or (a in ("-d", "--d") and args[i + 1:i + 2] == ["@"])
                  for i, a in enumerate(args))
stdin = sys.stdin.read() if reads_stdin else ""
s = socket.socket(socket.AF_UNIX)
s.connect(%r)
s.sendall(json.dumps({"argv": args, "cwd": os.getcwd(), "stdin": stdin}).encode() + b"\n")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
reply = json.loads(data)
sys.stdout.write(reply["stdout"])
sys.stdout.flush()
sys.stderr.write(reply["stderr"])
sys.exit(reply["code"])
"""


class _GrpcurlServer:
    """Carries out the commands of the `grpcurl` client above, each on a
    thread of its own (a docs command may run one in the background)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "grpcurl.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.script = os.path.join(directory, "grpcurl")
        with open(self.script, "w") as f:
            f.write(_GRPCURL_CLIENT % self.path)
        os.chmod(self.script, 0o755)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        import io
        with conn:
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            req = json.loads(data)
            out, err = io.StringIO(), io.StringIO()
            try:
                code = run_grpcurl(req["argv"], out, err, io.StringIO(req["stdin"]), req["cwd"])
            except Exception as e:  # a bug here must show, not hang the docs
                err.write("grpcurl translation failed: %r\n" % e)
                code = 1
            conn.sendall(json.dumps({"stdout": out.getvalue(), "stderr": err.getvalue(),
                                     "code": code}).encode())

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- Markdown

class Block:
    """A fenced block of a Markdown file."""

    def __init__(self, path, line, info, text, skip_reason):
        self.path = path
        self.line = line          # 1-based line of the opening fence
        self.info = info.split()
        self.lang = self.info[0] if self.info else ""
        self.text = text
        self.skip_reason = skip_reason
        self.output = None        # the output block that follows, if any

    @property
    def is_output(self):
        return "output" in self.info[1:]

    @property
    def runnable(self):
        return self.lang in SHELL_LANGS or self.lang == "python"

    def expected_exit(self):
        """The exit status an output block asks for: an int, "nonzero" or 0."""
        for word in self.info[1:]:
            if word.startswith("exit="):
                v = word[len("exit="):]
                return v if v == "nonzero" else int(v)
        return 0

    def where(self):
        return "%s:%d" % (os.path.relpath(self.path, REPO), self.line)


def read_blocks(path, text=None):
    """The fenced blocks of a Markdown file, output blocks attached to the
    runnable block they follow."""
    if text is None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    lines = text.split("\n")
    blocks = []
    i = 0
    last_text_line = ""
    previous_end = None  # index of the line after the previous block
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*(.*)$", lines[i])
        if not m:
            if lines[i].strip():
                last_text_line = lines[i].strip()
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line)
            i += 1
        i += 1
        skip = SKIP_MARKER.match(last_text_line)
        block = Block(path, start + 1, info, "\n".join(body) + "\n",
                      skip.group(1) if skip else None)
        adjacent = previous_end is not None and all(
            not lines[k].strip() for k in range(previous_end, start))
        if block.is_output:
            if not (blocks and adjacent and blocks[-1].runnable and blocks[-1].output is None):
                raise AssertionError("%s: an output block must follow a runnable block"
                                     % block.where())
            blocks[-1].output = block
        else:
            blocks.append(block)
        previous_end = i
        last_text_line = ""
    return blocks


class Command:
    def __init__(self, text, line, expected=None):
        self.text = text          # as in the docs (comments included)
        self.line = line          # 1-based line in the file
        self.expected = expected  # expected output text, or None
        self.expected_exit = 0


def _complete(text):
    """Whether `text` is a whole shell command: no open quote, no trailing
    continuation."""
    stripped = text.rstrip()
    if stripped.endswith(("\\", "|", "&&", "||", "(")):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return text.count("$(") <= text.count(")")


def split_commands(block):
    """The commands of a shell block, each with its `# => ` expectation."""
    commands = []
    current = []
    first_line = None
    for n, line in enumerate(block.text.split("\n")):
        if not current and (not line.strip() or line.strip().startswith("#")):
            continue
        if not current:
            first_line = block.line + 1 + n
        current.append(line)
        text = "\n".join(current)
        if _complete(text):
            expected = None
            m = re.search(r"\s#\s=>\s?(.*)$", current[-1])
            if m and _complete("\n".join(current[:-1] + [current[-1][:m.start()]])):
                expected = m.group(1)
            commands.append(Command(text, first_line, expected))
            current = []
    if current:
        raise AssertionError("%s: unfinished command %r" % (block.where(), "\n".join(current)))
    if block.output is not None:
        if not commands:
            raise AssertionError("%s: an output block after no command" % block.where())
        if commands[-1].expected is not None:
            raise AssertionError("%s: a command with two expected outputs" % block.where())
        commands[-1].expected = block.output.text
        commands[-1].expected_exit = block.output.expected_exit()
    return commands


# ---------------------------------------------------------------- comparing

_ANY = "…"


def _json_values(text):
    """The JSON values of `text` one after another, or None."""
    dec = json.JSONDecoder()
    values = []
    pos = 0
    text = text.strip()
    if not text or text[0] not in "{[":
        return None
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = dec.raw_decode(text, pos)
        except ValueError:
            return None
        values.append(value)
    return values


def _text_pattern(expected):
    parts = expected.split(_ANY)
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


def _json_matches(expected, actual):
    if isinstance(expected, str) and _ANY in expected:
        if expected == _ANY:
            return True
        return isinstance(actual, str) and _text_pattern(expected).fullmatch(actual) is not None
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and set(expected) == set(actual)
                and all(_json_matches(expected[k], actual[k]) for k in expected))
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(expected) == len(actual)
                and all(_json_matches(e, a) for e, a in zip(expected, actual)))
    return type(expected) is type(actual) and expected == actual


def _normalize(text):
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def output_matches(expected, actual):
    """Whether `actual` is what the docs show as `expected`."""
    expected, actual = _normalize(expected), _normalize(actual)
    want = _json_values(expected)
    if want is not None:
        got = _json_values(actual)
        return got is not None and _json_matches(want, got)
    return _text_pattern(expected).fullmatch(actual) is not None


# ---------------------------------------------------------------- running

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Shell:
    """One bash fed script chunks on its stdin, its output read until each
    chunk's end marker (a reader's terminal). Background jobs live on until
    the file is done; then its process group (the jobs too) is killed."""

    def __init__(self, env):
        self.env = env
        self.serial = 0
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=self.env, start_new_session=True)
        self.buf = b""
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc):
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            with self.cond:
                if proc is not self.proc:
                    return
                if not chunk:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.buf += chunk
                self.cond.notify_all()

    def run(self, script, timeout):
        """(output, finished) of `script`."""
        self.serial += 1
        end = ("\x1d%d\n" % self.serial).encode()
        try:
            self.proc.stdin.write(script.encode() + b"\nprintf '\\035%d\\n'\n" % self.serial)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        with self.cond:
            while end not in self.buf and not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            finished = end in self.buf
            out, _, self.buf = self.buf.partition(end)
        return out.decode(errors="replace"), finished

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def restart(self):
        self.kill()
        self.start()

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self.proc.stdout.close()


class DocsRunner:
    """Runs the blocks of Markdown files against one pyexecd and collects the
    failures."""

    def __init__(self, server_address, metrics_address, tmp, client_stubs, real_grpcurl=None):
        self.server_address = server_address
        self.metrics_address = metrics_address
        self.tmp = tmp
        self.real_grpcurl = real_grpcurl
        self.ports = {MAIN_PORT: server_address.rsplit(":", 1)[1],
                      METRICS_PORT: metrics_address.rsplit(":", 1)[1]}
        self.commands_run = 0
        self.grpcurl_checked = 0
        self.skipped = []          # (where, reason, number of commands)
        self.failures = []
        # The directory whose `grpcurl` is the translation (_GrpcurlServer).
        self.shim_bin = os.path.join(tmp, "shim-bin")
        os.makedirs(self.shim_bin, exist_ok=True)
        self.grpcurl_server = _GrpcurlServer(self.shim_bin)
        self.client_stubs = client_stubs

    # -- addresses and paths

    def localize(self, text):
        def port(m):
            p = m.group(2)
            if p not in self.ports:
                self.ports[p] = str(_free_port())
            host = "127.0.0.1" if m.group(1) == "127.0.0.1" else "localhost"
            return "%s:%s" % (host, self.ports[p])
        text = re.sub(r"\b(127\.0\.0\.1|localhost):(\d{4,5})\b", port, text)
        text = re.sub(r"(?<![\w/.-])/tmp/pyexec-", self.tmp + "/pyexec-", text)
        return text

    def localize_command(self, text):
        text = self.localize(text)
        # The CLI's default address is the docs' server: tell it the real one
        # (a later --addr in the command still wins).
        return re.sub(r"(?<![\w/.-])(%s)(?=[\s'\")]|$)" % re.escape(CLI),
                      r"\1 --addr=" + self.server_address, text, flags=re.M)

    def env(self, grpcurl_dir):
        env = dict(os.environ)
        env["PATH"] = grpcurl_dir + ":" + env.get("PATH", "/usr/bin:/bin")
        env["PYEXEC_CLIENT_STUBS"] = self.client_stubs
        env["PYTHONPATH"] = os.path.join(REPO, "clients/python")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYEXEC_TOKEN", None)
        # What the docs' own servers leave behind (private-directory roots)
        # goes with the test's directory.
        env["TMPDIR"] = self.tmp
        return env

    # -- one file

    def run_file(self, path, text=None):
        """Runs a file's blocks in order, its shell blocks in one bash (as a
        reader would in one terminal: variables carry from block to block);
        with a real grpcurl, the whole file again with it."""
        blocks = read_blocks(path, text)
        passes = [None] + ([self.real_grpcurl] if self.real_grpcurl and any(
            "grpcurl" in b.text for b in blocks if b.lang in SHELL_LANGS) else [])
        for real_grpcurl in passes:
            grpcurl_dir = os.path.dirname(real_grpcurl) if real_grpcurl else self.shim_bin
            shell = _Shell(self.env(grpcurl_dir))
            try:
                for block in blocks:
                    if not block.runnable:
                        continue
                    if block.lang in SHELL_LANGS:
                        commands = split_commands(block)
                        if block.skip_reason is not None:
                            if real_grpcurl is None:
                                self.skipped.append((block.where(), block.skip_reason,
                                                     len(commands)))
                            continue
                        self.run_shell(shell, block, commands, real_grpcurl)
                    elif block.skip_reason is not None:
                        if real_grpcurl is None:
                            self.skipped.append((block.where(), block.skip_reason, 1))
                    else:
                        self.run_python(block, real_grpcurl)
            finally:
                shell.close()

    def fail(self, block, line, what, command, expected=None, actual=None):
        msg = "%s:%d: %s\n  command: %s" % (os.path.relpath(block.path, REPO), line, what,
                                            command.replace("\n", "\n           "))
        if expected is not None:
            msg += "\n  expected:\n%s" % _indent(expected)
        if actual is not None:
            msg += "\n  got:\n%s" % _indent(actual)
        self.failures.append(msg)

    def run_shell(self, shell, block, commands, real_grpcurl):
        script = ["cd %s" % shlex.quote(REPO)]
        for i, c in enumerate(commands):
            script.append("printf '\\036%d\\n'" % i)
            # stdin stays the terminal's (/dev/null), never the script's.
            script.append("{ %s\n} 2>&1 </dev/null" % self.localize_command(c.text))
            script.append("printf '\\036%d rc=%%d\\n' $?" % i)
        label = " (with %s)" % real_grpcurl if real_grpcurl else ""
        text, finished = shell.run("\n".join(script), BLOCK_TIMEOUT_S)
        if not finished:
            self.fail(block, block.line, "timed out after %ds%s" % (BLOCK_TIMEOUT_S, label),
                      block.text, actual=text)
            shell.restart()
        outputs, statuses = {}, {}
        for m in re.finditer(r"\x1e(\d+)\n(.*?)\x1e\1 rc=(\d+)\n", text, re.DOTALL):
            outputs[int(m.group(1))] = m.group(2)
            statuses[int(m.group(1))] = int(m.group(3))
        for i, c in enumerate(commands):
            if i not in statuses:
                if finished:
                    self.fail(block, c.line, "did not run" + label, c.text, actual=text)
                break
            if real_grpcurl is None:
                self.commands_run += 1
                self.grpcurl_checked += len(re.findall(r"(?<![\w/.-])grpcurl\s", c.text))
            want = c.expected_exit
            rc = statuses[i]
            if (want == "nonzero" and rc == 0) or (want != "nonzero" and rc != want):
                self.fail(block, c.line, "exit status %d, expected %s%s" % (rc, want, label),
                          c.text, actual=outputs[i])
                continue
            if c.expected is not None:
                expected = self.localize(c.expected)
                if not output_matches(expected, outputs[i]):
                    self.fail(block, c.line, "wrong output" + label, c.text, expected, outputs[i])

    def run_python(self, block, real_grpcurl=None):
        if real_grpcurl is not None:
            return  # no grpcurl in it: the first pass ran it
        code = self.localize(block.text)
        try:
            proc = subprocess.run(["/usr/bin/python3", "-"], input=code.encode(),
                                  capture_output=True, cwd=REPO, env=self.env(self.shim_bin),
                                  timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.fail(block, block.line, "timed out", block.text)
            return
        self.commands_run += 1
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        want = block.output.expected_exit() if block.output is not None else 0
        if (want == "nonzero" and proc.returncode == 0) or (
                want != "nonzero" and proc.returncode != want):
            self.fail(block, block.line, "exit status %d, expected %s" % (proc.returncode, want),
                      block.text, actual=out + err)
            return
        if block.output is not None:
            expected = self.localize(block.output.text)
            if not output_matches(expected, out):
                self.fail(block, block.line, "wrong output", block.text, expected, out + err)

    def summary(self):
        return "docs test: %d commands run, %d grpcurl examples checked, %d marked not to run" % (
            self.commands_run, self.grpcurl_checked, sum(n for _, _, n in self.skipped))


def _indent(text):
    return "\n".join("    | " + line for line in text.rstrip("\n").split("\n"))


def doc_files():
    """README.md and docs/*.md; $PYEXEC_DOCS (space-separated paths from the
    repository root) picks some, when working on them."""
    if os.environ.get("PYEXEC_DOCS"):
        return [os.path.join(REPO, p) for p in os.environ["PYEXEC_DOCS"].split()]
    docs = os.path.join(REPO, "docs")
    return [os.path.join(REPO, "README.md")] + sorted(
        os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


# ---------------------------------------------------------------- tests

class _DocsServer(unittest.TestCase if _AS_GRPCURL else pyexecd_fixture.ServerTestCase):
    SERVER_FLAGS = ("--metrics_listen=127.0.0.1:0",)
    WORKERS = 2
    MAX_WORKERS = 16

    # What the docs' commands use besides the build.
    TOOLS = ("bash", "jq", "curl", "openssl", "protoc", "grpc_python_plugin", "kubectl")

    @classmethod
    def setUpClass(cls):
        missing = [t for t in cls.TOOLS if shutil.which(t) is None]
        if missing:
            raise AssertionError("the docs' commands need %s (scripts/install_deps.sh)"
                                 % ", ".join(missing))
        super().setUpClass()
        cls.class_tmp = tempfile.mkdtemp(prefix="pyexec_docs_stubs_")
        # The Python client's stubs, as its README makes them.
        cls.client_stubs = os.path.join(cls.class_tmp, "stubs")
        subprocess.run([os.path.join(REPO, "clients/python/gen_stubs.sh"), cls.client_stubs],
                       check=True, stdout=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.class_tmp, True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="pyexec_docs_")
        # The docs' own servers make their workers' private directories in
        # it (TMPDIR), and workers run as another user: they pass through.
        os.chmod(self.tmp, 0o711)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def metrics_address(self):
        def find():
            with open(self.server.log_path, errors="replace") as f:
                m = re.search(r"metrics on http://(\S+)/metrics", f.read())
            return m and m.group(1)
        return pyexecd_fixture.wait_until(find, 10, what="the metrics address in the log")

    def runner(self, real_grpcurl=None):
        runner = DocsRunner(self.server.address, self.metrics_address(), self.tmp,
                            self.client_stubs, real_grpcurl)
        self.addCleanup(runner.grpcurl_server.close)
        return runner


class _SelfCheck:
    """The checker fails on what it must fail on (run with the docs' server)."""

    def run_doc(self, text):
        runner = self.runner()
        path = os.path.join(self.tmp, "doc.md")
        with open(path, "w") as f:
            f.write(text)
        runner.run_file(path)
        return runner

    def test_check_right_outputs_pass(self):
        r = self.run_doc(
            "```sh\n%s eval '6*7'  # => 42\n```\n\n"
            "```sh\ngrpcurl -plaintext -d '{\"code\": \"6*7\"}' localhost:50051 "
            "pyexec.v1.PyExec/Eval\n```\n```json output\n{\"value\": {\"int\": \"42\"}}\n```\n\n"
            "```sh\ngrpcurl -plaintext -d '{\"session\": \"x\"}' localhost:50051 "
            "pyexec.v1.PyExec/Release\n```\n```text output exit=69\nERROR:\n  Code: NotFound\n"
            "  Message: …\n```\n" % CLI)
        self.assertEqual(r.failures, [])
        self.assertEqual((r.commands_run, r.grpcurl_checked), (3, 2))

    def test_check_a_wrong_cli_output_fails(self):
        r = self.run_doc("```sh\n%s eval '6*7'  # => 43\n```\n" % CLI)
        self.assertEqual(len(r.failures), 1)
        self.assertIn("wrong output", r.failures[0])

    def test_check_a_wrong_grpcurl_output_fails(self):
        r = self.run_doc(
            "```sh\ngrpcurl -plaintext -d '{\"code\": \"6*7\"}' localhost:50051 "
            "pyexec.v1.PyExec/Eval\n```\n```json output\n{\"value\": {\"int\": \"41\"}}\n```\n")
        self.assertEqual(len(r.failures), 1)
        self.assertIn("wrong output", r.failures[0])

    def test_check_a_zero_value_shows_only_with_emit_defaults(self):
        r = self.run_doc(
            "```sh\ngrpcurl -plaintext -d '{}' localhost:50051 pyexec.v1.PyExec/GetStats "
            "| jq -c .pendingRequests  # => null\n"
            "grpcurl -plaintext -emit-defaults -d '{}' localhost:50051 pyexec.v1.PyExec/GetStats "
            "| jq -c .pendingRequests  # => 0\n```\n")
        self.assertEqual(r.failures, [])

    def test_check_a_failing_command_fails(self):
        r = self.run_doc("```sh\n%s eval '1/0'\n```\n" % CLI)
        self.assertEqual(len(r.failures), 1)
        self.assertIn("exit status 1", r.failures[0])

    def test_check_a_wrong_python_output_fails(self):
        r = self.run_doc("```python\nprint(6*7)\n```\n```text output\n41\n```\n")
        self.assertEqual(len(r.failures), 1)

    def test_check_a_real_grpcurl_runs_the_file_again(self):
        # Stand-in for a grpcurl found on PATH: a second translation client
        # in a directory of its own.
        fake = os.path.join(self.tmp, "real-grpcurl")
        os.mkdir(fake)
        server = _GrpcurlServer(fake)
        self.addCleanup(server.close)
        runner = DocsRunner(self.server.address, self.metrics_address(), self.tmp,
                            self.client_stubs, server.script)
        self.addCleanup(runner.grpcurl_server.close)
        path = os.path.join(self.tmp, "doc.md")
        with open(path, "w") as f:
            f.write("```sh\ngrpcurl -plaintext -d '{\"code\": \"6*7\"}' localhost:50051 "
                    "pyexec.v1.PyExec/Eval | jq -c .value  # => {\"int\":\"41\"}\n```\n")
        runner.run_file(path)
        self.assertEqual(len(runner.failures), 2, runner.failures)
        self.assertIn("(with %s)" % server.script, runner.failures[1])
        self.assertEqual((runner.commands_run, runner.grpcurl_checked), (1, 1))

    def test_check_skipped_blocks_are_counted_not_run(self):
        r = self.run_doc("<!-- docs-test: skip (a cluster) -->\n```sh\nfalse\nfalse\n```\n")
        self.assertEqual((r.failures, r.commands_run, r.skipped[0][1:]), ([], 0, ("a cluster", 2)))


class DocsTest(_SelfCheck, _DocsServer):
    """Every command of README.md and docs/*.md, with its shown output; and
    (test_check_*) the checker failing on wrong outputs."""

    def test_every_command_in_the_docs(self):
        runner = self.runner(shutil.which("grpcurl"))
        took = []
        for path in doc_files():
            start = time.monotonic()
            runner.run_file(path)
            took.append("%s %.1fs" % (os.path.relpath(path, REPO), time.monotonic() - start))
        print("\n" + runner.summary())
        print("  " + ", ".join(took))
        for where, reason, n in runner.skipped:
            print("  not run: %s (%d command%s): %s" % (where, n, "" if n == 1 else "s", reason))
        if runner.real_grpcurl:
            print("  grpcurl examples also run with %s" % runner.real_grpcurl)
        else:
            print("  no grpcurl on PATH: its examples ran through the grpcio translation only")
        self.assertGreater(runner.commands_run, 0)
        self.assertFalse(runner.failures, "\n\n" + "\n\n".join(runner.failures))

    def test_links_resolve(self):
        """Relative links of the docs name files that exist, and anchors that
        exist in them (GitHub's heading slugs)."""
        bad = []
        for path in doc_files():
            with open(path, encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"^[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                    if file_part else path
                if not os.path.exists(dest):
                    bad.append("%s: %s (no such file)" % (os.path.relpath(path, REPO), target))
                elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
                    bad.append("%s: %s (no such heading)" % (os.path.relpath(path, REPO), target))
        self.assertFalse(bad, "\n".join(bad))


def _anchors(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)
    out = set()
    for title in re.findall(r"^#+\s+(.*)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", "")).replace(" ", "-")
        out.add(slug)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-grpcurl":
        sys.exit(grpcurl_main(sys.argv[2:]))
    unittest.main()
