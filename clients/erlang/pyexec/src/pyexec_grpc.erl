%% @doc The built-in gRPC transport: calls over pyexec_conn.
%%
%% This runs in the calling process: it encodes the request, hands it to a
%% connection, waits for the reply and decodes it, so that protobuf work is
%% spread over all callers instead of serialised in the connection process.
%%
%% Options of a call (pyexec_rpc:opts()): `metadata', extra request headers
%% of this call; `via', `balancer' (the configured endpoints, round robin)
%% or `{owner, Address}' (the connection to a session's owner replica, see
%% owner_ready/1).
-module(pyexec_grpc).
-behaviour(pyexec_rpc).

-export([unary/3, call/4, request/3, decode_status/2, percent_decode/1,
         stream_open/3, stream_open/4, bidi_open/4, stream_send/2, stream_close_send/1,
         stream_request/3, stream_request/4, stream_recv/2, stream_cancel/1,
         owner_ready/1]).

-export_type([stream/0]).

%% A stream opened by stream_open/3,4 or bidi_open/4; used only by the
%% process that opened it.
-opaque stream() :: #{conn := pid(), mref := reference(), resp := pyexec_pb:msg_name() | raw,
                      req => pyexec_pb:msg_name(), deadline := integer() | infinity}.

-define(TABLE, pyexec_conns).

%% @doc One PyExec RPC. Timeout is in milliseconds, or infinity.
-spec unary(pyexec_rpc:method(), map(), timeout()) ->
          {ok, map()} | {error, pyexec_rpc:grpc_error()}.
unary(Method, Request, Timeout) ->
    case call(Method, Request, Timeout, #{}) of
        {ok, Resp, _Headers} -> {ok, Resp};
        {error, {Tag, E}} when Tag =:= lost; Tag =:= unsent -> {error, E};
        {error, _} = E -> E
    end.

%% @doc One PyExec RPC with options; the response comes with the response
%% headers. `{error, {lost, GrpcError}}': the connection was lost while the
%% server may have been running the call; `{error, {unsent, GrpcError}}':
%% no connection could take it (the server never saw it).
-spec call(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) ->
          {ok, map(), [{binary(), binary()}]} | {error, term()}.
call(Method, Request, Timeout, Opts) ->
    {Path, ReqType, RespType} = pyexec_rpc:method(Method),
    Msg = pyexec_pb:encode_msg(ReqType, Request),
    case request(Path, Msg, Timeout, Opts) of
        {ok, Bin, Headers} ->
            try
                {ok, pyexec_pb:decode_msg(RespType, Bin), Headers}
            catch
                error:_ -> {error, {grpc, internal, <<"cannot parse response message">>}}
            end;
        {error, _} = E ->
            E
    end.

%% @doc Opens a server-streaming RPC (ExecStream, CallStream). Messages
%% are then read one at a time with stream_recv/2; the connection reopens
%% the stream's flow-control window only as they are read, so a consumer
%% that stops reading stops the server (and the Python code behind it).
%% Timeout bounds the whole stream (the gRPC deadline), or infinity.
-spec stream_open(pyexec_rpc:method(), map(), timeout()) ->
          {ok, stream()} | {error, pyexec_rpc:grpc_error()}.
stream_open(Method, Request, Timeout) ->
    stream_open(Method, Request, Timeout, #{}).

-spec stream_open(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) ->
          {ok, stream()} | {error, pyexec_rpc:grpc_error()}.
stream_open(Method, Request, Timeout, Opts) ->
    open(stream, Method, Request, Timeout, Opts).

%% @doc Opens a bidirectional stream (Run) with its first request message:
%% stream_send/2 sends more, stream_close_send/1 ends the request side, and
%% stream_recv/2 reads the responses as for a server stream.
-spec bidi_open(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) ->
          {ok, stream()} | {error, pyexec_rpc:grpc_error()}.
bidi_open(Method, Request, Timeout, Opts) ->
    open(bidi, Method, Request, Timeout, Opts).

open(Mode, Method, Request, Timeout, Opts) ->
    {Path, ReqType, RespType} = pyexec_rpc:method(Method),
    Msg = pyexec_pb:encode_msg(ReqType, Request),
    case pick(maps:get(via, Opts, balancer)) of
        {ok, Conn} ->
            St = stream_request(Conn, {Mode, Path, maps:get(metadata, Opts, [])}, Msg, Timeout),
            {ok, St#{resp := RespType, req => ReqType}};
        {error, _} = E ->
            E
    end.

%% @doc Sends one more request message on a bidi stream (`{raw, Binary}': a
%% serialized one). Throws `{pyexec_bad_value, Term}' as encoding does.
-spec stream_send(stream(), map() | {raw, binary()}) -> ok.
stream_send(#{conn := Conn, mref := Mref} = St, Msg) ->
    Bin = case Msg of
              {raw, B} -> B;
              _ -> iolist_to_binary(pyexec_pb:encode_msg(maps:get(req, St), Msg))
          end,
    Conn ! {pyexec_send, Mref, [<<0, (byte_size(Bin)):32>>, Bin]},
    ok.

%% @doc Ends the request side of a bidi stream (HTTP/2 END_STREAM).
-spec stream_close_send(stream()) -> ok.
stream_close_send(#{conn := Conn, mref := Mref}) ->
    Conn ! {pyexec_close_send, Mref},
    ok.

%% @doc A raw server stream: Path and a serialized request in; stream_recv/2
%% then returns `{ok, Binary}' messages. Used by stream_open/3 and by tests.
-spec stream_request(binary(), iodata(), timeout()) ->
          {ok, stream()} | {error, pyexec_rpc:grpc_error()}.
stream_request(Path, Msg, Timeout) ->
    case pick() of
        {ok, Conn} -> {ok, stream_request(Conn, Path, Msg, Timeout)};
        {error, _} = E -> E
    end.

%% @doc stream_request/3 on a given pyexec_conn connection (the grpcbox
%% suite's stand-in owns its connections).
-spec stream_request(pid(), binary() | {stream | bidi, binary(), [{binary(), binary()}]},
                     iodata(), timeout()) -> stream().
stream_request(Conn, Path0, Msg, Timeout) ->
    Path = case Path0 of
               _ when is_binary(Path0) -> {stream, Path0, []};
               {_, _, _} -> Path0
           end,
    Body = [<<0, (iolist_size(Msg)):32>>, Msg],
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    Mref = erlang:monitor(process, Conn, [{alias, demonitor}]),
    Conn ! {pyexec_req, Mref, self(), Path, Body, Deadline},
    #{conn => Conn, mref => Mref, resp => raw, deadline => Deadline}.

%% @doc The next message of a stream: `{ok, Msg}', `{done, Headers}' when
%% it ended with status OK (Headers: the response headers), `{error,
%% GrpcError}' when it ended otherwise (the stream
%% is then finished), or `timeout' if nothing arrived within Wait ms (the
%% stream goes on). Past the stream's deadline plus `deadline_grace' the
%% stream is reset and `{error, {grpc, deadline_exceeded, _}}' returned.
%% A message that is a tuple tagged `pyexec_stream_ctl' (also a 'DOWN'
%% of a monitor made with `{tag, pyexec_stream_ctl}') ends the wait with
%% `{ctl, Message}': this is how py:stream_cancel/1 and an owner's death
%% reach a reader blocked here. The stream is left as it is.
-spec stream_recv(stream(), timeout()) ->
          {ok, map()} | {done, [{binary(), binary()}]} | timeout | {ctl, term()}
              | {error, term()}.
stream_recv(#{conn := Conn, mref := Mref, resp := RespType, deadline := Deadline} = St, Wait) ->
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
                        + pyexec_config:get(deadline_grace)
           end,
    receive
        {Mref, {message, Bin, Octets}} ->
            %% Taken: let the server send this much more.
            Conn ! {pyexec_ack, Mref, Octets},
            try
                {ok, case RespType of
                         raw -> Bin;
                         _ -> pyexec_pb:decode_msg(RespType, Bin)
                     end}
            catch
                error:_ ->
                    stream_cancel(St),
                    {error, {grpc, internal, <<"cannot parse response message">>}}
            end;
        {Mref, {trailers, Headers, Trailers}} ->
            erlang:demonitor(Mref, [flush]),
            case decode_status(Headers, Trailers) of
                ok -> {done, Headers};
                {error, _} = E -> E
            end;
        {Mref, {error, _} = Err} ->
            erlang:demonitor(Mref, [flush]),
            case result(Err) of
                {retry, E} -> {error, {unsent, E}};
                E -> E
            end;
        {'DOWN', Mref, process, _, Reason} ->
            {error, {lost, {grpc, unavailable, fmt("connection process exited: ~p", [Reason])}}};
        Ctl when element(1, Ctl) =:= pyexec_stream_ctl ->
            {ctl, Ctl}
    after min_timeout(Wait, Left) ->
            case Left =/= infinity andalso (Wait =:= infinity orelse Left =< Wait) of
                true ->
                    stream_cancel(St),
                    {error, {grpc, deadline_exceeded, <<"deadline exceeded (no answer from server)">>}};
                false ->
                    timeout
            end
    end.

%% @doc Cancels a stream (RST_STREAM CANCEL: the server interrupts the
%% Python code). Messages still in flight are dropped. Always ok.
-spec stream_cancel(stream()) -> ok.
stream_cancel(#{conn := Conn, mref := Mref}) ->
    erlang:demonitor(Mref, [flush]),
    Conn ! {pyexec_cancel, Mref},
    flush_stream(Mref).

flush_stream(Mref) ->
    receive
        {Mref, _} -> flush_stream(Mref)
    after 0 -> ok
    end.

min_timeout(infinity, B) -> B;
min_timeout(A, infinity) -> A;
min_timeout(A, B) -> min(A, B).

%% @doc A raw unary call: Path and a serialized request in, the serialized
%% response out. Used by tests that talk to other services.
-spec request(binary(), iodata(), timeout()) -> {ok, binary()} | {error, pyexec_rpc:grpc_error()}.
request(Path, Msg, Timeout) ->
    case request(Path, Msg, Timeout, #{}) of
        {ok, Bin, _Headers} -> {ok, Bin};
        {error, {Tag, E}} when Tag =:= lost; Tag =:= unsent -> {error, E};
        {error, _} = E -> E
    end.

request(Path, Msg, Timeout, Opts) ->
    Body = [<<0, (iolist_size(Msg)):32>>, Msg],
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    Via = maps:get(via, Opts, balancer),
    Tries = case Via of balancer -> connection_count(); _ -> 1 end,
    attempt(Via, {unary, Path, maps:get(metadata, Opts, [])}, Body, Deadline, Tries).

%% A call the server never saw (connection down, stream refused, GOAWAY
%% before processing) is retried on another connection; anything else is
%% returned as is, because Exec is not idempotent.
attempt(Via, Path, Body, Deadline, Tries) ->
    case pick(Via) of
        {ok, Conn} ->
            case send_and_wait(Conn, Path, Body, Deadline) of
                {retry, _Err} when Tries > 1 ->
                    attempt(Via, Path, Body, Deadline, Tries - 1);
                {retry, Err} ->
                    {error, {unsent, Err}};
                Result ->
                    Result
            end;
        {error, E} ->
            {error, {unsent, E}}
    end.

send_and_wait(Conn, Path, Body, Deadline) ->
    %% The reply comes through an alias of this monitor: once we stop
    %% waiting, late replies are dropped by the runtime, not queued here.
    Mref = erlang:monitor(process, Conn, [{alias, demonitor}]),
    Conn ! {pyexec_req, Mref, self(), Path, Body, Deadline},
    Wait = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
                        + pyexec_config:get(deadline_grace)
           end,
    receive
        {Mref, Result} ->
            erlang:demonitor(Mref, [flush]),
            result(Result);
        {'DOWN', Mref, process, _, Reason} ->
            {error, {lost, {grpc, unavailable, fmt("connection process exited: ~p", [Reason])}}}
    after Wait ->
            %% The server should have answered DEADLINE_EXCEEDED by now;
            %% reset the stream so it stops working for us anyway.
            erlang:demonitor(Mref, [flush]),
            Conn ! {pyexec_cancel, Mref},
            {error, {grpc, deadline_exceeded, <<"deadline exceeded (no answer from server)">>}}
    end.

result({ok, Headers, Body, Trailers}) ->
    case decode_status(Headers, Trailers) of
        ok ->
            case message(Body) of
                {ok, Msg} -> {ok, Msg, Headers};
                E -> E
            end;
        {error, _} = E -> E
    end;
result({error, {unavailable, Msg}}) -> {retry, {grpc, unavailable, Msg}};
result({error, {refused, Msg}}) -> {retry, {grpc, unavailable, Msg}};
result({error, {closed, Msg}}) -> {error, {lost, {grpc, unavailable, Msg}}};
result({error, deadline}) -> {error, {grpc, deadline_exceeded, <<"deadline exceeded before sending">>}};
result({error, {too_large, Size}}) ->
    {error, {grpc, resource_exhausted, fmt("response larger than max_message_size (~b octets)", [Size])}};
result({error, {rst_stream, Name}}) ->
    Code = case Name of
               cancel -> cancelled;
               refused_stream -> unavailable;
               enhance_your_calm -> resource_exhausted;
               _ -> internal
           end,
    {error, {grpc, Code, fmt("stream reset by server: ~p", [Name])}};
result({error, {protocol, Msg}}) ->
    {error, {grpc, internal, Msg}}.

%% One length-prefixed message; we never ask for compression, so a
%% compressed message is a server error.
message(<<0, Len:32, Msg:Len/binary>>) -> {ok, Msg};
message(<<>>) -> {error, {grpc, internal, <<"OK status without a response message">>}};
message(<<1, _/binary>>) -> {error, {grpc, internal, <<"compressed response not supported">>}};
message(_) -> {error, {grpc, internal, <<"malformed gRPC message framing">>}}.

%% @doc Status of a response from its headers and trailers (the same list
%% for a trailers-only response). Without grpc-status, the HTTP status is
%% mapped as the gRPC spec says (http-grpc-status-mapping.md).
-spec decode_status([{binary(), binary()}], [{binary(), binary()}]) ->
          ok | {error, pyexec_rpc:grpc_error()}.
decode_status(Headers, Trailers) ->
    case lists:keyfind(<<"grpc-status">>, 1, Trailers) of
        {_, <<"0">>} ->
            ok;
        {_, Code} ->
            Msg = case lists:keyfind(<<"grpc-message">>, 1, Trailers) of
                      {_, M} -> percent_decode(M);
                      false -> <<>>
                  end,
            {error, {grpc, pyexec_rpc:code(binary_to_integer_safe(Code)), Msg}};
        false ->
            case lists:keyfind(<<":status">>, 1, Headers) of
                {_, <<"200">>} ->
                    {error, {grpc, internal, <<"response without grpc-status">>}};
                {_, Http} ->
                    {error, {grpc, http_code(Http), <<"HTTP status ", Http/binary>>}};
                false ->
                    {error, {grpc, internal, <<"response without :status">>}}
            end
    end.

http_code(<<"400">>) -> internal;
http_code(<<"401">>) -> unauthenticated;
http_code(<<"403">>) -> permission_denied;
http_code(<<"404">>) -> unimplemented;
http_code(S) when S =:= <<"429">>; S =:= <<"502">>; S =:= <<"503">>; S =:= <<"504">> -> unavailable;
http_code(_) -> unknown.

binary_to_integer_safe(B) ->
    try binary_to_integer(B) catch error:badarg -> 2 end.

%% @doc grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2 spec). A
%% malformed escape is kept literally rather than failing the call.
-spec percent_decode(binary()) -> binary().
percent_decode(Bin) ->
    percent_decode(Bin, <<>>).

percent_decode(<<$%, H1, H2, Rest/binary>>, Acc) ->
    case {hex(H1), hex(H2)} of
        {X, Y} when is_integer(X), is_integer(Y) ->
            percent_decode(Rest, <<Acc/binary, (X * 16 + Y)>>);
        _ ->
            percent_decode(<<H1, H2, Rest/binary>>, <<Acc/binary, $%>>)
    end;
percent_decode(<<C, Rest/binary>>, Acc) ->
    percent_decode(Rest, <<Acc/binary, C>>);
percent_decode(<<>>, Acc) ->
    Acc.

hex(C) when C >= $0, C =< $9 -> C - $0;
hex(C) when C >= $a, C =< $f -> C - $a + 10;
hex(C) when C >= $A, C =< $F -> C - $A + 10;
hex(_) -> bad.

%% @doc Whether a session's calls can go straight to its owner at Address
%% ("host:port"): a connection to it is up. The first time, the connection
%% is started, and false returned: the call goes through the balancer while
%% it connects.
-spec owner_ready(binary()) -> boolean().
owner_ready(Address) ->
    try ets:lookup(?TABLE, {owner, Address}) of
        [{_, _Pid, Up}] -> Up;
        [] -> pyexec_conn_sup:start_owner(Address), false
    catch
        error:badarg -> false
    end.

pick(balancer) ->
    pick();
pick({owner, Address}) ->
    case ets:lookup(?TABLE, {owner, Address}) of
        [{_, Pid, true}] -> {ok, Pid};
        _ -> {error, {grpc, unavailable, <<"no connection to the owner replica">>}}
    end.

%% Round robin over the connections, skipping those that are down; if all
%% are down, the next one answers with the reason it is down.
pick() ->
    N = connection_count(),
    try atomics:add_get(persistent_term:get({pyexec_grpc, rr}), 1, 1) of
        Start -> pick(Start, N, N, undefined)
    catch
        error:badarg -> {error, {grpc, unavailable, <<"pyexec is not started">>}}
    end.

pick(_I, _N, 0, undefined) ->
    {error, {grpc, unavailable, <<"pyexec is not started">>}};
pick(_I, _N, 0, Fallback) ->
    {ok, Fallback};
pick(I, N, Left, Fallback) ->
    case ets:lookup(?TABLE, (I rem N) + 1) of
        [{_, Pid, true}] -> {ok, Pid};
        [{_, Pid, false}] when Fallback =:= undefined -> pick(I + 1, N, Left - 1, Pid);
        _ -> pick(I + 1, N, Left - 1, Fallback)
    end.

connection_count() ->
    pyexec_config:get(connections).

fmt(F, A) -> iolist_to_binary(io_lib:format(F, A)).
