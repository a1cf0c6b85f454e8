%% @doc The PyExec RPCs, independent of the transport underneath, and what
%% every session call gets on top of it.
%%
%% A transport module (pyexec_grpc, the built-in HTTP/2 client, or
%% pyexec_grpcbox) takes and returns message maps (see pyexec_pb) and
%% reports failures as `{error, {grpc, Code, Message}}', Code the lower-case
%% atom of a gRPC status code and Message a binary, or `{error, {lost,
%% GrpcError}}' when the connection was lost while the server may have been
%% running the call.
%%
%% Options of a call (opts()):
%%   session   the call's session token: routing to its owner, one retry
%%   call_id   its x-pyexec-call-id (the name an Interrupt can give it)
%%   callback  the id of the callback the calling process runs
%%             (x-pyexec-callback: the call runs nested on the interpreter
%%             that waits for that callback)
%%   metadata  other request headers of this call
%%
%% What a session call gets here:
%% - Owner routing (`route_to_owner'): the session's calls go straight to
%%   the replica that holds it (BindResponse.owner, or the x-pyexec-owner
%%   header of a forwarded call's response), over a connection of its own,
%%   once that connection is up. A call the owner refuses with UNAVAILABLE,
%%   or that cannot reach it, goes through the configured endpoints (the
%%   balancer) instead, and the owner is left alone for a second.
%% - A CANCELLED that this client did not cause (no Interrupt of that call
%%   from here) is UNAVAILABLE: gRPC core ends calls that way when a server
%%   shuts down (grpc/grpc#41785).
%% - A call the server refused with UNAVAILABLE (it did not run it:
%%   draining, its session moving to another replica) is sent again,
%%   through the balancer, after 100 ms, and again with the pause doubling
%%   (up to 800 ms), for at most 3 s and within its deadline: a session
%%   being moved is refused until its new replica has restored it (0.9 s
%%   measured on a loaded 2-core machine). A call whose
%%   connection was lost while it ran is not (Exec is not idempotent), nor
%%   one that no connection could take (every connection was tried).
%% Streams get the same before their first message arrives.
-module(pyexec_rpc).

-export([call/3, call/4, method/1, code/1,
         stream_open/3, stream_open/4, bidi_open/4, stream_send/2, stream_close_send/1,
         stream_recv/2, stream_cancel/1,
         new_call_id/0, mark_interrupted/2, unmark_interrupted/2, mark_session_interrupted/1,
         set_owner/2, forget_session/1]).

-export_type([method/0, grpc_error/0, stream/0, opts/0]).

-type method() :: pyexec_pb:method().
-type grpc_error() :: {grpc, atom(), binary()}.
-type opts() :: #{session => binary(), call_id => binary(), callback => binary(),
                  metadata => [{binary(), binary()}], via => balancer | {owner, binary()}}.

%% A stream of this module: its key in the opening process's dictionary,
%% where the transport's stream and the retry state live.
-opaque stream() :: {pyexec_stream, reference()}.

-callback unary(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.
-callback call(method(), map(), timeout(), opts()) ->
    {ok, map(), [{binary(), binary()}]} | {error, term()}.
%% Server streams and bidi streams: open, send (bidi), read messages one by
%% one (`{done, Headers}' after an OK status), cancel at any time. Only the
%% opening process may use a stream.
-callback stream_open(method(), map(), timeout(), opts()) -> {ok, term()} | {error, term()}.
-callback bidi_open(method(), map(), timeout(), opts()) -> {ok, term()} | {error, term()}.
-callback stream_send(term(), map()) -> ok.
-callback stream_close_send(term()) -> ok.
-callback stream_recv(term(), timeout()) ->
    {ok, map()} | {done, [{binary(), binary()}]} | timeout | {ctl, term()} | {error, term()}.
-callback stream_cancel(term()) -> ok.
%% Whether a connection to an owner replica is up (starting one if not).
-callback owner_ready(binary()) -> boolean().

-define(CALLS, pyexec_calls).
-define(ROUTES, pyexec_routes).
-define(RETRY_PAUSE, 100).
-define(RETRY_BUDGET, 3000).
-define(RETRY_PAUSE_MAX, 800).
-define(OWNER_PAUSE, 1000).

%%====================================================================
%% Unary calls
%%====================================================================

%% @doc Runs one RPC with a timeout in milliseconds (or infinity, in which
%% case the server's --default_timeout applies).
-spec call(method(), map(), timeout()) -> {ok, map()} | {error, grpc_error()}.
call(Method, Request, Timeout) ->
    call(Method, Request, Timeout, #{}).

-spec call(method(), map(), timeout(), opts()) -> {ok, map()} | {error, grpc_error()}.
call(Method, Request, Timeout, Opts0) ->
    Mod = transport(),
    Opts = prepare(Opts0),
    Deadline = deadline(Timeout),
    registered(Opts, fun() ->
        Attempt = fun(O) -> Mod:call(Method, Request, left(Deadline), O) end,
        case policy(Opts, Deadline, Attempt) of
            {ok, Resp, Headers} ->
                learn_owner(Opts, Headers),
                {ok, Resp};
            {error, _} = E ->
                E
        end
    end).

%% Routing, fallback, the CANCELLED mapping and the one retry, around
%% Attempt(Opts) -> {ok, _, _} | {error, _}.
policy(Opts, Deadline, Attempt) ->
    Session = maps:get(session, Opts, <<>>),
    case routed(Session, Opts, Attempt) of
        {error, {grpc, unavailable, _}} when Session =/= <<>> ->
            retry(Opts, Deadline, Attempt, ?RETRY_PAUSE, ?RETRY_BUDGET);
        R ->
            final(Opts, R)
    end.

retry(Opts, Deadline, Attempt, Pause, Budget) ->
    Waited = pause(Deadline, Pause),
    case normal(Opts, Attempt(Opts#{via => balancer})) of
        {error, {grpc, unavailable, _}} = E ->
            Next = min(2 * Pause, ?RETRY_PAUSE_MAX),
            case Budget - Waited >= Next andalso left(Deadline) > Next of
                true -> retry(Opts, Deadline, Attempt, Next, Budget - Waited);
                false -> E
            end;
        R ->
            final(Opts, R)
    end.

%% One attempt: to the owner if it can be reached, else (or if the owner
%% refuses the call unseen) through the balancer.
routed(Session, Opts, Attempt) ->
    case owner_via(Session) of
        balancer ->
            normal(Opts, Attempt(Opts#{via => balancer}));
        {owner, Address} = Via ->
            case normal(Opts, Attempt(Opts#{via => Via})) of
                {error, E} when element(1, E) =:= unsent; element(2, E) =:= unavailable ->
                    %% No connection to the owner, or it refused the call.
                    owner_unreachable(Address),
                    normal(Opts, Attempt(Opts#{via => balancer}));
                {error, {lost, _}} = E ->
                    owner_unreachable(Address),
                    E;
                R ->
                    R
            end
    end.

%% A CANCELLED this client did not cause is UNAVAILABLE.
normal(Opts, {error, {grpc, cancelled, Msg}}) ->
    case interrupted_here(Opts) of
        true -> {error, {grpc, cancelled, Msg}};
        false -> {error, {grpc, unavailable, Msg}}
    end;
normal(_Opts, R) ->
    R.

final(_Opts, {error, {lost, E}}) -> {error, E};
final(_Opts, {error, {unsent, E}}) -> {error, E};
final(_Opts, R) -> R.

%% Sleeps Pause ms (less if the deadline is nearer); returns the time slept.
pause(Deadline, Pause) ->
    T = case left(Deadline) of
            infinity -> Pause;
            L -> max(0, min(Pause, L - 1))
        end,
    timer:sleep(T),
    T.

%%====================================================================
%% Streams
%%====================================================================

%% @doc Opens a server-streaming RPC (exec_stream, call_stream, attach).
-spec stream_open(method(), map(), timeout()) -> {ok, stream()} | {error, grpc_error()}.
stream_open(Method, Request, Timeout) ->
    stream_open(Method, Request, Timeout, #{}).

-spec stream_open(method(), map(), timeout(), opts()) -> {ok, stream()} | {error, grpc_error()}.
stream_open(Method, Request, Timeout, Opts) ->
    open(stream_open, Method, Request, Timeout, Opts).

%% @doc Opens a bidirectional RPC (run) with its first request message.
-spec bidi_open(method(), map(), timeout(), opts()) -> {ok, stream()} | {error, grpc_error()}.
bidi_open(Method, Request, Timeout, Opts) ->
    open(bidi_open, Method, Request, Timeout, Opts).

open(How, Method, Request, Timeout, Opts0) ->
    Mod = transport(),
    Opts = prepare(Opts0),
    Deadline = deadline(Timeout),
    Session = maps:get(session, Opts, <<>>),
    St = #{mod => Mod, how => How, method => Method, request => Request, deadline => Deadline,
           opts => Opts, got => false, retried => Session =:= <<>>, sent => [],
           pause => ?RETRY_PAUSE, budget => ?RETRY_BUDGET},
    register_call(Opts),
    case open_via(St, owner_via(Session)) of
        {ok, St1} ->
            Key = {pyexec_stream, make_ref()},
            put(Key, St1),
            {ok, Key};
        {error, _} = E ->
            unregister_call(Opts),
            E
    end.

open_via(#{mod := Mod, how := How, method := Method, request := Request, deadline := Deadline,
           opts := Opts, sent := Sent} = St, Via) ->
    try Mod:How(Method, Request, left(Deadline), Opts#{via => Via}) of
        {ok, S} ->
            %% Messages already sent on a bidi stream that is opened again.
            [Mod:stream_send(S, M) || M <- lists:reverse(Sent)],
            {ok, St#{s => S, via => Via}};
        {error, _} = E ->
            final(Opts, E)
    catch
        throw:_ = T -> unregister_call(Opts), throw(T)
    end.

%% @doc Sends one more request message on a bidi stream.
-spec stream_send(stream(), map()) -> ok.
stream_send(Key, Msg) ->
    #{mod := Mod, s := S, sent := Sent, got := Got} = St = get(Key),
    ok = Mod:stream_send(S, Msg),
    %% Kept until the first answer: a stream opened again sends them again.
    case Got of
        false -> put(Key, St#{sent := [Msg | Sent]});
        true -> ok
    end,
    ok.

%% @doc Ends the request side of a bidi stream.
-spec stream_close_send(stream()) -> ok.
stream_close_send(Key) ->
    #{mod := Mod, s := S} = get(Key),
    Mod:stream_close_send(S).

%% @doc The next message of a stream: `{ok, Msg}', `done' when it ended with
%% status OK, `{error, GrpcError}' when it ended otherwise (the stream is
%% then finished), `timeout' if nothing arrived within Wait ms (the stream
%% goes on), or `{ctl, Message}' for a message tagged `pyexec_stream_ctl'
%% sent to the reader (see pyexec_grpc:stream_recv/2).
-spec stream_recv(stream(), timeout()) ->
          {ok, map()} | done | timeout | {ctl, term()} | {error, grpc_error()}.
stream_recv(Key, Wait) ->
    case get(Key) of
        undefined ->
            {error, {grpc, internal, <<"stream already finished">>}};
        #{mod := Mod, s := S, opts := Opts} = St ->
            case normal(Opts, Mod:stream_recv(S, Wait)) of
                {ok, _} = R ->
                    put(Key, St#{got := true, sent := []}),
                    R;
                {done, Headers} ->
                    learn_owner(Opts, Headers),
                    finished(Key, St),
                    done;
                {error, {grpc, unavailable, _}} = E when not map_get(got, St) ->
                    reopen(Key, St, E, Wait);
                {error, {unsent, _}} = E when not map_get(got, St) ->
                    reopen(Key, St#{retried := true}, final(Opts, E), Wait);
                {error, _} = E ->
                    finished(Key, St),
                    final(Opts, E);
                Other ->
                    Other
            end
    end.

%% The stream was refused before its first answer: through the balancer if
%% it went to the owner; else, for a session's, again after a pause (as
%% policy/3 does for unary calls).
reopen(Key, #{via := Via, retried := Retried, deadline := Deadline, pause := Pause,
              budget := Budget} = St, E, Wait) ->
    Next = case Via of
               {owner, Address} ->
                   owner_unreachable(Address),
                   St;
               balancer when not Retried, Budget >= Pause ->
                   Waited = pause(Deadline, Pause),
                   St#{pause := min(2 * Pause, ?RETRY_PAUSE_MAX), budget := Budget - Waited};
               balancer ->
                   none
           end,
    case Next of
        none ->
            finished(Key, St),
            E;
        St1 ->
            case open_via(St1, balancer) of
                {ok, St2} -> put(Key, St2), stream_recv(Key, Wait);
                {error, _} = E2 -> finished(Key, St1), E2
            end
    end.

finished(Key, #{opts := Opts}) ->
    erase(Key),
    unregister_call(Opts).

%% @doc Cancels a stream (the server interrupts the Python code). Always ok.
-spec stream_cancel(stream()) -> ok.
stream_cancel(Key) ->
    case get(Key) of
        undefined -> ok;
        #{mod := Mod, s := S} = St -> Mod:stream_cancel(S), finished(Key, St)
    end,
    ok.

%%====================================================================
%% Call ids and interrupts
%%====================================================================

%% @doc A new call id, unique to this node (and to its run: the prefix is
%% random), for x-pyexec-call-id.
-spec new_call_id() -> binary().
new_call_id() ->
    Prefix = case persistent_term:get({?MODULE, prefix}, undefined) of
                 undefined ->
                     P = binary:encode_hex(crypto:strong_rand_bytes(6)),
                     persistent_term:put({?MODULE, prefix}, P),
                     P;
                 P ->
                     P
             end,
    <<Prefix/binary, $-, (integer_to_binary(erlang:unique_integer([positive]), 36))/binary>>.

%% @doc An Interrupt of this call is being sent from here: its CANCELLED
%% is an interruption, not a failure of the server. The mark may come
%% before the call itself is sent; true if it did.
-spec mark_interrupted(binary(), binary()) -> boolean().
mark_interrupted(CallId, Session) ->
    case catch ets:insert_new(?CALLS, {CallId, Session, true}) of
        true -> true;
        _ -> _ = (catch ets:update_element(?CALLS, CallId, {3, true})), false
    end.

%% @doc Takes back a mark of mark_interrupted/2 that came before its call
%% (the Interrupt found nothing to interrupt).
-spec unmark_interrupted(binary(), binary()) -> ok.
unmark_interrupted(CallId, Session) ->
    _ = (catch ets:delete_object(?CALLS, {CallId, Session, true})),
    ok.

%% @doc As mark_interrupted/2 for every call in flight on a session (an
%% Interrupt that names the session only).
-spec mark_session_interrupted(binary()) -> ok.
mark_session_interrupted(Session) ->
    Ids = try ets:select(?CALLS, [{{'$1', Session, '_'}, [], ['$1']}])
          catch error:badarg -> []
          end,
    lists:foreach(fun(Id) -> ets:update_element(?CALLS, Id, {3, true}) end, Ids).

registered(Opts, Fun) ->
    register_call(Opts),
    try Fun() after unregister_call(Opts) end.

register_call(#{call_id := Id} = Opts) ->
    %% insert_new: an Interrupt may have marked it already.
    _ = (catch ets:insert_new(?CALLS, {Id, maps:get(session, Opts, <<>>), false})),
    ok;
register_call(_) ->
    ok.

unregister_call(#{call_id := Id}) ->
    _ = (catch ets:delete(?CALLS, Id)),
    ok;
unregister_call(_) ->
    ok.

interrupted_here(#{call_id := Id}) ->
    case catch ets:lookup(?CALLS, Id) of
        [{_, _, true}] -> true;
        _ -> false
    end;
interrupted_here(_) ->
    false.

%%====================================================================
%% Owner routing
%%====================================================================

owner_via(<<>>) ->
    balancer;
owner_via(Session) ->
    case route_to_owner() andalso catch ets:lookup(?ROUTES, Session) of
        [{_, Address}] ->
            case ets:lookup(?ROUTES, {unreachable, Address}) of
                [{_, Until}] ->
                    case erlang:monotonic_time(millisecond) < Until of
                        true -> balancer;
                        false -> owner_if_ready(Address)
                    end;
                [] ->
                    owner_if_ready(Address)
            end;
        _ ->
            balancer
    end.

owner_if_ready(Address) ->
    case (transport()):owner_ready(Address) of
        true -> {owner, Address};
        false -> balancer
    end.

owner_unreachable(Address) ->
    _ = (catch ets:insert(?ROUTES, {{unreachable, Address},
                                    erlang:monotonic_time(millisecond) + ?OWNER_PAUSE})),
    ok.

%% @doc Records the owner replica of a session (BindResponse.owner; empty:
%% none), with `route_to_owner'.
-spec set_owner(binary(), binary()) -> ok.
set_owner(_Session, <<>>) ->
    ok;
set_owner(Session, Owner) ->
    case route_to_owner() of
        true -> _ = (catch ets:insert(?ROUTES, {Session, Owner})), ok;
        false -> ok
    end.

%% @doc The session is gone: forget its owner.
-spec forget_session(binary()) -> ok.
forget_session(Session) ->
    _ = (catch ets:delete(?ROUTES, Session)),
    ok.

%% A forwarded call's response names the session's owner.
learn_owner(#{session := Session}, Headers) when Session =/= <<>> ->
    case lists:keyfind(<<"x-pyexec-owner">>, 1, Headers) of
        {_, Owner} when Owner =/= <<>> ->
            case route_to_owner() of
                true -> _ = (catch ets:insert(?ROUTES, {Session, Owner})), ok;
                false -> ok
            end;
        _ ->
            ok
    end;
learn_owner(_, _) ->
    ok.

route_to_owner() ->
    pyexec_config:get(route_to_owner).

%%====================================================================
%% Helpers
%%====================================================================

prepare(Opts) ->
    Extra = [{<<"x-pyexec-call-id">>, Id} || #{call_id := Id} <- [Opts]]
        ++ [{<<"x-pyexec-callback">>, Cb} || #{callback := Cb} <- [Opts]],
    case Extra of
        [] -> Opts;
        _ -> Opts#{metadata => maps:get(metadata, Opts, []) ++ Extra}
    end.

deadline(infinity) -> infinity;
deadline(Timeout) -> erlang:monotonic_time(millisecond) + Timeout.

left(infinity) -> infinity;
left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

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
