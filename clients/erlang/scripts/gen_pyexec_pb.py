#!/usr/bin/python3
"""Generates clients/erlang/pyexec/src/pyexec_pb.erl from proto/pyexec/v1/pyexec.proto.

    clients/erlang/scripts/gen_pyexec_pb.py           # rewrite pyexec/src/pyexec_pb.erl
    clients/erlang/scripts/gen_pyexec_pb.py --check   # exit 1 if it is stale (CI)

protoc compiles the .proto into a descriptor set (--descriptor_set_out),
which this script reads with google.protobuf.descriptor_pb2 (Debian:
protobuf-compiler, python3-protobuf) and turns into:
  - schema/1: the field table of every message, which the generic codec in
    pyexec_pb_wire.erl walks;
  - method/1, methods/0: the RPCs of the service (path, request, response).

`Value` (and its `NoneValue`) is not in the table: pyexec_value.erl maps it
straight to and from Erlang terms by field number. Its wire layout is checked
against VALUE_LAYOUT below, so changing Value in the .proto fails here until
pyexec_value.erl and VALUE_LAYOUT are updated together.
"""

import difflib
import os
import re
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(CLIENT))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO = "pyexec/v1/pyexec.proto"
OUT = os.path.join(CLIENT, "pyexec", "src", "pyexec_pb.erl")

F = descriptor_pb2.FieldDescriptorProto

# What pyexec_value.erl decodes and encodes: name -> (number, type, label, type_name).
VALUE_LAYOUT = {
    "none": (1, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".pyexec.v1.NoneValue"),
    "bool": (2, F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
    "int": (3, F.TYPE_SINT64, F.LABEL_OPTIONAL, ""),
    "big_int": (4, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
    "float": (5, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
    "str": (6, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
    "bytes": (7, F.TYPE_BYTES, F.LABEL_OPTIONAL, ""),
    "list": (8, F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
    "tuple": (9, F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
    "dict": (10, F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
    "set": (11, F.TYPE_BOOL, F.LABEL_OPTIONAL, ""),
    "opaque": (12, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".pyexec.v1.Opaque"),
    "items": (13, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pyexec.v1.Value"),
    "keys": (14, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pyexec.v1.Value"),
    "ref": (15, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".pyexec.v1.Ref"),
}
HAND_MAPPED = {"Value", "NoneValue"}
SCALARS = {F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32",
           F.TYPE_UINT64: "uint64", F.TYPE_BOOL: "bool"}


class Unsupported(Exception):
    pass


# Erlang reserved words: a field with one of these names (StreamEnd's
# `end`) must be a quoted atom.
RESERVED = {"after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor",
            "case", "catch", "cond", "div", "end", "fun", "if", "let", "maybe", "not", "of",
            "or", "orelse", "receive", "rem", "try", "when", "xor"}


def atom(name):
    return "'%s'" % name if name in RESERVED else name


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def descriptor_set():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pyexec.pb")
        subprocess.run(["protoc", "-I", PROTO_DIR, "--descriptor_set_out=" + out, PROTO],
                       check=True)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    (file_proto,) = [f for f in fds.file if f.name == PROTO]
    return file_proto


def check_value(msg):
    got = {f.name: (f.number, f.type, f.label, f.type_name) for f in msg.field}
    if got != VALUE_LAYOUT:
        raise Unsupported("message Value changed; update pyexec_value.erl and VALUE_LAYOUT "
                          "in this script together:\n  expected %r\n  got      %r"
                          % (VALUE_LAYOUT, got))


def field_type(msg, field, package):
    """The pyexec_pb_wire type of a field."""
    where = "%s.%s" % (msg.name, field.name)
    if field.type == F.TYPE_MESSAGE:
        if field.type_name == "." + package + ".Value":
            return "{repeated, value}" if field.label == F.LABEL_REPEATED else "value"
        nested = [n for n in msg.nested_type if "." + package + "." + msg.name + "." + n.name
                  == field.type_name]
        if nested and nested[0].options.map_entry:
            key, val = nested[0].field
            if key.type == F.TYPE_STRING and val.type_name == "." + package + ".Value":
                return "{map, value}"
            raise Unsupported(where + ": only map<string, Value> is supported")
        prefix = "." + package + "."
        if not field.type_name.startswith(prefix) or "." in field.type_name[len(prefix):]:
            raise Unsupported(where + ": message type %s is not supported" % field.type_name)
        name = snake(field.type_name[len(prefix):])
        if field.label == F.LABEL_REPEATED:
            return "{repeated, {message, %s}}" % name
        return "{message, %s}" % name
    if field.label == F.LABEL_REPEATED and field.type == F.TYPE_STRING:
        return "{repeated, string}"
    if field.label == F.LABEL_REPEATED or field.type not in SCALARS:
        raise Unsupported(where + ": field type %d (label %d) is not supported by "
                          "pyexec_pb_wire; extend it and this script" % (field.type, field.label))
    return SCALARS[field.type]


def generate():
    fp = descriptor_set()
    pkg = fp.package
    msgs = [m for m in fp.message_type if m.name not in HAND_MAPPED]
    (value,) = [m for m in fp.message_type if m.name == "Value"]
    check_value(value)
    (service,) = fp.service
    names = [snake(m.name) for m in msgs]
    methods = [(snake(m.name), "/%s.%s/%s" % (pkg, service.name, m.name),
                snake(m.input_type.split(".")[-1]), snake(m.output_type.split(".")[-1]))
               for m in service.method]

    out = []
    w = out.append
    w("%% @doc The pyexec.v1 messages and RPCs, GENERATED by")
    w("%% clients/erlang/scripts/gen_pyexec_pb.py from proto/pyexec/v1/pyexec.proto.")
    w("%% Do not edit: change the .proto and rerun the script (run_tests.sh checks")
    w("%% that this file is current).")
    w("%%")
    w("%% Messages are maps with atom keys named as in the .proto; schema/1 is the")
    w("%% field table that the generic codec in pyexec_pb_wire walks. `Value' fields")
    w("%% are mapped to plain Erlang terms by pyexec_value.")
    w("-module(pyexec_pb).")
    w("")
    w("-export([encode_msg/2, decode_msg/2, schema/1, method/1, methods/0,")
    w("         varint/1, read_field/1]).")
    w("")
    w("-export_type([msg_name/0, method/0]).")
    w("")
    w("-type msg_name() :: " + "\n                  | ".join(
        " | ".join(names[i:i + 3]) for i in range(0, len(names), 3)) + ".")
    w("-type method() :: " + " | ".join(m[0] for m in methods) + ".")
    w("-type field_type() :: pyexec_pb_wire:field_type().")
    w("")
    w("%% @doc Encodes a message map (see pyexec_pb_wire:encode_msg/2).")
    w("-spec encode_msg(msg_name(), map()) -> iodata().")
    w("encode_msg(Name, Msg) -> pyexec_pb_wire:encode_msg(Name, Msg).")
    w("")
    w("%% @doc Decodes a message (see pyexec_pb_wire:decode_msg/2).")
    w("-spec decode_msg(msg_name(), binary()) -> map().")
    w("decode_msg(Name, Bin) -> pyexec_pb_wire:decode_msg(Name, Bin).")
    w("")
    w("-spec varint(non_neg_integer()) -> binary().")
    w("varint(I) -> pyexec_pb_wire:varint(I).")
    w("")
    w("-spec read_field(binary()) -> {pos_integer(), integer() | binary(), binary()}.")
    w("read_field(Bin) -> pyexec_pb_wire:read_field(Bin).")
    w("")
    w("%% @doc Field number, key and type of each field of a message.")
    w("-spec schema(msg_name()) -> [{pos_integer(), atom(), field_type()}].")
    for i, m in enumerate(msgs):
        fields = ["{%d, %s, %s}" % (f.number, atom(f.name), field_type(m, f, pkg)) for f in m.field]
        end = "." if i == len(msgs) - 1 else ";"
        head = "schema(%s) ->" % snake(m.name)
        body = "[" + ", ".join(fields) + "]" + end
        if len(head) + 1 + len(body) <= 95:
            w(head + " " + body)
        else:
            w(head)
            line = "    ["
            for j, fld in enumerate(fields):
                piece = fld + (", " if j < len(fields) - 1 else "]" + end)
                if len(line) + len(piece.rstrip()) > 95:
                    w(line.rstrip())
                    line = "     "
                line += piece
            w(line.rstrip())
    w("")
    w("%% @doc Path, request message and response message of an RPC of")
    w("%% service " + pkg + "." + service.name + ".")
    w("-spec method(method()) -> {binary(), msg_name(), msg_name()}.")
    for i, (name, path, req, resp) in enumerate(methods):
        end = "." if i == len(methods) - 1 else ";"
        w('method(%s) -> {<<"%s">>, %s, %s}%s' % (name, path, req, resp, end))
    w("")
    w("-spec methods() -> [method()].")
    w("methods() -> [" + ", ".join(m[0] for m in methods) + "].")
    return "\n".join(out) + "\n"


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        sys.exit("usage: gen_pyexec_pb.py [--check]")
    try:
        text = generate()
    except Unsupported as e:
        sys.exit("gen_pyexec_pb: " + str(e))
    if check:
        with open(OUT) as f:
            current = f.read()
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), OUT, "generated"))
            sys.exit("gen_pyexec_pb: %s is stale; run clients/erlang/scripts/gen_pyexec_pb.py"
                     % os.path.relpath(OUT, ROOT))
        print("gen_pyexec_pb: %s is current" % os.path.relpath(OUT, ROOT))
    else:
        with open(OUT, "w") as f:
            f.write(text)
        print("gen_pyexec_pb: wrote %s" % os.path.relpath(OUT, ROOT))


if __name__ == "__main__":
    main()
