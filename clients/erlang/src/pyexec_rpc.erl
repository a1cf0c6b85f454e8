%% @doc The six PyExec RPCs, independent of the transport underneath.
%%
%% A transport module exports `unary(Method, Request, Timeout)' taking and
%% returning message maps (see pyexec_pb) and reports failures in one shape:
%% `{error, {grpc, Code, Message}}' where Code is the lower-case atom of a
%% gRPC status code and Message a binary. The built-in HTTP/2 transport is
%% pyexec_grpc; pyexec_grpcbox uses grpcbox when it is installed.
-module(pyexec_rpc).

-export([call/3, method/1, code/1]).

-export_type([method/0, grpc_error/0]).

-type method() :: bind | unbind | eval | exec | call | get_stats.
-type grpc_error() :: {grpc, atom(), binary()}.

-callback unary(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.

%% @doc Runs one RPC with a timeout in milliseconds (or infinity, in which
%% case the server's --default_timeout applies).
-spec call(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.
call(Method, Request, Timeout) ->
    case pyexec_config:get(transport) of
        builtin -> pyexec_grpc:unary(Method, Request, Timeout);
        grpcbox -> pyexec_grpcbox:unary(Method, Request, Timeout)
    end.

%% @doc Path, request message and response message of a method.
-spec method(method()) -> {binary(), pyexec_pb:msg_name(), pyexec_pb:msg_name()}.
method(bind) -> {<<"/pyexec.v1.PyExec/Bind">>, bind_request, bind_response};
method(unbind) -> {<<"/pyexec.v1.PyExec/Unbind">>, unbind_request, unbind_response};
method(eval) -> {<<"/pyexec.v1.PyExec/Eval">>, eval_request, eval_response};
method(exec) -> {<<"/pyexec.v1.PyExec/Exec">>, exec_request, exec_response};
method(call) -> {<<"/pyexec.v1.PyExec/Call">>, call_request, call_response};
method(get_stats) -> {<<"/pyexec.v1.PyExec/GetStats">>, get_stats_request, get_stats_response}.

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
