%% @doc Sessions and bindings: which context id maps to which server session,
%% which process owns it, and which context each process is bound to.
%%
%% Reads happen straight from two protected ETS tables (one lookup per
%% call); every change goes through this process, which monitors each owner
%% and bound process. When one dies, its sessions are released with Unbind
%% at once, so a crashed Erlang process never keeps a Python interpreter.
%%
%% Bind RPCs run in short-lived helper processes so that a slow Bind (the
%% server may be spawning a worker) never blocks other binds or releases.
%% The owner is monitored before the RPC starts, so an owner that dies while
%% its Bind is in flight still gets the new session released.
%%
%% Every session bound here is leased (`lease', default true): a
%% pyexec_lease process holds an Attach stream on it, so that the server
%% unbinds it after its --lease_grace when this whole node is gone. The
%% Bind's caller gets its reply once the lease is held (or its first
%% attempt failed: it is retried in the background). A session that ends on
%% the server while leased (its worker died) is forgotten here at once.
%% With `route_to_owner', the owner replica that Bind names is recorded for
%% pyexec_rpc.
-module(pyexec_registry).
-behaviour(gen_server).

-export([start_link/0, bind/2, bind/3, release/1, bind_process/2, unbind_process/1,
         ensure_shared/1, lost/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include("pyexec_ctx.hrl").

-record(s, {
          mons = #{} :: #{pid() => reference()},
          owned = #{} :: #{pid() => [term()]},
          %% Bind in flight: helper monitor -> {Id, Kind, Owner, Waiters}.
          binds = #{} :: #{reference() => {term(), atom(), pid() | shared, [gen_server:from()]}},
          %% Options of the Binds in flight that have any (bind/3).
          bind_opts = #{} :: #{reference() => map()},
          %% Shared context id -> helper monitor of its Bind in flight.
          shared_binds = #{} :: #{term() => reference()},
          %% Binds waiting for their lease: lease pid -> what bind_done had
          %% (the last element: the restore report, see bind/3).
          pending = #{} :: #{pid() => {term(), atom(), pid() | shared, [gen_server:from()],
                                       binary(), map() | none}},
          %% Context id -> the lease process of its session, and back.
          leases = #{} :: #{term() => pid()},
          lease_ids = #{} :: #{pid() => term()}
         }).

%%====================================================================
%% API
%%====================================================================

-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Binds a new private session owned by Owner. Kind `implicit' also
%% binds Owner to it (py:bind/0); `explicit' only returns the id (py:bind(new)).
-spec bind(pid(), implicit | explicit) -> {ok, reference()} | {error, term()}.
bind(Owner, Kind) ->
    bind(Owner, Kind, #{}).

%% @doc bind/2 with options: `lease' (boolean, default the `lease' key),
%% `idle_timeout' (seconds, default `session_idle_timeout'), `restore' (a
%% Snapshot blob: Bind{restore}). With `restore' the reply is
%% `{ok, Id, Report}', Report the BindResponse's `restore_lost' and
%% `restore_error' (when set).
-spec bind(pid(), implicit | explicit, map()) ->
          {ok, reference()} | {ok, reference(), map()} | {error, term()}.
bind(Owner, Kind, Opts) ->
    gen_server:call(?MODULE, {bind, Owner, Kind, Opts}, infinity).

%% @doc Forgets a private context and returns its session for the caller to
%% Unbind. Shared contexts are not released.
-spec release(term()) -> {ok, binary()} | none.
release(Id) ->
    gen_server:call(?MODULE, {release, Id}, infinity).

%% @doc Routes Pid's py:call/eval/exec to context Id.
-spec bind_process(pid(), term()) -> ok.
bind_process(Pid, Id) ->
    gen_server:call(?MODULE, {bind_process, Pid, Id}, infinity).

%% @doc Removes Pid's binding. If it was Pid's own py:bind/0 session, returns
%% the session for the caller to Unbind.
-spec unbind_process(pid()) -> {ok, binary()} | none.
unbind_process(Pid) ->
    gen_server:call(?MODULE, {unbind_process, Pid}, infinity).

%% @doc The session of a shared context, binding it on first use (or again
%% after it was lost).
-spec ensure_shared(term()) -> {ok, binary()} | {error, term()}.
ensure_shared(Id) ->
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, lost, _, _}] -> lost(Id, lost), {error, session_lost};
        [{_, Session, _, _}] -> {ok, Session};
        [] -> gen_server:call(?MODULE, {ensure_shared, Id}, infinity)
    end.

%% @doc The server no longer knows Session (NOT_FOUND) or its worker died
%% (ABORTED): forget it, unless Id was meanwhile rebound to another session.
%% Session `lost': its lease said so before any call did (see below).
-spec lost(term(), binary() | lost) -> ok.
lost(Id, Session) ->
    gen_server:call(?MODULE, {lost, Id, Session}, infinity).

%%====================================================================
%% gen_server
%%====================================================================

init([]) ->
    %% Trap exits so terminate/2 releases every session on shutdown.
    process_flag(trap_exit, true),
    ets:new(?CTX_TABLE, [named_table, protected, set, {read_concurrency, true}]),
    ets:new(?BOUND_TABLE, [named_table, protected, set, {read_concurrency, true}]),
    %% Written by the stream driver processes themselves (py:stream_start/4).
    ets:new(?STREAM_TABLE, [named_table, public, set]),
    {ok, #s{}}.

handle_call({bind, Owner, Kind, Opts}, From, S) ->
    Id = make_ref(),
    {noreply, start_bind(Id, Kind, Owner, [From], Opts, monitor_pid(Owner, S))};
handle_call({release, Id}, _From, S) ->
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, Session, Owner, Kind}] when Kind =/= shared ->
            {reply, {ok, Session}, forget(Id, Owner, S)};
        _ ->
            {reply, none, S}
    end;
handle_call({bind_process, Pid, Id}, _From, S) ->
    S1 = release_implicit(Pid, S),
    ets:insert(?BOUND_TABLE, {Pid, Id}),
    {reply, ok, monitor_pid(Pid, S1)};
handle_call({unbind_process, Pid}, _From, S) ->
    case ets:lookup(?BOUND_TABLE, Pid) of
        [{_, Id}] ->
            ets:delete(?BOUND_TABLE, Pid),
            case ets:lookup(?CTX_TABLE, Id) of
                [{_, Session, Pid, implicit}] -> {reply, {ok, Session}, forget(Id, Pid, S)};
                _ -> {reply, none, maybe_demonitor(Pid, S)}
            end;
        [] ->
            {reply, none, S}
    end;
handle_call({ensure_shared, Id}, From, #s{shared_binds = SB, binds = Binds} = S) ->
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, Session, _, _}] when is_binary(Session) ->
            {reply, {ok, Session}, S};
        [] ->
            case SB of
                #{Id := Ref} ->
                    %% A Bind for this context is already running: wait for it.
                    #{Ref := {Id, shared, shared, Waiters}} = Binds,
                    {noreply, S#s{binds = Binds#{Ref := {Id, shared, shared, [From | Waiters]}}}};
                _ ->
                    {noreply, start_bind(Id, shared, shared, [From], #{}, S)}
            end
    end;
handle_call({lost, Id, Session}, _From, S) ->
    S1 = case ets:lookup(?CTX_TABLE, Id) of
             [{_, Known, Owner, _}] when Known =:= Session; Known =:= lost ->
                 forget(Id, Owner, S);
             _ -> S
         end,
    {reply, ok, S1}.

handle_cast(_Msg, S) ->
    {noreply, S}.

handle_info({'DOWN', Ref, process, _, Result}, #s{binds = Binds} = S) when is_map_key(Ref, Binds) ->
    #{Ref := {Id, Kind, Owner, Waiters}} = Binds,
    Opts = maps:get(Ref, S#s.bind_opts, #{}),
    S1 = S#s{binds = maps:remove(Ref, Binds), bind_opts = maps:remove(Ref, S#s.bind_opts),
             shared_binds = maps:remove(Id, S#s.shared_binds)},
    {noreply, bind_done(Id, Kind, Owner, Waiters, Opts, Result, S1)};
handle_info({'DOWN', _Mon, process, Pid, _Reason}, S) ->
    {noreply, owner_down(Pid, S)};
handle_info({pyexec_lease, Pid, Event}, #s{pending = Pending} = S) when is_map_key(Pid, Pending) ->
    #{Pid := {Id, Kind, Owner, Waiters, Session, Report}} = Pending,
    S1 = S#s{pending = maps:remove(Pid, Pending)},
    case Event of
        {ended, _} ->
            %% Gone before the lease was held.
            [gen_server:reply(W, {error, session_lost}) || W <- Waiters],
            {noreply, case Owner of shared -> S1; _ -> maybe_demonitor(Owner, S1) end};
        unsupported ->
            {noreply, complete_bind(Id, Kind, Owner, Waiters, Session, Report, S1)};
        _ ->
            S2 = complete_bind(Id, Kind, Owner, Waiters, Session, Report, S1),
            {noreply, S2#s{leases = (S2#s.leases)#{Id => Pid},
                           lease_ids = (S2#s.lease_ids)#{Pid => Id}}}
    end;
handle_info({pyexec_lease_down, _, process, Pid, _}, #s{pending = Pending} = S)
  when is_map_key(Pid, Pending) ->
    %% A lease process that crashed before its first outcome: the session
    %% is bound without a lease.
    #{Pid := {Id, Kind, Owner, Waiters, Session, Report}} = Pending,
    {noreply, complete_bind(Id, Kind, Owner, Waiters, Session, Report,
                            S#s{pending = maps:remove(Pid, Pending)})};
handle_info({pyexec_lease_down, _, process, Pid, _}, #s{lease_ids = LeaseIds} = S) ->
    case LeaseIds of
        #{Pid := Id} ->
            {noreply, S#s{lease_ids = maps:remove(Pid, LeaseIds),
                          leases = maps:remove(Id, S#s.leases)}};
        _ ->
            {noreply, S}
    end;
handle_info({pyexec_lease, Pid, {ended, _Reason}}, #s{lease_ids = LeaseIds} = S) ->
    %% The session ended on the server (Unbind elsewhere, its worker died,
    %% the server restarted): it is marked lost, so that the next call
    %% naming it gets session_lost (context_not_bound for a private
    %% context), as if that call had found it gone; state is never
    %% silently replaced by a new session.
    case LeaseIds of
        #{Pid := Id} ->
            S1 = S#s{lease_ids = maps:remove(Pid, LeaseIds), leases = maps:remove(Id, S#s.leases)},
            case ets:lookup(?CTX_TABLE, Id) of
                [{_, Session, Owner, Kind}] when is_binary(Session) ->
                    pyexec_rpc:forget_session(Session),
                    ets:insert(?CTX_TABLE, {Id, lost, Owner, Kind}),
                    {noreply, S1};
                _ ->
                    {noreply, S1}
            end;
        _ ->
            {noreply, S}
    end;
handle_info(_Other, S) ->
    {noreply, S}.

terminate(_Reason, _S) ->
    %% Release every session while the connections are still up (they stop
    %% after us). Best effort and bounded: the server would expire them
    %% after its idle timeout anyway.
    Sessions = [Session || {_, Session, _, _} <- ets:tab2list(?CTX_TABLE), is_binary(Session)],
    Pids = [spawn_monitor(fun() -> unbind_rpc(Session, 2000) end) || Session <- Sessions],
    [receive {'DOWN', Ref, process, _, _} -> ok after 3000 -> ok end || {_, Ref} <- Pids],
    ok.

%%====================================================================
%% Internals
%%====================================================================

start_bind(Id, Kind, Owner, Waiters, Opts, #s{binds = Binds, shared_binds = SB} = S) ->
    Req0 = #{idle_timeout_seconds => maps:get(idle_timeout, Opts,
                                              pyexec_config:get(session_idle_timeout))},
    Req = case Opts of
              #{restore := Blob} -> Req0#{restore => Blob};
              _ -> Req0
          end,
    Timeout = pyexec_config:get(default_timeout),
    %% The helper's exit reason carries the result, so a crash of the
    %% helper is reported the same way as an RPC error.
    {_, Ref} = spawn_monitor(fun() -> exit({bind_result, pyexec_rpc:call(bind, Req, Timeout)}) end),
    S#s{binds = Binds#{Ref => {Id, Kind, Owner, Waiters}},
        bind_opts = case map_size(Opts) of
                        0 -> S#s.bind_opts;
                        _ -> (S#s.bind_opts)#{Ref => Opts}
                    end,
        shared_binds = case Kind of shared -> SB#{Id => Ref}; _ -> SB end}.

bind_done(Id, Kind, Owner, Waiters, Opts, {bind_result, {ok, #{session := Session} = Resp}}, S) ->
    case Owner =:= shared orelse is_map_key(Owner, S#s.mons) of
        true ->
            pyexec_rpc:set_owner(Session, maps:get(owner, Resp, <<>>)),
            Report = case Opts of
                         #{restore := _} -> maps:with([restore_lost, restore_error], Resp);
                         _ -> none
                     end,
            case maps:get(lease, Opts, pyexec_config:get(lease)) of
                true ->
                    Pid = pyexec_lease:start(Session, pyexec_config:get(default_timeout)),
                    erlang:monitor(process, Pid, [{tag, pyexec_lease_down}]),
                    S#s{pending = (S#s.pending)#{Pid => {Id, Kind, Owner, Waiters, Session,
                                                         Report}}};
                false ->
                    complete_bind(Id, Kind, Owner, Waiters, Session, Report, S)
            end;
        false ->
            %% The owner died while Bind was in flight.
            async_unbind(Session),
            S
    end;
bind_done(_Id, _Kind, Owner, Waiters, _Opts, Result, S) ->
    Reply = case Result of
                {bind_result, {error, Err}} -> {error, bind_error(Err)};
                Crash -> {error, {bind_failed, Crash}}
            end,
    [gen_server:reply(W, Reply) || W <- Waiters],
    case Owner of
        shared -> S;
        _ -> maybe_demonitor(Owner, S)
    end.

complete_bind(Id, Kind, Owner, Waiters, Session, Report, S) ->
    case Owner =:= shared orelse is_map_key(Owner, S#s.mons) of
        true ->
            ets:insert(?CTX_TABLE, {Id, Session, Owner, Kind}),
            S1 = case Kind of
                     implicit ->
                         S2 = release_implicit(Owner, S),
                         ets:insert(?BOUND_TABLE, {Owner, Id}),
                         S2;
                     _ -> S
                 end,
            Reply = case {Kind, Report} of
                        {shared, _} -> {ok, Session};
                        {_, none} -> {ok, Id};
                        {_, _} -> {ok, Id, Report}
                    end,
            [gen_server:reply(W, Reply) || W <- Waiters],
            add_owned(Owner, Id, S1);
        false ->
            %% The owner died while its lease was being attached.
            async_unbind(Session),
            S
    end.

bind_error({grpc, resource_exhausted, Msg} = E) ->
    case binary:match(Msg, <<"no_workers_available">>) of
        nomatch -> E;
        _ -> no_workers_available
    end;
bind_error({grpc, deadline_exceeded, _}) ->
    timeout;
bind_error(E) ->
    E.

%% py:bind/0 sessions belong to the binding: replacing or dropping the
%% binding releases the session too.
release_implicit(Pid, S) ->
    case ets:lookup(?BOUND_TABLE, Pid) of
        [{_, Id}] ->
            case ets:lookup(?CTX_TABLE, Id) of
                [{_, Session, Pid, implicit}] ->
                    async_unbind(Session),
                    forget(Id, Pid, S);
                _ -> S
            end;
        [] -> S
    end.

forget(Id, Owner, S0) ->
    S = stop_lease(Id, S0),
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, Session, _, _}] when is_binary(Session) -> pyexec_rpc:forget_session(Session);
        _ -> ok
    end,
    ets:delete(?CTX_TABLE, Id),
    %% A process bound to this implicit context is no longer bound.
    case Owner of
        shared -> S;
        _ ->
            case ets:lookup(?BOUND_TABLE, Owner) of
                [{_, Id}] -> ets:delete(?BOUND_TABLE, Owner);
                _ -> ok
            end,
            Owned = lists:delete(Id, maps:get(Owner, S#s.owned, [])),
            S1 = case Owned of
                     [] -> S#s{owned = maps:remove(Owner, S#s.owned)};
                     _ -> S#s{owned = (S#s.owned)#{Owner => Owned}}
                 end,
            maybe_demonitor(Owner, S1)
    end.

owner_down(Pid, #s{owned = Owned, mons = Mons} = S0) ->
    S = lists:foldl(
          fun(Id, Acc) ->
                  case ets:lookup(?CTX_TABLE, Id) of
                      [{_, Session, _, _}] when is_binary(Session) ->
                          async_unbind(Session),
                          pyexec_rpc:forget_session(Session);
                      _ -> ok
                  end,
                  ets:delete(?CTX_TABLE, Id),
                  stop_lease(Id, Acc)
          end, S0, maps:get(Pid, Owned, [])),
    %% Binds of this process still waiting for their lease.
    Pending = maps:filter(fun(LeasePid, {_, _, Owner, _, Session, _}) when Owner =:= Pid ->
                                  pyexec_lease:stop(LeasePid),
                                  async_unbind(Session),
                                  false;
                             (_, _) ->
                                  true
                          end, S#s.pending),
    ets:delete(?BOUND_TABLE, Pid),
    S#s{owned = maps:remove(Pid, Owned), mons = maps:remove(Pid, Mons), pending = Pending}.

stop_lease(Id, #s{leases = Leases, lease_ids = LeaseIds} = S) ->
    case Leases of
        #{Id := Pid} ->
            pyexec_lease:stop(Pid),
            S#s{leases = maps:remove(Id, Leases), lease_ids = maps:remove(Pid, LeaseIds)};
        _ ->
            S
    end.

add_owned(shared, _Id, S) -> S;
add_owned(Owner, Id, #s{owned = Owned} = S) ->
    S#s{owned = Owned#{Owner => [Id | maps:get(Owner, Owned, [])]}}.

monitor_pid(Pid, #s{mons = Mons} = S) ->
    case Mons of
        #{Pid := _} -> S;
        _ -> S#s{mons = Mons#{Pid => erlang:monitor(process, Pid)}}
    end.

%% Keep monitoring a process while it owns a session, is bound, or has a
%% Bind in flight.
maybe_demonitor(Pid, #s{mons = Mons, owned = Owned, binds = Binds} = S) ->
    Busy = is_map_key(Pid, Owned)
        orelse ets:member(?BOUND_TABLE, Pid)
        orelse lists:any(fun({_, _, O, _}) -> O =:= Pid end, maps:values(Binds))
        orelse lists:any(fun({_, _, O, _, _, _}) -> O =:= Pid end, maps:values(S#s.pending)),
    case {Busy, Mons} of
        {false, #{Pid := Mon}} ->
            erlang:demonitor(Mon, [flush]),
            S#s{mons = maps:remove(Pid, Mons)};
        _ ->
            S
    end.

async_unbind(lost) ->
    ok;
async_unbind(Session) ->
    _ = spawn(fun() -> unbind_rpc(Session, pyexec_config:get(default_timeout)) end),
    ok.

unbind_rpc(Session, Timeout) ->
    pyexec_rpc:call(unbind, #{session => Session}, Timeout).
