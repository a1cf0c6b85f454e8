%% @doc The lease on one bound session: a process that holds an Attach
%% stream open for as long as the session is bound here.
%%
%% The registry binds sessions for Erlang processes and monitors them, as
%% erlang_python ties a context to the process that bound it: a process
%% that dies has its sessions unbound at once. The lease covers what a
%% monitor cannot: when this whole node dies (or loses the server), its
%% connections close, the server sees the Attach streams end, and it
%% unbinds the sessions after its --lease_grace unless a lease comes back
%% first. A leased session does not expire while idle.
%%
%% The process reports to its registry:
%%   {pyexec_lease, Pid, attached}        the first lease is held
%%   {pyexec_lease, Pid, {ended, Reason}} the session ended on the server
%%                                        (unbound, its worker died, gone)
%%   {pyexec_lease, Pid, {failed, Why}}   the first Attach failed; it is
%%                                        retried (with back-off) all the same
%%   {pyexec_lease, Pid, unsupported}     the server has no Attach
%% and attaches again when the stream ends without the session ending:
%% at once after UNAVAILABLE (the session moved to another replica, or the
%% connection was lost: within the grace the session is kept), with
%% back-off after other errors. `stop/1' ends it (the stream is
%% cancelled).
-module(pyexec_lease).

-export([start/2, stop/1]).

-define(BACKOFF_MIN, 100).
-define(BACKOFF_MAX, 5000).

%% @doc Starts the lease of Session for the calling process (the registry).
-spec start(binary(), timeout()) -> pid().
start(Session, FirstTimeout) ->
    Registry = self(),
    spawn(fun() ->
                  %% The registry's end (pyexec stops) ends the lease too.
                  erlang:monitor(process, Registry, [{tag, pyexec_stream_ctl}]),
                  attach(#{session => Session, registry => Registry, reported => false,
                           first_timeout => FirstTimeout, backoff => ?BACKOFF_MIN})
          end).

-spec stop(pid()) -> ok.
stop(Pid) ->
    Pid ! {pyexec_stream_ctl, stop},
    ok.

attach(#{session := Session, first_timeout := First} = St) ->
    case pyexec_rpc:stream_open(attach, #{session => Session}, infinity,
                                #{session => Session}) of
        {ok, S} ->
            case pyexec_rpc:stream_recv(S, First) of
                {ok, #{attached := _}} ->
                    St1 = report(attached, St),
                    hold(S, St1#{backoff := ?BACKOFF_MIN});
                {ok, #{ended := #{reason := Reason}}} ->
                    pyexec_rpc:stream_cancel(S),
                    ended(Reason, St);
                timeout ->
                    pyexec_rpc:stream_cancel(S),
                    retry({grpc, deadline_exceeded, <<"no answer to Attach">>}, St);
                Other ->
                    failed(Other, S, St)
            end;
        {error, E} ->
            failed({error, E}, undefined, St)
    end.

%% The lease is held: wait for its end.
hold(S, St) ->
    case pyexec_rpc:stream_recv(S, infinity) of
        {ok, #{ended := #{reason := Reason}}} ->
            pyexec_rpc:stream_cancel(S),
            ended(Reason, St);
        {ok, _} ->
            hold(S, St);
        done ->
            ended(<<"the lease stream ended">>, St);
        {error, {grpc, not_found, _}} ->
            ended(<<"not found">>, St);
        {error, {grpc, unavailable, _}} ->
            %% Moved to another replica, or the connection was lost: the
            %% session waits for us for --lease_grace.
            attach(St);
        {error, E} ->
            retry(E, St);
        {ctl, Ctl} ->
            case ctl(Ctl) of
                stop -> pyexec_rpc:stream_cancel(S);
                continue -> hold(S, St)
            end;
        timeout ->
            hold(S, St)
    end.

failed({error, {grpc, not_found, _}}, _S, St) ->
    ended(<<"not found">>, St);
failed({error, {grpc, unimplemented, _}}, _S, St) ->
    report(unsupported, St),
    ok;
failed({error, E}, _S, St) ->
    retry(E, report({failed, E}, St));
failed({ctl, Ctl}, S, St) ->
    case ctl(Ctl) of
        stop ->
            S =:= undefined orelse pyexec_rpc:stream_cancel(S),
            ok;
        continue ->
            S =:= undefined orelse pyexec_rpc:stream_cancel(S),
            attach(St)
    end;
failed(done, _S, St) ->
    ended(<<"the lease stream ended">>, St).

retry(E, #{backoff := B} = St) ->
    St1 = report({failed, E}, St),
    Delay = round(B * (0.8 + 0.4 * rand:uniform())),
    receive
        {pyexec_stream_ctl, stop} -> ok;
        {pyexec_stream_ctl, _, process, _, _} -> ok
    after Delay ->
            attach(St1#{backoff := min(2 * B, ?BACKOFF_MAX)})
    end.

ended(Reason, St) ->
    report({ended, Reason}, St),
    ok.

ctl({pyexec_stream_ctl, stop}) -> stop;
ctl({pyexec_stream_ctl, _Mon, process, _Registry, _}) -> stop;
ctl(_) -> continue.

%% Every attach and the end are reported; of the failures, only the first
%% (the registry holds the Bind's reply until the first outcome).
report(Event, #{registry := R, reported := Reported} = St) ->
    case Event of
        attached -> R ! {pyexec_lease, self(), Event};
        {ended, _} -> R ! {pyexec_lease, self(), Event};
        _ when not Reported -> R ! {pyexec_lease, self(), Event};
        _ -> ok
    end,
    St#{reported := true}.
