"""A grpcio server used to test the Erlang HTTP/2 + gRPC stack.

Methods of service test.Echo (raw bytes in and out, no protobuf):
  Echo       returns the request; echoes x-echo-* request metadata as trailers
  Metadata   returns the request metadata as "key=value" lines
  Big        returns int(request) bytes
  Fail       request "CODE:message": aborts with that status (trailers-only)
  Sleep      sleeps float(request) seconds unless cancelled; counts cancellations
  Cancelled  returns the number of Sleep calls that saw cancellation
  Stop       stops the server gracefully (GOAWAY), grace float(request) seconds

Prints "listening on 127.0.0.1:PORT" once serving.
"""
import argparse
import sys
import threading
import time
from concurrent import futures

import grpc

cancelled = 0
lock = threading.Lock()
server = None


def echo(request, context):
    md = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-echo-")]
    if md:
        context.set_trailing_metadata(md)
    return request


def metadata(request, context):
    """Returns the request metadata as "key=value" lines (bearer tokens...)."""
    return "\n".join("%s=%s" % (k, v) for k, v in context.invocation_metadata()).encode()


def big(request, context):
    return b"z" * int(request)


def fail(request, context):
    code, message = request.decode("utf-8").split(":", 1)
    status = next(s for s in grpc.StatusCode if s.value[0] == int(code))
    context.abort(status, message)


def sleep(request, context):
    global cancelled
    end = time.monotonic() + float(request)
    while time.monotonic() < end:
        if not context.is_active():
            with lock:
                cancelled += 1
            return b""
        time.sleep(0.01)
    return b"slept"


def count_cancelled(request, context):
    with lock:
        return str(cancelled).encode()


def stop(request, context):
    grace = float(request)
    threading.Thread(target=lambda: (time.sleep(0.05), server.stop(grace)), daemon=True).start()
    return b"stopping"


def main():
    global server
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--client_ca", help="require client certificates signed by these CAs (mTLS)")
    a = p.parse_args()
    opts = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_metadata_size", 1 << 20),
            ("grpc.so_reuseport", 0),
            # Let the keepalive test ping often (grpc-core's default policy
            # answers frequent PINGs with GOAWAY "too_many_pings").
            ("grpc.http2.min_ping_interval_without_data_ms", 50),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.keepalive_permit_without_calls", 1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=opts)
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in {
        "Echo": echo, "Metadata": metadata, "Big": big, "Fail": fail, "Sleep": sleep,
        "Cancelled": count_cancelled, "Stop": stop}.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    addr = "127.0.0.1:%d" % a.port
    if a.cert:
        pairs = [(open(a.key, "rb").read(), open(a.cert, "rb").read())]
        if a.client_ca:
            creds = grpc.ssl_server_credentials(pairs, open(a.client_ca, "rb").read(), True)
        else:
            creds = grpc.ssl_server_credentials(pairs)
        port = server.add_secure_port(addr, creds)
    else:
        port = server.add_insecure_port(addr)
    if port == 0:
        print("cannot bind", addr, file=sys.stderr)
        sys.exit(1)
    server.start()
    print("listening on 127.0.0.1:%d" % port, flush=True)
    # Exit when stdin closes (the test node went away) or the server stopped.
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
