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
%%
%% Every RPC, unary or streamed, is opened with `grpcbox_client:stream/5'
%% (request given, response streamed) from a call process of its own, never
%% from the caller. grpcbox's stream process sends whoever opened the stream
%% `{headers, Id, _}', `{data, Id, Msg}', `{trailers, Id, _}', `{eos, Id}',
%% `{'END_STREAM', Id}' and then its 'DOWN', whether or not anyone still
%% waits; it does not watch its caller; and when its connection is lost it
%% ends without trailers, which `grpcbox_client:unary/5' then waits out for
%% its whole timeout (forever with `infinity'). The call process takes all
%% of that: it relays the messages, and the outcome, to an alias of the
%% caller, so nothing reaches a caller that stopped waiting; it fails the
%% call with `unavailable' as soon as the stream process ends without a
%% status; and it resets the stream (RST_STREAM CANCEL, so the server
%% interrupts the Python code) when the caller gives up or dies.
%%
%% Run (bidirectional) is opened with `grpcbox_client:stream/4' and fed with
%% `grpcbox_client:send/2' and `close_send/1' by the same call process, at
%% the caller's request. Per-call metadata (x-pyexec-call-id,
%% x-pyexec-callback) goes in the ctx's outgoing metadata; the response
%% headers (x-pyexec-owner) come back with the outcome.
%%
%% The module is also the process that owns the grpcbox channels:
%% start_link/0 starts the channel, and terminate/2 stops it when pyexec
%% stops, so that a restart with other endpoints uses them. With
%% `route_to_owner' it also starts a channel per owner replica (on first
%% use, in the background) and stops those with the others.
-module(pyexec_grpcbox).
-behaviour(gen_server).
-behaviour(pyexec_rpc).

-export([start_link/0, unary/3, call/4, definition/1, channel_endpoints/0,
         stream_open/3, stream_open/4, bidi_open/4, stream_send/2, stream_close_send/1,
         stream_recv/2, stream_cancel/1, owner_ready/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% Same layout as the record in grpcbox/include/grpcbox.hrl.
-record(grpcbox_def, {service :: atom(),
                      message_type = <<>> :: binary(),
                      marshal_fun :: fun((map()) -> binary()),
                      unmarshal_fun :: fun((binary()) -> map())}).

%% A call in flight, as its caller sees it: the call process, the caller's
%% monitor on it, the alias it answers to, and the deadline.
-type call() :: #{pid := pid(), mon := reference(), alias := reference(),
                  deadline := integer() | infinity}.

%% gRPC's CANCEL error code, for RST_STREAM.
-define(CANCEL, 8).

%% ETS: owner replica address -> starting | {ready, ChannelName}.
-define(OWNERS, pyexec_grpcbox_owners).

%%====================================================================
%% The channel
%%====================================================================

%% @doc Starts the grpcbox channel named by `grpcbox_channel' towards the
%% configured endpoints, in a process that stops it again when pyexec
%% stops. A channel of that name that already exists (started by the
%% user's own grpcbox configuration) is used as is, with its own options,
%% and left running.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    case application:ensure_all_started(grpcbox) of
        {ok, _} -> gen_server:start_link({local, ?MODULE}, ?MODULE, [], []);
        {error, Reason} -> {error, {grpcbox_not_available, Reason}}
    end.

%% `sync_start': without it grpcbox registers the channel's endpoints after
%% start_child/3 returns, and calls made in between fail with no_endpoints
%% (with grpcbox 0.17.1 the first call failed in 12 and 17 runs out of 30).
init([]) ->
    %% So that terminate/2 runs when the supervisor stops us.
    process_flag(trap_exit, true),
    Name = pyexec_config:get(grpcbox_channel),
    case start_channel(Name, 50) of
        {ok, Owned} ->
            _ = ets:new(?OWNERS, [named_table, public, set, {read_concurrency, true}]),
            {ok, #{name => Name, owned => Owned, owners => []}};
        {error, Reason} ->
            {stop, Reason}
    end.

%% grpcbox names channels through gproc, which forgets the name of a
%% stopped channel only once it has seen it die: a restart right after a
%% stop can find the old, dead channel still registered for a moment.
start_channel(Name, Tries) ->
    start_channel(Name, channel_endpoints(), Tries).

start_channel(Name, Endpoints, Tries) ->
    case grpcbox_channel_sup:start_child(Name, Endpoints, #{sync_start => true}) of
        {ok, _} ->
            {ok, true};
        {error, {already_started, Pid}} when is_pid(Pid), node(Pid) =:= node() ->
            case is_process_alive(Pid) of
                true -> {ok, false};
                false when Tries > 0 -> timer:sleep(10), start_channel(Name, Endpoints, Tries - 1);
                false -> {error, {channel_still_registered, Name}}
            end;
        {error, {already_started, _}} ->
            {ok, false};
        {error, _} = E ->
            E
    end.

handle_call(_Request, _From, St) ->
    {reply, {error, unknown_request}, St}.

%% A channel to an owner replica, started here so that it belongs to (and
%% stops with) pyexec, and so that a slow start never holds a caller.
handle_cast({start_owner, Address}, #{owners := Owners} = St) ->
    Name = {pyexec_owner, Address},
    {Host, Port} = pyexec_config:endpoint(Address),
    [{Scheme, _, _, Ssl, Settings} | _] = channel_endpoints(),
    case start_channel(Name, [{Scheme, Host, Port, Ssl, Settings}], 50) of
        {ok, _} ->
            ets:insert(?OWNERS, {Address, {ready, Name}}),
            {noreply, St#{owners := [Name | Owners]}};
        {error, _} ->
            ets:delete(?OWNERS, Address),
            {noreply, St}
    end;
handle_cast(_Msg, St) ->
    {noreply, St}.

handle_info(_Msg, St) ->
    {noreply, St}.

%% Calls still in flight on the channel fail with `unavailable' (their
%% stream processes end with it).
terminate(_Reason, #{name := Name, owned := Owned, owners := Owners}) ->
    [_ = (catch grpcbox_channel:stop(N)) || N <- Owners],
    Owned andalso (catch grpcbox_channel:stop(Name)),
    ok.

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
%% The unmarshal function runs in grpcbox's stream process, whose crash
%% would take its HTTP/2 connection (and every call on it) down: a message
%% that does not decode becomes `{pyexec_undecodable, Size}' instead.
-spec definition(pyexec_rpc:method()) -> {binary(), tuple()}.
definition(Method) ->
    {Path, ReqType, RespType} = pyexec_rpc:method(Method),
    Def = #grpcbox_def{service = 'pyexec.v1.PyExec',
                       message_type = atom_to_binary(ReqType, utf8),
                       marshal_fun = fun(Msg) -> iolist_to_binary(pyexec_pb:encode_msg(ReqType, Msg)) end,
                       unmarshal_fun = fun(Bin) ->
                                               try pyexec_pb:decode_msg(RespType, Bin)
                                               catch error:_ -> {pyexec_undecodable, byte_size(Bin)}
                                               end
                                       end},
    {Path, Def}.

%%====================================================================
%% Calls
%%====================================================================

-spec unary(pyexec_rpc:method(), map(), timeout()) ->
          {ok, map()} | {error, pyexec_rpc:grpc_error()}.
unary(Method, Request, Timeout) ->
    case call(Method, Request, Timeout, #{}) of
        {ok, Resp, _Headers} -> {ok, Resp};
        {error, {Tag, E}} when Tag =:= lost; Tag =:= unsent -> {error, E};
        {error, _} = E -> E
    end.

%% @doc One RPC with options (pyexec_rpc:opts()); the response comes with
%% the response headers' metadata.
-spec call(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) ->
          {ok, map(), [{binary(), binary()}]} | {error, term()}.
call(Method, Request, Timeout, Opts) ->
    #{mon := Mon, alias := Alias, deadline := Deadline} = C = start_call(unary, Method, Request,
                                                                          Timeout, Opts),
    receive
        {Alias, Result} ->
            finish(C),
            Result;
        {'DOWN', Mon, process, _, Reason} ->
            erlang:unalias(Alias),
            {error, {grpc, internal, fmt("grpcbox call process exited: ~p", [Reason])}}
    after wait_time(Deadline) ->
            %% The server should have answered DEADLINE_EXCEEDED by now.
            abandon(C),
            {error, {grpc, deadline_exceeded, <<"deadline exceeded (no answer from server)">>}}
    end.

%% @doc A server stream. It is opened in its call process, so this returns
%% at once; a failure to open is the first thing stream_recv/2 returns.
%% Unlike the built-in transport, chatterbox reopens the flow-control
%% window as data arrives, whether or not it has been read, so a slow
%% reader does not hold the server back: messages queue in the call
%% process's and the reader's mailboxes.
-spec stream_open(pyexec_rpc:method(), map(), timeout()) -> {ok, call()}.
stream_open(Method, Request, Timeout) ->
    stream_open(Method, Request, Timeout, #{}).

-spec stream_open(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) -> {ok, call()}.
stream_open(Method, Request, Timeout, Opts) ->
    {ok, start_call(stream, Method, Request, Timeout, Opts)}.

%% @doc A bidirectional stream (Run), opened with its first message.
-spec bidi_open(pyexec_rpc:method(), map(), timeout(), pyexec_rpc:opts()) -> {ok, call()}.
bidi_open(Method, Request, Timeout, Opts) ->
    {ok, start_call(bidi, Method, Request, Timeout, Opts)}.

%% @doc One more request message of a bidi stream (sent by its call
%% process, in order).
-spec stream_send(call(), map()) -> ok.
stream_send(#{pid := Pid, alias := Alias}, Msg) ->
    Pid ! {Alias, {send, Msg}},
    ok.

-spec stream_close_send(call()) -> ok.
stream_close_send(#{pid := Pid, alias := Alias}) ->
    Pid ! {Alias, close_send},
    ok.

%% @doc Whether the channel to an owner replica is there; the first time,
%% it is started (in the background) and false returned.
-spec owner_ready(binary()) -> boolean().
owner_ready(Address) ->
    case catch ets:lookup(?OWNERS, Address) of
        [{_, {ready, _}}] -> true;
        [{_, starting}] -> false;
        [] ->
            case ets:insert_new(?OWNERS, {Address, starting}) of
                true -> gen_server:cast(?MODULE, {start_owner, Address});
                false -> ok
            end,
            false;
        _ -> false
    end.

%% @doc The next message of a stream, as pyexec_grpc:stream_recv/2 (a
%% `{pyexec_stream_ctl, _}' message ends the wait with `{ctl, _}').
-spec stream_recv(call(), timeout()) ->
          {ok, map()} | {done, [{binary(), binary()}]} | timeout | {ctl, term()}
              | {error, term()}.
stream_recv(#{mon := Mon, alias := Alias, deadline := Deadline} = C, Wait) ->
    Left = wait_time(Deadline),
    W = case {Wait, Left} of
            {infinity, _} -> Left;
            {_, infinity} -> Wait;
            _ -> min(Wait, Left)
        end,
    receive
        {Alias, {data, Msg}} ->
            {ok, Msg};
        {Alias, {done, _} = Done} ->
            finish(C),
            Done;
        {Alias, {error, _} = E} ->
            finish(C),
            E;
        {'DOWN', Mon, process, _, Reason} ->
            erlang:unalias(Alias),
            {error, {grpc, internal, fmt("grpcbox call process exited: ~p", [Reason])}};
        Ctl when element(1, Ctl) =:= pyexec_stream_ctl ->
            {ctl, Ctl}
    after W ->
            case Left =/= infinity andalso W =:= Left of
                true ->
                    abandon(C),
                    {error, {grpc, deadline_exceeded, <<"deadline exceeded">>}};
                false ->
                    timeout
            end
    end.

%% @doc Cancels a stream: the call process resets it with CANCEL, so the
%% server interrupts the Python code. Nothing of the stream reaches the
%% caller afterwards.
-spec stream_cancel(call()) -> ok.
stream_cancel(C) ->
    abandon(C).

start_call(Kind, Method, Request, Timeout, Opts) ->
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    Caller = self(),
    %% Explicit: the call process may answer more than once (a stream).
    Alias = erlang:alias([explicit_unalias]),
    Channel = case maps:get(via, Opts, balancer) of
                  balancer -> pyexec_config:get(grpcbox_channel);
                  {owner, Address} -> {pyexec_owner, Address}
              end,
    Args = #{kind => Kind, method => Method, request => Request, deadline => Deadline,
             channel => Channel,
             metadata => pyexec_config:get(metadata) ++ maps:get(metadata, Opts, [])},
    {Pid, Mon} = spawn_monitor(fun() -> call_process(Caller, Alias, Args) end),
    #{pid => Pid, mon => Mon, alias => Alias, deadline => Deadline}.

%% The call ended with an answer: the call process has ended or is ending.
finish(#{mon := Mon, alias := Alias}) ->
    erlang:unalias(Alias),
    erlang:demonitor(Mon, [flush]),
    ok.

%% The caller stops waiting: from now on nothing of the call reaches it,
%% and the call process resets the stream.
abandon(#{pid := Pid, mon := Mon, alias := Alias}) ->
    erlang:unalias(Alias),
    erlang:demonitor(Mon, [flush]),
    Pid ! {Alias, cancel},
    flush(Alias).

flush(Alias) ->
    receive {Alias, _} -> flush(Alias)
    after 0 -> ok
    end.

%% How long the caller waits: past the deadline by `deadline_grace', for
%% the server's DEADLINE_EXCEEDED.
wait_time(infinity) ->
    infinity;
wait_time(Deadline) ->
    max(0, Deadline - erlang:monotonic_time(millisecond)) + pyexec_config:get(deadline_grace).

%%====================================================================
%% The call process
%%====================================================================

call_process(Caller, Alias, #{method := Method, channel := Channel} = Args) ->
    CallerMon = erlang:monitor(process, Caller),
    {Path, Def} = definition(Method),
    Opened = try open_stream(Args, Path, Def, Channel)
             catch
                 error:undef:Stack -> not_installed(Stack);
                 Class:Why -> {error, {Class, Why}}
             end,
    case Opened of
        {ok, Stream} ->
            relay(Stream, Args#{alias => Alias, caller_mon => CallerMon, headers => #{},
                                data => []});
        {error, {grpc, _, _}} = E ->
            Alias ! {Alias, E};
        {error, timeout} ->
            %% grpcbox waited for a connection until the deadline.
            Alias ! {Alias, {error, {grpc, deadline_exceeded, <<"deadline exceeded before sending">>}}};
        {error, Reason} ->
            %% No stream could be opened: the server never saw the call.
            Alias ! {Alias, {error, {unsent, {grpc, unavailable, fmt("grpcbox: ~p", [Reason])}}}}
    end.

%% A unary call or a server stream: request given, response streamed. A
%% bidi stream: opened without a request, which is then sent.
open_stream(#{kind := bidi, request := Request} = Args, Path, Def, Channel) ->
    case grpcbox_client:stream(call_ctx(Args), Path, Def, #{channel => Channel}) of
        {ok, Stream} ->
            ok = grpcbox_client:send(Stream, Request),
            {ok, Stream};
        {error, _} = E ->
            E
    end;
open_stream(#{request := Request} = Args, Path, Def, Channel) ->
    grpcbox_client:stream(call_ctx(Args), Path, Request, Def, #{channel => Channel}).

%% ctx and grpcbox are optional: `undef' from them means not installed.
not_installed([{M, _, _, _} | _] = Stack) ->
    case lists:member(M, [grpcbox_client, ctx, grpcbox_metadata]) of
        true -> {error, {grpc, unavailable, <<"grpcbox is not installed">>}};
        false -> erlang:raise(error, undef, Stack)
    end.

%% grpcbox sends the ctx deadline as grpc-timeout, which is what makes the
%% server interrupt the Python code on timeout. `infinity' is an explicit
%% infinite deadline. The configured `metadata' (e.g. authorization) goes
%% out on every call.
call_ctx(#{deadline := Deadline, metadata := MD}) ->
    Ctx = case Deadline of
              infinity -> ctx:with_deadline(infinity);
              _ -> ctx:with_deadline_after(max(0, Deadline - erlang:monotonic_time(millisecond)),
                                           millisecond)
          end,
    case MD of
        [] -> Ctx;
        _ -> grpcbox_metadata:append_to_outgoing_ctx(Ctx, maps:from_list(MD))
    end.

%% Takes what grpcbox's stream process sends, until the call's outcome is
%% known; messages after that (eos, 'END_STREAM', 'DOWN') die with this
%% process. A stream's messages are relayed as they come; a unary call's
%% response is kept for the outcome.
relay(#{stream_id := Id, stream_pid := Pid, monitor_ref := Ref} = S,
      #{alias := Alias, caller_mon := CallerMon} = St) ->
    receive
        {headers, Id, Headers} ->
            relay(S, St#{headers := Headers});
        {Alias, {send, Msg}} ->
            ok = grpcbox_client:send(S, Msg),
            relay(S, St);
        {Alias, close_send} ->
            ok = grpcbox_client:close_send(S),
            relay(S, St);
        {data, Id, {pyexec_undecodable, _}} ->
            reset(Pid),
            Alias ! {Alias, {error, {grpc, internal, <<"cannot parse response message">>}}};
        {data, Id, Msg} ->
            case St of
                #{kind := unary, data := Data} ->
                    relay(S, St#{data := [Msg | Data]});
                _ ->
                    Alias ! {Alias, {data, Msg}},
                    relay(S, St)
            end;
        {trailers, Id, {Status, Message, _Meta}} ->
            %% grpcbox gives the raw headers' values, or undefined.
            Trailers = [{K, V} || {K, V} <- [{<<"grpc-status">>, Status},
                                             {<<"grpc-message">>, Message}],
                                  is_binary(V)],
            Alias ! {Alias, outcome(St, Trailers)};
        {eos, Id} ->
            %% The response ended without a grpc-status: the HTTP status
            %% tells why.
            Alias ! {Alias, outcome(St, [])};
        {'DOWN', Ref, process, Pid, Reason} ->
            %% Ended without a status: the server may have run the call.
            Alias ! {Alias, {error, {lost, {grpc, unavailable,
                                            fmt("connection to the server lost (~p)", [Reason])}}}};
        {Alias, cancel} ->
            reset(Pid);
        {'DOWN', CallerMon, process, _, _} ->
            reset(Pid)
    end.

outcome(#{kind := Kind, headers := Headers, data := Data}, Trailers) ->
    Meta = [{K, V} || {K, V} <- maps:to_list(Headers), is_binary(V)],
    case {pyexec_grpc:decode_status(maps:to_list(Headers), Trailers), Kind, Data} of
        {ok, unary, [Msg]} -> {ok, Msg, Meta};
        {ok, unary, []} -> {error, {grpc, internal, <<"OK status without a response message">>}};
        {ok, unary, _} -> {error, {grpc, internal, <<"more than one response message">>}};
        {ok, _, _} -> {done, Meta};
        {{error, _} = E, _, _} -> E
    end.

%% RST_STREAM CANCEL through the chatterbox stream process; grpcbox's
%% client has no cancel of its own. The module is `h2_stream' in
%% ts_chatterbox 0.15 (grpcbox 0.17.1 from hex.pm) and
%% `chatterbox_h2_stream' in 0.16 (grpcbox master), both with
%% rst_stream/2.
reset(Pid) ->
    try chatterbox_h2_stream:rst_stream(Pid, ?CANCEL)
    catch error:undef -> h2_stream:rst_stream(Pid, ?CANCEL)
    end,
    ok.

fmt(F, A) -> iolist_to_binary(io_lib:format(F, A)).
