%% @doc Optional transport over grpcbox (https://github.com/tsloughter/grpcbox),
%% selected with `{transport, grpcbox}', for systems that already run grpcbox
%% and want one HTTP/2 stack.
%%
%% grpcbox is not a dependency of the default build: this module must
%% compile and load without it. It therefore never includes grpcbox.hrl; the
%% #grpcbox_def{} record is declared below with the same fields, and grpcbox
%% and ctx are reached through ordinary remote calls, which are resolved at
%% run time. The `grpcbox' rebar3 profile adds the real dependency.
%%
%% Messages are (un)marshalled by our own codec (pyexec_pb), so grpcbox's
%% code generator (gpb) is not needed either.
-module(pyexec_grpcbox).
-behaviour(pyexec_rpc).

-export([start_link/0, unary/3, definition/1, channel_endpoints/0,
         stream_open/3, stream_recv/2, stream_cancel/1]).

%% Same layout as the record in grpcbox/include/grpcbox.hrl.
-record(grpcbox_def, {service :: atom(),
                      message_type = <<>> :: binary(),
                      marshal_fun :: fun((map()) -> binary()),
                      unmarshal_fun :: fun((binary()) -> map())}).

%% @doc Starts the grpcbox channel named by `grpcbox_channel' towards the
%% configured endpoints, then steps aside (`ignore'): grpcbox supervises
%% the channel itself. A channel of that name that already exists (started
%% by the user's own grpcbox configuration) is used as is, with its own
%% options.
%%
%% `sync_start': without it grpcbox registers the channel's endpoints after
%% start_child/3 returns, and calls made in between fail with no_endpoints
%% (with grpcbox 0.17.1 the first call failed in 12 and 17 runs out of 30).
-spec start_link() -> ignore | {error, term()}.
start_link() ->
    case application:ensure_all_started(grpcbox) of
        {ok, _} ->
            Name = pyexec_config:get(grpcbox_channel),
            case grpcbox_channel_sup:start_child(Name, channel_endpoints(), #{sync_start => true}) of
                {ok, _} -> ignore;
                {error, {already_started, _}} -> ignore;
                {error, _} = E -> E
            end;
        {error, Reason} ->
            {error, {grpcbox_not_available, Reason}}
    end.

%% @doc The configured endpoints in grpcbox's form, with chatterbox
%% connection settings: our connect timeout, and `nodelay' because
%% chatterbox's socket otherwise waits for the server's delayed ACK on
%% every call (44 ms p50 against 0.6 ms measured with grpcbox 0.17.1).
-spec channel_endpoints() -> [{http | https, string(), inet:port_number(), list(), map()}].
channel_endpoints() ->
    {Scheme, SslOpts} = case pyexec_config:get(tls) of
                            false -> {http, []};
                            true -> {https, []};
                            Opts -> {https, Opts}
                        end,
    Settings = #{connect_timeout => pyexec_config:get(connect_timeout),
                 socket_options => [{nodelay, true}]},
    [{Scheme, Host, Port, SslOpts, Settings} || {Host, Port} <- pyexec_config:endpoints()].

%% @doc The grpcbox service definition of a method, built from our codec.
-spec definition(pyexec_rpc:method()) -> {binary(), tuple()}.
definition(Method) ->
    {Path, ReqType, RespType} = pyexec_rpc:method(Method),
    Def = #grpcbox_def{service = 'pyexec.v1.PyExec',
                       message_type = atom_to_binary(ReqType, utf8),
                       marshal_fun = fun(Msg) -> iolist_to_binary(pyexec_pb:encode_msg(ReqType, Msg)) end,
                       unmarshal_fun = fun(Bin) -> pyexec_pb:decode_msg(RespType, Bin) end},
    {Path, Def}.

-spec unary(pyexec_rpc:method(), map(), timeout()) ->
          {ok, map()} | {error, pyexec_rpc:grpc_error()}.
unary(Method, Request, Timeout) ->
    {Path, Def} = definition(Method),
    Options = #{channel => pyexec_config:get(grpcbox_channel)},
    %% ctx and grpcbox are optional: `undef' from either means not installed.
    try grpcbox_client:unary(metadata_ctx(deadline_ctx(Timeout)), Path, Request, Def, Options) of
        {ok, Response, _Meta} ->
            {ok, Response};
        {error, {Status, Message}, _Meta} ->
            {error, {grpc, status(Status), message(Message)}};
        {http_error, {Status, _}, _Meta} ->
            {error, {grpc, unknown, <<"HTTP status ", (to_bin(Status))/binary>>}};
        {error, timeout} ->
            {error, {grpc, deadline_exceeded, <<"deadline exceeded">>}};
        {error, Reason} ->
            {error, {grpc, unavailable, iolist_to_binary(io_lib:format("grpcbox: ~p", [Reason]))}}
    catch
        error:undef:Stack ->
            case Stack of
                [{M, _, _, _} | _] when M =:= grpcbox_client; M =:= ctx; M =:= grpcbox_metadata ->
                    {error, {grpc, unavailable, <<"grpcbox is not installed">>}};
                _ ->
                    erlang:raise(error, undef, Stack)
            end
    end.

%% @doc A server stream through `grpcbox_client:stream/5' (request given,
%% response streamed). Messages are read as `grpcbox_client:recv_data/2'
%% reads them (`{data, StreamId, Msg}' from the stream process, then its
%% 'DOWN' and trailers), in our own receive so that a
%% `{pyexec_stream_ctl, _}' message can end the wait (see
%% pyexec_grpc:stream_recv/2).
%% Unlike the built-in transport, chatterbox reopens the flow-control
%% window as data arrives, whether or not it has been read, so a slow
%% reader does not hold the server back: messages queue in the reader's
%% mailbox.
-spec stream_open(pyexec_rpc:method(), map(), timeout()) ->
          {ok, map()} | {error, pyexec_rpc:grpc_error()}.
stream_open(Method, Request, Timeout) ->
    {Path, Def} = definition(Method),
    Options = #{channel => pyexec_config:get(grpcbox_channel)},
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    try grpcbox_client:stream(metadata_ctx(deadline_ctx(Timeout)), Path, Request, Def, Options) of
        {ok, S} -> {ok, #{s => S, deadline => Deadline}};
        {error, Reason} -> {error, {grpc, unavailable, to_bin(Reason)}}
    catch
        error:undef:Stack ->
            not_installed(Stack)
    end.

-spec stream_recv(map(), timeout()) ->
          {ok, map()} | done | timeout | {error, pyexec_rpc:grpc_error()}.
stream_recv(#{s := S, deadline := Deadline} = St, Wait) ->
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
                        + pyexec_config:get(deadline_grace)
           end,
    W = case {Wait, Left} of
            {infinity, _} -> Left;
            {_, infinity} -> Wait;
            _ -> min(Wait, Left)
        end,
    #{stream_id := Id, stream_pid := Pid, monitor_ref := Ref} = S,
    receive
        {data, Id, Msg} ->
            {ok, Msg};
        {'DOWN', Ref, process, Pid, _Reason} ->
            case grpcbox_client:recv_trailers(S, 0) of
                {ok, {Status, Message, _Meta}} ->
                    case status(Status) of
                        ok -> done;
                        Code -> {error, {grpc, Code, message(Message)}}
                    end;
                {error, _} ->
                    {error, {grpc, unavailable, <<"grpcbox stream ended without trailers">>}}
            end;
        Ctl when element(1, Ctl) =:= pyexec_stream_ctl ->
            {ctl, Ctl}
    after W ->
            case Left =/= infinity andalso W =:= Left of
                true ->
                    stream_cancel(St),
                    {error, {grpc, deadline_exceeded, <<"deadline exceeded">>}};
                false ->
                    timeout
            end
    end.

%% @doc Resets the stream with CANCEL (8) through its chatterbox stream
%% process, so the server interrupts the Python code. grpcbox's client has
%% no cancel of its own. The module is `chatterbox_h2_stream' in
%% ts_chatterbox 0.16 (grpcbox master) and `h2_stream' before (grpcbox
%% 0.17.1 from hex.pm), both with rst_stream/2.
-spec stream_cancel(map()) -> ok.
stream_cancel(#{s := #{stream_pid := Pid, stream_id := Id} = S}) ->
    try chatterbox_h2_stream:rst_stream(Pid, 8)
    catch error:undef -> catch h2_stream:rst_stream(Pid, 8)
    end,
    case S of
        #{monitor_ref := Ref} -> erlang:demonitor(Ref, [flush]);
        _ -> ok
    end,
    flush_data(Id).

flush_data(Id) ->
    receive
        {data, Id, _} -> flush_data(Id);
        {trailers, Id, _} -> flush_data(Id);
        {headers, Id, _} -> flush_data(Id)
    after 0 -> ok
    end.

not_installed([{M, _, _, _} | _] = Stack) ->
    case lists:member(M, [grpcbox_client, ctx, grpcbox_metadata]) of
        true -> {error, {grpc, unavailable, <<"grpcbox is not installed">>}};
        false -> erlang:raise(error, undef, Stack)
    end.

%% grpcbox sends the ctx deadline as grpc-timeout, which is what makes the
%% server interrupt the Python code on timeout. `infinity' must be an
%% explicit infinite deadline: a ctx without one makes grpcbox give up
%% after its own 5 s default while the server keeps running the code.
deadline_ctx(infinity) -> ctx:with_deadline(infinity);
deadline_ctx(Ms) -> ctx:with_deadline_after(Ms, millisecond).

%% The configured `metadata' (e.g. authorization) on every call.
metadata_ctx(Ctx) ->
    case pyexec_config:get(metadata) of
        [] -> Ctx;
        MD -> grpcbox_metadata:append_to_outgoing_ctx(Ctx, maps:from_list(MD))
    end.

status(S) when is_binary(S) -> pyexec_rpc:code(binary_to_integer(S));
status(S) when is_integer(S) -> pyexec_rpc:code(S).

message(undefined) -> <<>>;
message(M) -> pyexec_grpc:percent_decode(to_bin(M)).

to_bin(B) when is_binary(B) -> B;
to_bin(Other) -> iolist_to_binary(io_lib:format("~p", [Other])).
