%% @doc One HTTP/2 connection to a pyexec endpoint, carrying many concurrent
%% gRPC unary calls.
%%
%% The process owns the socket and the two HPACK contexts; callers never touch
%% them. A caller (pyexec_grpc) encodes its protobuf message itself, sends a
%% `pyexec_req' message here, and waits on an alias of its monitor on this
%% process. This process opens a stream, writes HEADERS (+CONTINUATION) and
%% DATA within the peer's flow-control windows, collects the response and
%% sends it back through the alias. Because the reply goes to an alias, a
%% caller that already gave up never receives a stale message.
%%
%% Failure handling:
%% - A lost connection fails its in-flight streams at once with
%%   `{error, {closed, Reason}}' and reconnects with exponential backoff and
%%   jitter. While it is down, new calls fail fast with `{error, {unavailable,
%%   Reason}}' so that pyexec_grpc can pick another connection.
%% - GOAWAY fails the streams the server did not process with `{error,
%%   {refused, _}}' (safe to retry), lets the others finish, then reconnects
%%   at once; calls arriving meanwhile are queued, not failed.
%% - A caller that dies or times out gets its stream reset with CANCEL, so
%%   the server interrupts the Python code it was running.
%%
%% Server streams (Path given as `{stream, Path}'): each complete gRPC
%% message is sent to the caller as `{Reply, {message, Bin, Octets}}' as soon as it
%% arrives, and the end as `{Reply, {trailers, Headers, Trailers}}' (or
%% `{Reply, {error, _}}' as for unary calls). The stream's receive window is
%% only reopened (WINDOW_UPDATE) when the caller reports with
%% `{pyexec_ack, Reply, Octets}' that it has taken messages, so a slow
%% consumer stops the server after one window (`window_size') of unread
%% data, which in turn blocks the Python code producing it. The caller
%% cancels with `{pyexec_cancel, Reply}' (RST_STREAM CANCEL).
%%
%% Path is `Path' (unary), `{stream, Path}' (server stream) or
%% `{Mode, Path, Metadata}' with Mode `unary', `stream' or `bidi' and
%% Metadata extra request headers of this call only (values that change
%% from call to call are kept out of the HPACK dynamic table). A `bidi'
%% stream receives as a server stream, but its request side stays open
%% after Body: `{pyexec_send, Reply, Body}' sends more (a caller's sends
%% go out in order, also while the request still waits for a stream), and
%% `{pyexec_close_send, Reply}' ends the request side (END_STREAM).
-module(pyexec_conn).
-behaviour(gen_server).

-export([start_link/2, status/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2]).

-include("pyexec_h2.hrl").

-define(TABLE, pyexec_conns).
-define(USER_AGENT, <<"pyexec-erlang/0.1.0">>).
%% Our SETTINGS_MAX_FRAME_SIZE: larger than the default so big responses
%% cost fewer frames.
-define(OUR_MAX_FRAME, 65536).

-record(stream, {
          reply :: reference(),                  % caller's monitor alias
          caller_mon :: reference(),             % our monitor on the caller
          send_window :: integer(),
          out = <<>> :: binary(),                % body not yet sent (flow control)
          headers = undefined :: undefined | [pyexec_hpack:header()],
          data = [] :: [binary()],               % DATA payloads, reversed
          size = 0 :: non_neg_integer(),
          unacked = 0 :: non_neg_integer(),      % received, not yet WINDOW_UPDATEd
          mode = unary :: unary | stream,
          fin = true :: boolean(),               % END_STREAM once `out' is sent
          fin_sent = false :: boolean(),
          msgbuf = <<>> :: binary(),             % stream: partial gRPC message
          early = 0 :: non_neg_integer()         % stream: octets of msgbuf acked early
         }).

-record(s, {
          index :: pos_integer() | {owner, binary()},
          host :: string(),
          port :: inet:port_number(),
          tls :: false | list(),
          cfg :: map(),
          mod = gen_tcp :: gen_tcp | ssl,
          sock = undefined :: term(),
          status = down :: down | up | draining,
          last_error = <<"not connected yet">> :: binary(),
          backoff :: pos_integer(),
          buf = <<>> :: binary(),
          enc :: pyexec_hpack:encoder(),
          dec :: pyexec_hpack:decoder(),
          next_id = 1 :: pos_integer(),
          streams = #{} :: #{pos_integer() => #stream{}},
          %% Caller alias or our monitor on the caller -> its stream id, or
          %% `queued' for a request still waiting for a stream.
          refs = #{} :: #{reference() => pos_integer() | queued},
          queue = queue:new() :: queue:queue(tuple()),    % requests waiting for a stream
          %% Peer settings and our send windows.
          max_streams = infinity :: non_neg_integer() | infinity,
          peer_window = ?DEFAULT_WINDOW :: non_neg_integer(),
          max_frame = ?DEFAULT_MAX_FRAME :: pos_integer(),
          send_window = ?DEFAULT_WINDOW :: integer(),
          blocked = [] :: [pos_integer()],              % streams with unsent body
          %% Receive side.
          stream_window :: pos_integer(),               % our initial stream window
          conn_window :: pos_integer(),                 % our connection window
          conn_unacked = 0 :: non_neg_integer(),
          cont = undefined :: undefined | {pos_integer(), byte(), [binary()]},
          %% Keepalive: the payload of an unanswered PING, if any.
          ping = undefined :: undefined | binary(),
          scheme :: binary(),
          authority :: binary(),
          %% Since when an owner replica's connection has failed to connect.
          down_since = undefined :: undefined | integer(),
          %% The server has sent its SETTINGS on this connection.
          settled = false :: boolean()
         }).

%% An owner replica's connection that cannot connect for this long stops.
-define(OWNER_GIVE_UP_MS, 60000).

%%====================================================================
%% API
%%====================================================================

-spec start_link(pos_integer() | {owner, binary()}, {string(), inet:port_number()}) -> {ok, pid()}.
start_link(Index, Endpoint) ->
    gen_server:start_link(?MODULE, {Index, Endpoint}, []).

%% @doc Connection state, for tests and debugging.
-spec status(pid()) -> map().
status(Pid) ->
    gen_server:call(Pid, status).

%%====================================================================
%% gen_server
%%====================================================================

init({Index, {Host, Port}}) ->
    %% Trap exits so terminate/2 runs on shutdown and says GOAWAY politely.
    process_flag(trap_exit, true),
    Cfg = pyexec_config:all(),
    Tls = case maps:get(tls, Cfg) of
              false -> false;
              true -> [];
              Opts -> Opts
          end,
    Window = maps:get(window_size, Cfg),
    Authority = case maps:get(authority, Cfg) of
                    undefined -> iolist_to_binary([authority_host(Host), $:, integer_to_list(Port)]);
                    A -> A
                end,
    S = #s{index = Index, host = Host, port = Port, tls = Tls, cfg = Cfg,
           backoff = maps:get(reconnect_backoff_min, Cfg),
           enc = pyexec_hpack:new_encoder(), dec = pyexec_hpack:new_decoder(),
           stream_window = Window,
           %% Twice the stream window lets two large responses flow at once,
           %% but no flow-control window may exceed 2^31-1 (RFC 9113 6.9.1).
           conn_window = min(2 * Window, ?MAX_WINDOW),
           scheme = case Tls of false -> <<"http">>; _ -> <<"https">> end,
           authority = Authority},
    publish(S),
    schedule_keepalive(Cfg),
    {ok, S, {continue, connect}}.

handle_continue(connect, S) ->
    {noreply, connect(S)}.

handle_call(status, _From, S) ->
    {reply, #{status => S#s.status, streams => maps:size(S#s.streams),
              queued => queue:len(S#s.queue), last_error => S#s.last_error,
              max_streams => S#s.max_streams, send_window => S#s.send_window,
              endpoint => {S#s.host, S#s.port}}, S}.

handle_cast(_Msg, S) ->
    {noreply, S}.

handle_info({pyexec_req, _Reply, _Caller, _Path, _Body, _Deadline} = Req, S) ->
    {noreply, finish_drain(submit(Req, S))};
handle_info({pyexec_ack, Reply, Octets}, S) ->
    {noreply, ack_stream(Reply, Octets, S)};
handle_info({pyexec_send, Reply, Body}, S) ->
    {noreply, send_more(Reply, Body, false, S)};
handle_info({pyexec_close_send, Reply}, S) ->
    {noreply, send_more(Reply, <<>>, true, S)};
handle_info({pyexec_cancel, Reply}, S) ->
    {noreply, finish_drain(cancel(Reply, S))};
handle_info({'DOWN', Mon, process, _, _}, S) ->
    %% A caller died mid-call: reset its stream so the server stops the work.
    {noreply, finish_drain(cancel(Mon, S))};
handle_info({Tag, Sock, Data}, #s{sock = Sock} = S) when Tag =:= tcp; Tag =:= ssl ->
    recv(Data, S);
handle_info({Tag, Sock}, #s{sock = Sock, mod = Mod} = S) when Tag =:= tcp_passive; Tag =:= ssl_passive ->
    ok = setopts(Mod, Sock, [{active, 100}]),
    {noreply, S};
handle_info({Tag, Sock}, #s{sock = Sock} = S) when Tag =:= tcp_closed; Tag =:= ssl_closed ->
    {noreply, disconnect(<<"connection closed by server">>, S)};
handle_info({Tag, Sock, Reason}, #s{sock = Sock} = S) when Tag =:= tcp_error; Tag =:= ssl_error ->
    {noreply, disconnect(fmt("socket error: ~p", [Reason]), S)};
handle_info(reconnect, S) ->
    {noreply, connect(S)};
handle_info(give_up, #s{status = down} = S) ->
    {stop, normal, S};
handle_info(keepalive, S) ->
    schedule_keepalive(S#s.cfg),
    {noreply, keepalive(S)};
handle_info(_Other, S) ->
    %% Late socket messages from a closed socket end here.
    {noreply, S}.

terminate(_Reason, S) ->
    case S#s.sock of
        undefined -> ok;
        Sock ->
            _ = (S#s.mod):send(Sock, pyexec_h2_frame:goaway(0, 0, <<>>)),
            (S#s.mod):close(Sock)
    end,
    ets:delete(?TABLE, S#s.index),
    ok.

%%====================================================================
%% Connection management
%%====================================================================

connect(#s{host = Host, port = Port, tls = Tls, cfg = Cfg} = S0) ->
    S = S0#s{status = down},
    Timeout = maps:get(connect_timeout, Cfg),
    Base = [binary, {active, false}, {nodelay, true}, {keepalive, true}],
    Result = case Tls of
                 false ->
                     wrap(gen_tcp, gen_tcp:connect(Host, Port, Base, Timeout));
                 TlsOpts ->
                     tls_connect(Host, Port, Base, TlsOpts, Timeout)
             end,
    case Result of
        {ok, Mod, Sock} ->
            Window = S#s.stream_window,
            Preface = [pyexec_h2_frame:preface(),
                       pyexec_h2_frame:settings(
                         [{?SETTINGS_ENABLE_PUSH, 0},
                          {?SETTINGS_INITIAL_WINDOW_SIZE, Window},
                          {?SETTINGS_MAX_FRAME_SIZE, ?OUR_MAX_FRAME}]),
                       pyexec_h2_frame:window_update(0, S#s.conn_window - ?DEFAULT_WINDOW)],
            case Mod:send(Sock, Preface) of
                ok ->
                    ok = setopts(Mod, Sock, [{active, 100}]),
                    S1 = S#s{mod = Mod, sock = Sock, status = up, buf = <<>>,
                             enc = pyexec_hpack:new_encoder(), dec = pyexec_hpack:new_decoder(),
                             next_id = 1, max_streams = infinity,
                             peer_window = ?DEFAULT_WINDOW, max_frame = ?DEFAULT_MAX_FRAME,
                             send_window = ?DEFAULT_WINDOW, blocked = [],
                             conn_unacked = 0, settled = false,
                             cont = undefined, ping = undefined},
                    publish(S1),
                    drain_queue(S1#s{down_since = undefined});
                {error, Reason} ->
                    Mod:close(Sock),
                    connect_failed(Reason, S)
            end;
        {error, Reason} ->
            connect_failed(Reason, S)
    end.

wrap(Mod, {ok, Sock}) -> {ok, Mod, Sock};
wrap(_Mod, {error, _} = E) -> E.

tls_connect(Host, Port, Base, TlsOpts, Timeout) ->
    %% ssl is an optional application: start it on first use.
    case application:ensure_all_started(ssl) of
        {ok, _} ->
            Opts = Base ++ [{alpn_advertised_protocols, [<<"h2">>]} | TlsOpts],
            case ssl:connect(Host, Port, Opts, Timeout) of
                {ok, Sock} ->
                    case ssl:negotiated_protocol(Sock) of
                        {ok, <<"h2">>} -> {ok, ssl, Sock};
                        Other ->
                            ssl:close(Sock),
                            {error, {alpn_not_h2, Other}}
                    end;
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

connect_failed(Reason, #s{cfg = Cfg, backoff = Backoff} = S) ->
    Msg = fmt("cannot connect to ~s:~b: ~p", [S#s.host, S#s.port, Reason]),
    S1 = fail_queue(Msg, S#s{sock = undefined, status = down, last_error = Msg}),
    publish(S1),
    %% Jitter of +-20% keeps many clients from reconnecting in lockstep.
    Delay = round(Backoff * (0.8 + 0.4 * rand:uniform())),
    Next = min(Backoff * 2, maps:get(reconnect_backoff_max, Cfg)),
    erlang:send_after(Delay, self(), reconnect),
    Now = erlang:monotonic_time(millisecond),
    case {S#s.index, S#s.down_since} of
        {{owner, _}, undefined} -> S1#s{backoff = Next, down_since = Now};
        {{owner, _}, Since} when Now - Since > ?OWNER_GIVE_UP_MS -> self() ! give_up, S1;
        _ -> S1#s{backoff = Next}
    end.

%% The connection is gone: fail what was in flight and reconnect. After a
%% graceful GOAWAY we reconnect at once and keep queued calls; otherwise the
%% backoff applies and queued calls fail.
disconnect(Reason, #s{mod = Mod, sock = Sock} = S0) ->
    _ = case Sock of undefined -> ok; _ -> Mod:close(Sock) end,
    Graceful = S0#s.status =:= draining,
    S1 = maps:fold(fun(_Id, St, Acc) ->
                           reply(St, {error, {closed, Reason}}),
                           demonitor(St#stream.caller_mon, [flush]),
                           Acc
                   end, S0, S0#s.streams),
    S = S1#s{sock = undefined, streams = #{}, refs = refs_without_streams(S1), blocked = [],
             status = down, last_error = Reason},
    publish(S),
    case Graceful of
        true -> connect(S);
        false -> connect_failed(Reason, S)
    end.

%% After a disconnect the only refs left are those of queued requests.
refs_without_streams(#s{queue = Q}) ->
    maps:from_list([{element(2, R), queued} || R <- queue:to_list(Q)]).

%% A connection to an owner replica counts as up once the server has
%% answered (its SETTINGS): routing prefers the balancer until then, so that
%% an address that accepts and drops connections is never chosen.
publish(#s{index = I, status = Status, settled = Settled}) ->
    ets:insert(?TABLE, {I, self(), Status =:= up andalso (is_integer(I) orelse Settled)}).

%% Connection-level protocol error: tell the server why, then drop it.
conn_error(Code, Why, #s{mod = Mod, sock = Sock} = S) ->
    %% Last stream id 0: the server never opens streams towards us.
    _ = Mod:send(Sock, pyexec_h2_frame:goaway(0, pyexec_h2_frame:error_code(Code), fmt("~p", [Why]))),
    %% status = up so that disconnect/2 applies the backoff, as after any
    %% failure (only a server's GOAWAY counts as a graceful drain).
    disconnect(fmt("HTTP/2 ~s: ~p", [Code, Why]), S#s{status = up}).

%%====================================================================
%% Sending requests
%%====================================================================

submit({pyexec_req, Reply, _Caller, _Path, _Body, _Deadline} = Req, #s{status = Status} = S) ->
    case Status of
        down ->
            Reply ! {Reply, {error, {unavailable, S#s.last_error}}},
            S;
        draining ->
            enqueue(Req, S);
        up ->
            case can_open(S) of
                true -> open_stream(Req, S);
                false -> enqueue(Req, S)
            end
    end.

can_open(#s{streams = Streams, max_streams = Max}) ->
    Max =:= infinity orelse maps:size(Streams) < Max.

enqueue({pyexec_req, Reply, _, _, _, _} = Req, #s{queue = Q, refs = Refs} = S) ->
    S#s{queue = queue:in(Req, Q), refs = Refs#{Reply => queued}}.

open_stream({pyexec_req, Reply, Caller, Path, Body, Deadline} = Req, S) ->
    case remaining(Deadline) of
        expired ->
            Reply ! {Reply, {error, deadline}},
            S;
        Timeout ->
            Id = S#s.next_id,
            case Id > ?MAX_STREAM_ID of
                true ->
                    %% Out of stream ids: finish this connection gracefully
                    %% and continue on a fresh one.
                    start_draining(enqueue(Req, S));
                false ->
                    send_request(Id, Reply, Caller, Path, Body, Timeout, S)
            end
    end.

send_request(Id, Reply, Caller, {stream, Path}, Body, Timeout, S) ->
    send_request(Id, Reply, Caller, {stream, Path, []}, Body, Timeout, S);
send_request(Id, Reply, Caller, Path, Body, Timeout, S) when is_binary(Path) ->
    send_request(Id, Reply, Caller, {unary, Path, []}, Body, Timeout, S);
send_request(Id, Reply, Caller, {Mode, Path, Meta}, Body, Timeout, #s{cfg = Cfg} = S) ->
    Headers = [{<<":method">>, <<"POST">>},
               {<<":scheme">>, S#s.scheme},
               {<<":path">>, Path},
               {<<":authority">>, S#s.authority},
               {<<"content-type">>, <<"application/grpc">>},
               {<<"te">>, <<"trailers">>},
               {<<"user-agent">>, ?USER_AGENT},
               {<<"grpc-accept-encoding">>, <<"identity">>}
               | timeout_header(Timeout) ++ maps:get(metadata, Cfg)
               ++ [{K, V, no_index} || {K, V} <- Meta]],
    {Block, Enc} = pyexec_hpack:encode(Headers, S#s.enc),
    HeaderFrames = pyexec_h2_frame:headers(Id, iolist_to_binary(Block), false, S#s.max_frame),
    St0 = #stream{reply = Reply, caller_mon = erlang:monitor(process, Caller),
                  send_window = S#s.peer_window, out = iolist_to_binary(Body),
                  mode = case Mode of unary -> unary; _ -> stream end,
                  fin = Mode =/= bidi},
    {DataFrames, St, SendWindow} = take_data(Id, St0, S#s.send_window, S#s.max_frame),
    S1 = S#s{enc = Enc, next_id = Id + 2, send_window = SendWindow,
             streams = (S#s.streams)#{Id => St},
             refs = (S#s.refs)#{Reply => Id, St#stream.caller_mon => Id},
             blocked = case St#stream.out of
                           <<>> when St#stream.fin_sent orelse not St#stream.fin -> S#s.blocked;
                           _ -> S#s.blocked ++ [Id]
                       end},
    send([HeaderFrames | DataFrames], S1).

%% grpc-timeout must be at most 8 digits (gRPC over HTTP/2 spec); fall back
%% to coarser units for long timeouts. It changes on every call, so it is
%% kept out of the HPACK dynamic table.
timeout_header(infinity) -> [];
timeout_header(Ms) ->
    Value = if Ms < 100000000 -> [integer_to_list(Ms), $m];
               Ms div 1000 < 100000000 -> [integer_to_list(Ms div 1000), $S];
               true -> [integer_to_list(min(Ms div 3600000, 99999999)), $H]
            end,
    [{<<"grpc-timeout">>, iolist_to_binary(Value), no_index}].

remaining(infinity) -> infinity;
remaining(Deadline) ->
    case Deadline - erlang:monotonic_time(millisecond) of
        Ms when Ms > 0 -> Ms;
        _ -> expired
    end.

%% Cuts as much of the stream's pending body into DATA frames as the stream
%% window, the connection window and the peer's frame size allow. The last
%% frame carries END_STREAM once the request side is closed (`fin'); a
%% close with nothing left to send is an empty DATA frame with END_STREAM.
take_data(_Id, #stream{fin_sent = true} = St, ConnW, _MaxFrame) ->
    {[], St, ConnW};
take_data(Id, #stream{out = <<>>, fin = true} = St, ConnW, _MaxFrame) ->
    {[pyexec_h2_frame:data(Id, <<>>, true)], St#stream{fin_sent = true}, ConnW};
take_data(Id, #stream{out = Out, send_window = SW, fin = Fin} = St, ConnW, MaxFrame) ->
    take_data(Id, Out, SW, ConnW, MaxFrame, Fin, [], St).

take_data(_Id, <<>>, SW, CW, _MF, Fin, Acc, St) ->
    {lists:reverse(Acc), St#stream{out = <<>>, send_window = SW, fin_sent = Fin}, CW};
take_data(Id, Out, SW, CW, MF, Fin, Acc, St) when SW > 0, CW > 0 ->
    N = lists:min([byte_size(Out), SW, CW, MF]),
    <<Chunk:N/binary, Rest/binary>> = Out,
    Frame = pyexec_h2_frame:data(Id, Chunk, Fin andalso Rest =:= <<>>),
    take_data(Id, Rest, SW - N, CW - N, MF, Fin, [Frame | Acc], St);
take_data(_Id, Out, SW, CW, _MF, _Fin, Acc, St) ->
    {lists:reverse(Acc), St#stream{out = Out, send_window = SW}, CW}.

%% More of a bidi stream's request (Fin: and then END_STREAM). A request
%% still queued for a stream gets it appended.
send_more(Reply, Body, Fin, #s{refs = Refs} = S) ->
    case Refs of
        #{Reply := queued} ->
            Q = queue:filter(
                  fun({pyexec_req, R, Caller, {bidi, Path, Meta}, B, D}) when R =:= Reply ->
                          Mode = case Fin of true -> stream; false -> bidi end,
                          [{pyexec_req, R, Caller, {Mode, Path, Meta}, [B, Body], D}];
                     (_) -> true
                  end, S#s.queue),
            S#s{queue = Q};
        #{Reply := Id} when is_integer(Id) ->
            case S#s.streams of
                #{Id := #stream{fin = false, out = Out} = St} ->
                    St1 = St#stream{out = <<Out/binary, (iolist_to_binary(Body))/binary>>, fin = Fin},
                    push_data(Id, S#s{streams = (S#s.streams)#{Id := St1}});
                _ ->
                    S
            end;
        _ ->
            S
    end.

%% Sends what the windows allow of one stream now; the rest waits in
%% `blocked' for WINDOW_UPDATEs.
push_data(Id, #s{streams = Streams, blocked = Blocked} = S) ->
    case lists:member(Id, Blocked) of
        true ->
            flush_blocked(S);
        false ->
            #{Id := St} = Streams,
            {Frames, St1, CW} = take_data(Id, St, S#s.send_window, S#s.max_frame),
            S1 = S#s{send_window = CW, streams = Streams#{Id := St1},
                     blocked = case St1#stream.out of
                                   <<>> when St1#stream.fin_sent orelse not St1#stream.fin -> Blocked;
                                   _ -> Blocked ++ [Id]
                               end},
            send(Frames, S1)
    end.

%% Sends what the windows now allow for blocked streams, oldest first.
flush_blocked(#s{blocked = []} = S) ->
    S;
flush_blocked(#s{blocked = Blocked} = S0) ->
    {Frames, Still, S} =
        lists:foldl(
          fun(Id, {FAcc, BAcc, S1}) ->
                  case S1#s.streams of
                      #{Id := St} when S1#s.send_window > 0 ->
                          {F, St1, CW} = take_data(Id, St, S1#s.send_window, S1#s.max_frame),
                          B = case St1#stream.out of
                                  <<>> when St1#stream.fin_sent orelse not St1#stream.fin -> BAcc;
                                  _ -> [Id | BAcc]
                              end,
                          {[F | FAcc], B,
                           S1#s{send_window = CW, streams = (S1#s.streams)#{Id := St1}}};
                      #{Id := _} ->
                          {FAcc, [Id | BAcc], S1};
                      _ ->
                          {FAcc, BAcc, S1}
                  end
          end, {[], [], S0}, Blocked),
    send(lists:reverse(Frames), S#s{blocked = lists:reverse(Still)}).

send(IoData, #s{mod = Mod, sock = Sock} = S) ->
    case Mod:send(Sock, IoData) of
        ok -> S;
        {error, Reason} -> disconnect(fmt("send failed: ~p", [Reason]), S)
    end.

cancel(Ref, #s{refs = Refs} = S) ->
    case Refs of
        #{Ref := queued} ->
            Q = queue:filter(fun(R) -> element(2, R) =/= Ref end, S#s.queue),
            S#s{queue = Q, refs = maps:remove(Ref, Refs)};
        #{Ref := Id} ->
            reset(Id, cancel, S);
        _ ->
            S
    end.

%% Forgets a stream and tells the server with RST_STREAM, so that it stops
%% the Python code serving it.
reset(Id, Code, S0) ->
    S = remove_stream(Id, S0),
    case S#s.sock of
        undefined -> S;
        _ -> drain_queue(send(pyexec_h2_frame:rst_stream(Id, pyexec_h2_frame:error_code(Code)), S))
    end.

%% Opens streams for queued requests while there is room.
drain_queue(#s{status = up} = S) ->
    case can_open(S) andalso queue:out(S#s.queue) of
        {{value, {pyexec_req, Reply, _, _, _, _} = Req}, Q} ->
            S1 = S#s{queue = Q, refs = maps:remove(Reply, S#s.refs)},
            drain_queue(open_stream(Req, S1));
        _ ->
            S
    end;
drain_queue(S) ->
    S.

fail_queue(Msg, #s{queue = Q, refs = Refs} = S) ->
    Refs1 = lists:foldl(fun({pyexec_req, Reply, _, _, _, _}, R) ->
                                Reply ! {Reply, {error, {unavailable, Msg}}},
                                maps:remove(Reply, R)
                        end, Refs, queue:to_list(Q)),
    S#s{queue = queue:new(), refs = Refs1}.

%%====================================================================
%% Receiving frames
%%====================================================================

recv(Data, #s{buf = Buf} = S) ->
    frames(<<Buf/binary, Data/binary>>, S).

frames(Buf, S) ->
    case pyexec_h2_frame:parse(Buf, ?OUR_MAX_FRAME) of
        {ok, Frame, Rest} ->
            Sock = S#s.sock,
            case finish_drain(frame(Frame, S)) of
                #s{sock = Sock} = S1 -> frames(Rest, S1);
                S1 -> {noreply, S1}    % dropped or replaced: Rest is stale
            end;
        more ->
            {noreply, S#s{buf = Buf}};
        {error, Code} ->
            {noreply, conn_error(Code, oversized_frame, S)}
    end.

%% While a header block is open, only its CONTINUATION frames may arrive.
frame({?CONTINUATION, Flags, Id, Frag}, #s{cont = {Id, HFlags, Acc}} = S) ->
    case Flags band ?END_HEADERS of
        0 -> S#s{cont = {Id, HFlags, [Frag | Acc]}};
        _ -> header_block(Id, HFlags, iolist_to_binary(lists:reverse([Frag | Acc])),
                          S#s{cont = undefined})
    end;
frame(_Frame, #s{cont = {_, _, _}} = S) ->
    conn_error(protocol_error, expected_continuation, S);
frame({?DATA, _Flags, 0, _}, S) ->
    conn_error(protocol_error, data_on_stream_0, S);
frame({?DATA, Flags, Id, Payload}, S) ->
    data_frame(Id, Flags, Payload, S);
frame({?HEADERS, Flags, Id, Payload}, S) ->
    case pyexec_h2_frame:strip_padding(Flags, Payload) of
        {ok, P1} ->
            case pyexec_h2_frame:strip_priority(Flags, P1) of
                {ok, Frag} when Flags band ?END_HEADERS =/= 0 ->
                    header_block(Id, Flags, Frag, S);
                {ok, Frag} ->
                    S#s{cont = {Id, Flags, [Frag]}};
                {error, Code} ->
                    conn_error(Code, bad_headers_frame, S)
            end;
        {error, Code} ->
            conn_error(Code, bad_padding, S)
    end;
frame({?RST_STREAM, _, Id, <<Code:32>>}, S) ->
    case S#s.streams of
        #{Id := St} ->
            Err = case pyexec_h2_frame:error_name(Code) of
                      refused_stream -> {refused, <<"stream refused by server">>};
                      Name -> {rst_stream, Name}
                  end,
            reply(St, {error, Err}),
            drain_queue(remove_stream(Id, S));
        _ ->
            S
    end;
frame({?SETTINGS, Flags, 0, _}, S) when Flags band ?ACK =/= 0 ->
    S;
frame({?SETTINGS, _, 0, Payload}, S) ->
    case pyexec_h2_frame:parse_settings(Payload) of
        {ok, Pairs} -> apply_settings(Pairs, S);
        {error, Code} -> conn_error(Code, bad_settings, S)
    end;
frame({?PING, Flags, 0, <<Opaque:8/binary>>}, S) ->
    case Flags band ?ACK of
        0 -> send(pyexec_h2_frame:ping_ack(Opaque), S);
        _ when S#s.ping =:= Opaque -> S#s{ping = undefined};
        _ -> S
    end;
frame({?GOAWAY, _, 0, <<_:1, LastId:31, Code:32, Debug/binary>>}, S) ->
    goaway(LastId, Code, Debug, S);
frame({?WINDOW_UPDATE, _, Id, <<_:1, Inc:31>>}, S) ->
    window_update(Id, Inc, S);
frame({?PUSH_PROMISE, _, _, _}, S) ->
    conn_error(protocol_error, push_promise_while_disabled, S);
frame({Type, _, _, _}, S) when Type =:= ?SETTINGS; Type =:= ?PING; Type =:= ?GOAWAY;
                               Type =:= ?WINDOW_UPDATE; Type =:= ?RST_STREAM ->
    conn_error(frame_size_error, {malformed_frame, Type}, S);
frame(_Unknown, S) ->
    %% PRIORITY and unknown frame types are ignored (RFC 9113 section 4.1).
    S.

data_frame(Id, Flags, Payload, #s{conn_unacked = CU} = S0) ->
    Len = byte_size(Payload),
    %% Flow control counts the whole payload, padding included, and applies
    %% even to streams we have already forgotten.
    S = ack_connection(S0#s{conn_unacked = CU + Len}),
    case S#s.streams of
        #{Id := #stream{mode = stream} = St} ->
            case pyexec_h2_frame:strip_padding(Flags, Payload) of
                {ok, Data} -> stream_data(Id, Flags, Len - byte_size(Data), Data, St, S);
                {error, Code} -> conn_error(Code, bad_padding, S)
            end;
        #{Id := St} ->
            case pyexec_h2_frame:strip_padding(Flags, Payload) of
                {ok, Data} ->
                    Size = St#stream.size + byte_size(Data),
                    Max = maps:get(max_message_size, S#s.cfg) + 5,
                    St1 = St#stream{data = [Data | St#stream.data], size = Size,
                                    unacked = St#stream.unacked + Len},
                    if
                        Size > Max ->
                            reply(St, {error, {too_large, Size}}),
                            reset(Id, cancel, S);
                        Flags band ?END_STREAM =/= 0 ->
                            %% A response must end with trailers; ending on
                            %% DATA leaves the call without a status.
                            reply(St1, {error, {protocol, <<"stream ended without trailers">>}}),
                            drain_queue(remove_stream(Id, S));
                        St1#stream.unacked >= S#s.stream_window div 2 ->
                            S1 = S#s{streams = (S#s.streams)#{Id := St1#stream{unacked = 0}}},
                            send(pyexec_h2_frame:window_update(Id, St1#stream.unacked), S1);
                        true ->
                            S#s{streams = (S#s.streams)#{Id := St1}}
                    end;
                {error, Code} ->
                    conn_error(Code, bad_padding, S)
            end;
        _ ->
            S
    end.

%% A server stream: each complete message goes to the caller now. Only the
%% padding is acknowledged here; message octets are acknowledged when the
%% caller has taken them (ack_stream/3).
%%
%% A message larger than half the stream window could never complete if
%% its octets waited for the caller, so the received part of such a message
%% is acknowledged at once (`early'), and the caller later acknowledges only
%% the rest. Unread data stays bounded by the window plus one message.
stream_data(Id, Flags, Padding, Data, #stream{msgbuf = Buf0, early = Early0} = St, S) ->
    Max = maps:get(max_message_size, S#s.cfg),
    case split_messages(<<Buf0/binary, Data/binary>>, Early0, St) of
        {ok, <<_, Len:32, _/binary>>, _} when Len > Max ->
            reply(St, {error, {too_large, Len}}),
            reset(Id, cancel, S);
        {ok, _Buf, _} when Flags band ?END_STREAM =/= 0 ->
            reply(St, {error, {protocol, <<"stream ended without trailers">>}}),
            drain_queue(remove_stream(Id, S));
        {ok, <<_, Len:32, _/binary>> = Buf, Early} when Len + 5 > S#s.stream_window div 2 ->
            St1 = St#stream{msgbuf = Buf, early = byte_size(Buf)},
            ack_stream_octets(Id, Padding + byte_size(Buf) - Early,
                              S#s{streams = (S#s.streams)#{Id := St1}});
        {ok, Buf, Early} ->
            St1 = St#stream{msgbuf = Buf, early = Early},
            ack_stream_octets(Id, Padding, S#s{streams = (S#s.streams)#{Id := St1}});
        {error, Why} ->
            reply(St, {error, {protocol, Why}}),
            reset(Id, protocol_error, S)
    end.

split_messages(<<0, Len:32, Msg:Len/binary, Rest/binary>>, Early, St) ->
    reply(St, {message, Msg, Len + 5 - Early}),
    split_messages(Rest, 0, St);
split_messages(<<1, _/binary>>, _Early, _St) ->
    {error, <<"compressed response not supported">>};
split_messages(<<C, _/binary>>, _Early, _St) when C > 1 ->
    {error, <<"malformed gRPC message framing">>};
split_messages(Rest, Early, _St) ->
    {ok, Rest, Early}.

%% The caller took Octets of a stream's messages: reopen that much of the
%% stream window (batched to half a window, as for unary responses).
ack_stream(Reply, Octets, #s{refs = Refs} = S) ->
    case Refs of
        #{Reply := Id} when is_integer(Id) -> ack_stream_octets(Id, Octets, S);
        _ -> S
    end.

ack_stream_octets(_Id, 0, S) ->
    S;
ack_stream_octets(Id, Octets, S) ->
    case S#s.streams of
        #{Id := #stream{unacked = U} = St} when U + Octets >= S#s.stream_window div 2 ->
            S1 = S#s{streams = (S#s.streams)#{Id := St#stream{unacked = 0}}},
            send(pyexec_h2_frame:window_update(Id, U + Octets), S1);
        #{Id := #stream{unacked = U} = St} ->
            S#s{streams = (S#s.streams)#{Id := St#stream{unacked = U + Octets}}};
        _ ->
            S
    end.

ack_connection(#s{conn_unacked = CU, conn_window = CW} = S) when CU >= CW div 2 ->
    send(pyexec_h2_frame:window_update(0, CU), S#s{conn_unacked = 0});
ack_connection(S) ->
    S.

%% Every header block is decoded, even for a stream we reset, to keep the
%% HPACK context in step with the server's.
header_block(Id, Flags, Block, S) ->
    case pyexec_hpack:decode(Block, S#s.dec) of
        {ok, Headers, Dec} ->
            stream_headers(Id, Flags band ?END_STREAM =/= 0, Headers, S#s{dec = Dec});
        {error, Why} ->
            conn_error(compression_error, Why, S)
    end.

stream_headers(Id, EndStream, Headers, S) ->
    case S#s.streams of
        #{Id := #stream{headers = undefined} = St} when not EndStream ->
            S#s{streams = (S#s.streams)#{Id := St#stream{headers = Headers}}};
        #{Id := #stream{headers = undefined, mode = stream} = St} ->
            reply(St, {trailers, Headers, Headers}),
            drain_queue(remove_stream(Id, S));
        #{Id := #stream{headers = undefined} = St} ->
            %% Trailers-only response: one HEADERS frame holds the status.
            reply(St, {ok, Headers, <<>>, Headers}),
            drain_queue(remove_stream(Id, S));
        #{Id := #stream{mode = stream, msgbuf = <<>>} = St} when EndStream ->
            reply(St, {trailers, St#stream.headers, Headers}),
            drain_queue(remove_stream(Id, S));
        #{Id := #stream{mode = stream} = St} when EndStream ->
            reply(St, {error, {protocol, <<"stream ended inside a message">>}}),
            drain_queue(remove_stream(Id, S));
        #{Id := St} when EndStream ->
            Body = iolist_to_binary(lists:reverse(St#stream.data)),
            reply(St, {ok, St#stream.headers, Body, Headers}),
            drain_queue(remove_stream(Id, S));
        #{Id := St} ->
            reply(St, {error, {protocol, <<"trailers without END_STREAM">>}}),
            reset(Id, protocol_error, S);
        _ ->
            S
    end.

apply_settings(Pairs, S0) ->
    S = lists:foldl(fun setting/2, S0, Pairs),
    case S of
        #s{sock = undefined} -> S;           % a bad value dropped the connection
        _ ->
            S1 = send(pyexec_h2_frame:settings_ack(), S),
            %% The server answered, so the endpoint is healthy: reset the
            %% reconnect backoff.
            S2 = S1#s{backoff = maps:get(reconnect_backoff_min, S1#s.cfg), settled = true},
            S2#s.settled =:= S1#s.settled orelse publish(S2),
            drain_queue(flush_blocked(S2))
    end.

setting(_, #s{sock = undefined} = S) ->
    S;
setting({?SETTINGS_HEADER_TABLE_SIZE, V}, S) ->
    %% We never use more than the default 4096 octets for our encoder.
    S#s{enc = pyexec_hpack:set_encoder_max_size(min(V, 4096), S#s.enc)};
setting({?SETTINGS_MAX_CONCURRENT_STREAMS, V}, S) ->
    S#s{max_streams = V};
setting({?SETTINGS_INITIAL_WINDOW_SIZE, V}, S) when V > ?MAX_WINDOW ->
    conn_error(flow_control_error, {initial_window_size, V}, S);
setting({?SETTINGS_INITIAL_WINDOW_SIZE, V}, #s{peer_window = Old} = S) ->
    %% The change applies to the windows of all open streams (RFC 9113 6.9.2).
    Delta = V - Old,
    Streams = maps:map(fun(_, St) -> St#stream{send_window = St#stream.send_window + Delta} end,
                       S#s.streams),
    S#s{peer_window = V, streams = Streams};
setting({?SETTINGS_MAX_FRAME_SIZE, V}, S) when V < 16384; V > 16#ffffff ->
    conn_error(protocol_error, {max_frame_size, V}, S);
setting({?SETTINGS_MAX_FRAME_SIZE, V}, S) ->
    S#s{max_frame = V};
setting({?SETTINGS_ENABLE_PUSH, V}, S) when V > 1 ->
    conn_error(protocol_error, {enable_push, V}, S);
setting(_Other, S) ->
    S.

window_update(_Id, 0, S) ->
    conn_error(protocol_error, zero_window_increment, S);
window_update(0, Inc, #s{send_window = W} = S) when W + Inc > ?MAX_WINDOW ->
    conn_error(flow_control_error, window_overflow, S);
window_update(0, Inc, #s{send_window = W} = S) ->
    flush_blocked(S#s{send_window = W + Inc});
window_update(Id, Inc, S) ->
    case S#s.streams of
        #{Id := #stream{send_window = W}} when W + Inc > ?MAX_WINDOW ->
            #{Id := St} = S#s.streams,
            reply(St, {error, {rst_stream, flow_control_error}}),
            reset(Id, flow_control_error, S);
        #{Id := St} ->
            St1 = St#stream{send_window = St#stream.send_window + Inc},
            flush_blocked(S#s{streams = (S#s.streams)#{Id := St1}});
        _ ->
            S
    end.

goaway(LastId, Code, Debug, S0) ->
    Why = case Debug of
              <<>> -> fmt("server sent GOAWAY (~s)", [pyexec_h2_frame:error_name(Code)]);
              _ -> fmt("server sent GOAWAY (~s): ~s", [pyexec_h2_frame:error_name(Code), Debug])
          end,
    %% Streams above LastId were never processed: they may be retried.
    S1 = maps:fold(fun(Id, St, Acc) when Id > LastId ->
                           reply(St, {error, {refused, Why}}),
                           remove_stream(Id, Acc);
                      (_, _, Acc) ->
                           Acc
                   end, S0, S0#s.streams),
    start_draining(S1#s{last_error = Why}).

start_draining(S) ->
    publish(S#s{status = draining}),
    S#s{status = draining}.

%% A draining connection is replaced once its last stream has finished.
%% Checked after each event rather than inside stream bookkeeping, so that a
%% reconnect never happens half-way through handling one frame.
finish_drain(#s{status = draining, streams = Streams} = S) when map_size(Streams) =:= 0 ->
    disconnect(S#s.last_error, S);
finish_drain(S) ->
    S.

remove_stream(Id, #s{streams = Streams, refs = Refs} = S) ->
    case Streams of
        #{Id := #stream{reply = Reply, caller_mon = Mon}} ->
            demonitor(Mon, [flush]),
            S#s{streams = maps:remove(Id, Streams),
                refs = maps:remove(Mon, maps:remove(Reply, Refs)),
                blocked = lists:delete(Id, S#s.blocked)};
        _ ->
            S
    end.

reply(#stream{reply = Reply}, Result) ->
    Reply ! {Reply, Result},
    ok.

%%====================================================================
%% Keepalive
%%====================================================================

schedule_keepalive(Cfg) ->
    case maps:get(keepalive_interval, Cfg) of
        infinity -> ok;
        Ms -> erlang:send_after(Ms, self(), keepalive)
    end.

keepalive(#s{status = down} = S) ->
    S;
keepalive(#s{ping = undefined} = S) ->
    Opaque = crypto:strong_rand_bytes(8),
    send(pyexec_h2_frame:ping(Opaque), S#s{ping = Opaque});
keepalive(S) ->
    %% The previous PING went unanswered for a whole interval.
    disconnect(<<"keepalive PING not acknowledged">>, S).

%%====================================================================
%% Helpers
%%====================================================================

setopts(gen_tcp, Sock, Opts) -> inet:setopts(Sock, Opts);
setopts(ssl, Sock, Opts) -> ssl:setopts(Sock, Opts).

authority_host(Host) ->
    case string:find(Host, ":") of
        nomatch -> Host;
        _ -> [$[, Host, $]]     % IPv6 literal
    end.

fmt(Format, Args) ->
    iolist_to_binary(io_lib:format(Format, Args)).
