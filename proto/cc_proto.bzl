"""C++ code generation for .proto files with the system protoc.

Debian's protobuf-compiler and grpc_cpp_plugin stand in for rules_proto and
the gRPC Bazel rules, which cannot be fetched offline.
"""

def cc_proto_genrule(
        name,
        srcs,
        import_root,
        grpc = False,
        grpc_header_includes = [],
        extra_hdrs = [],
        deps = [],
        visibility = None):
    """Generates and compiles C++ message (and optionally gRPC) code.

    Args:
      name: the cc_library to define (with grpc, the stubs; the messages
        alone are name + "_messages" either way).
      srcs: .proto files.
      import_root: execroot-relative directory that imports are resolved
        against; generated files keep their path below it.
      grpc: also run grpc_cpp_plugin.
      grpc_header_includes: headers (import-root relative) that the generated
        .grpc.pb.h includes right after the message header.
      extra_hdrs: hand-written headers that belong to the library.
      deps: cc_proto_genrule libraries whose protos these import.
      visibility: of the cc_library.
    """
    rels = []
    for src in srcs:
        label = Label(src) if src.startswith("@") else None
        path = label.name if label else src
        rels.append(path)

    outs = []
    for rel in rels:
        base = rel[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]

    plugin = ""
    if grpc:
        params = ""
        if grpc_header_includes:
            params = "additional_header_includes=" + ":".join(grpc_header_includes) + ":"
        plugin = (" --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)" +
                  " --grpc_out=" + params + "$(@D)")

    # $(@D) is the package's output directory when there are several outputs;
    # generated files land below it at their import-relative path.
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = ("protoc -I" + import_root + " -Iproto" +
               " --cpp_out=$(@D)" + plugin + " " +
               " ".join(["$(location " + s + ")" for s in srcs])),
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = srcs,
    )
    # The messages are a library of their own, `name + "_messages"`, which
    # the gRPC stubs (`name`) build on: a binary that needs only messages
    # (the worker) then links no gRPC, whose libraries every forked worker
    # would otherwise map and relocate.
    messages = name + "_messages" if grpc else name
    native.cc_library(
        name = messages,
        srcs = [o for o in outs if o.endswith(".pb.cc") and not o.endswith(".grpc.pb.cc")],
        hdrs = [o for o in outs if o.endswith(".pb.h") and not o.endswith(".grpc.pb.h")] + extra_hdrs,
        includes = ["."],
        deps = [d + "_messages" for d in deps] + ["//third_party:protobuf"],
        visibility = visibility,
    )
    if grpc:
        native.cc_library(
            name = name,
            srcs = [o for o in outs if o.endswith(".grpc.pb.cc")],
            hdrs = [o for o in outs if o.endswith(".grpc.pb.h")],
            includes = ["."],
            deps = [":" + messages, "//third_party:grpc"],
            visibility = visibility,
        )
    else:
        native.alias(
            name = name + "_messages",
            actual = ":" + name,
            visibility = visibility,
        )
