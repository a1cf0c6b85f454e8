%% @doc The six PyExec RPCs, independent of the transport underneath.
%%
%% A transport module exports `unary(Method, Request, Timeout)' taking and
%% returning message maps (see pyexec_pb) and reports failures in one shape:
%% `{error, {grpc, Code, Message}}' where Code is the lower-case atom of a
%% gRPC status code and Message a binary. The built-in HTTP/2 transport is
%% pyexec_grpc; pyexec_grpcbox uses grpcbox when it is installed.
-module(pyexec_rpc).

-export([call/3, method/1, code/1, stream_open/3, stream_recv/2, stream_cancel/1]).

-export_type([method/0, grpc_error/0, stream/0]).

-type method() :: pyexec_pb:method().
-type grpc_error() :: {grpc, atom(), binary()}.

-type stream() :: {module(), term()}.

-callback unary(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.
%% Server streams: open, then read messages one by one (`done' after an OK
%% status), cancel at any time. Only the opening process may use a stream.
-callback stream_open(method(), map(), timeout()) -> {ok, term()} | {error, grpc_error()}.
-callback stream_recv(term(), timeout()) ->
    {ok, map()} | done | timeout | {ctl, term()} | {error, grpc_error()}.
-callback stream_cancel(term()) -> ok.

%% @doc Runs one RPC with a timeout in milliseconds (or infinity, in which
%% case the server's --default_timeout applies).
-spec call(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.
call(Method, Request, Timeout) ->
    case pyexec_config:get(transport) of
        builtin -> pyexec_grpc:unary(Method, Request, Timeout);
        grpcbox -> pyexec_grpcbox:unary(Method, Request, Timeout)
    end.

%% @doc Opens a server-streaming RPC (exec_stream, call_stream) on the
%% configured transport.
-spec stream_open(method(), map(), timeout()) -> {ok, stream()} | {error, grpc_error()}.
stream_open(Method, Request, Timeout) ->
    Mod = transport(),
    case Mod:stream_open(Method, Request, Timeout) of
        {ok, S} -> {ok, {Mod, S}};
        {error, _} = E -> E
    end.

%% @doc The next message of a stream (see pyexec_grpc:stream_recv/2).
-spec stream_recv(stream(), timeout()) ->
          {ok, map()} | done | timeout | {ctl, term()} | {error, grpc_error()}.
stream_recv({Mod, S}, Wait) ->
    Mod:stream_recv(S, Wait).

-spec stream_cancel(stream()) -> ok.
stream_cancel({Mod, S}) ->
    Mod:stream_cancel(S).

transport() ->
    case pyexec_config:get(transport) of
        builtin -> pyexec_grpc;
        grpcbox -> pyexec_grpcbox
    end.

%% @doc Path, request message and response message of a method (from the
%% .proto, via the generated pyexec_pb).
-spec method(method()) -> {binary(), pyexec_pb:msg_name(), pyexec_pb:msg_name()}.
method(Method) ->
    pyexec_pb:method(Method).

%% @doc gRPC status code number to atom.
-spec code(non_neg_integer()) -> atom().
code(0) -> ok;
code(1) -> cancelled;
code(2) -> unknown;
code(3) -> invalid_argument;
code(4) -> deadline_exceeded;
code(5) -> not_found;
code(6) -> already_exists;
code(7) -> permission_denied;
code(8) -> resource_exhausted;
code(9) -> failed_precondition;
code(10) -> aborted;
code(11) -> out_of_range;
code(12) -> unimplemented;
code(13) -> internal;
code(14) -> unavailable;
code(15) -> data_loss;
code(16) -> unauthenticated;
code(_) -> unknown.
