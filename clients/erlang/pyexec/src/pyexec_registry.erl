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
-module(pyexec_registry).
-behaviour(gen_server).

-export([start_link/0, bind/2, release/1, bind_process/2, unbind_process/1,
         ensure_shared/1, lost/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include("pyexec_ctx.hrl").

-record(s, {
          mons = #{} :: #{pid() => reference()},
          owned = #{} :: #{pid() => [term()]},
          %% Bind in flight: helper monitor -> {Id, Kind, Owner, Waiters}.
          binds = #{} :: #{reference() => {term(), atom(), pid() | shared, [gen_server:from()]}},
          %% Shared context id -> helper monitor of its Bind in flight.
          shared_binds = #{} :: #{term() => reference()}
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
    gen_server:call(?MODULE, {bind, Owner, Kind}, infinity).

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
        [{_, Session, _, _}] -> {ok, Session};
        [] -> gen_server:call(?MODULE, {ensure_shared, Id}, infinity)
    end.

%% @doc The server no longer knows Session (NOT_FOUND) or its worker died
%% (ABORTED): forget it, unless Id was meanwhile rebound to another session.
-spec lost(term(), binary()) -> ok.
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

handle_call({bind, Owner, Kind}, From, S) ->
    Id = make_ref(),
    {noreply, start_bind(Id, Kind, Owner, [From], monitor_pid(Owner, S))};
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
        [{_, Session, _, _}] ->
            {reply, {ok, Session}, S};
        [] ->
            case SB of
                #{Id := Ref} ->
                    %% A Bind for this context is already running: wait for it.
                    #{Ref := {Id, shared, shared, Waiters}} = Binds,
                    {noreply, S#s{binds = Binds#{Ref := {Id, shared, shared, [From | Waiters]}}}};
                _ ->
                    {noreply, start_bind(Id, shared, shared, [From], S)}
            end
    end;
handle_call({lost, Id, Session}, _From, S) ->
    S1 = case ets:lookup(?CTX_TABLE, Id) of
             [{_, Session, Owner, _}] -> forget(Id, Owner, S);
             _ -> S
         end,
    {reply, ok, S1}.

handle_cast(_Msg, S) ->
    {noreply, S}.

handle_info({'DOWN', Ref, process, _, Result}, #s{binds = Binds} = S) when is_map_key(Ref, Binds) ->
    #{Ref := {Id, Kind, Owner, Waiters}} = Binds,
    S1 = S#s{binds = maps:remove(Ref, Binds),
             shared_binds = maps:remove(Id, S#s.shared_binds)},
    {noreply, bind_done(Id, Kind, Owner, Waiters, Result, S1)};
handle_info({'DOWN', _Mon, process, Pid, _Reason}, S) ->
    {noreply, owner_down(Pid, S)};
handle_info(_Other, S) ->
    {noreply, S}.

terminate(_Reason, _S) ->
    %% Release every session while the connections are still up (they stop
    %% after us). Best effort and bounded: the server would expire them
    %% after its idle timeout anyway.
    Sessions = [Session || {_, Session, _, _} <- ets:tab2list(?CTX_TABLE)],
    Pids = [spawn_monitor(fun() -> unbind_rpc(Session, 2000) end) || Session <- Sessions],
    [receive {'DOWN', Ref, process, _, _} -> ok after 3000 -> ok end || {_, Ref} <- Pids],
    ok.

%%====================================================================
%% Internals
%%====================================================================

start_bind(Id, Kind, Owner, Waiters, #s{binds = Binds, shared_binds = SB} = S) ->
    Req = #{idle_timeout_seconds => pyexec_config:get(session_idle_timeout)},
    Timeout = pyexec_config:get(default_timeout),
    %% The helper's exit reason carries the result, so a crash of the
    %% helper is reported the same way as an RPC error.
    {_, Ref} = spawn_monitor(fun() -> exit({bind_result, pyexec_rpc:call(bind, Req, Timeout)}) end),
    S#s{binds = Binds#{Ref => {Id, Kind, Owner, Waiters}},
        shared_binds = case Kind of shared -> SB#{Id => Ref}; _ -> SB end}.

bind_done(Id, Kind, Owner, Waiters, {bind_result, {ok, #{session := Session}}}, S) ->
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
            Reply = case Kind of shared -> {ok, Session}; _ -> {ok, Id} end,
            [gen_server:reply(W, Reply) || W <- Waiters],
            add_owned(Owner, Id, S1);
        false ->
            %% The owner died while Bind was in flight.
            async_unbind(Session),
            S
    end;
bind_done(_Id, _Kind, Owner, Waiters, Result, S) ->
    Reply = case Result of
                {bind_result, {error, Err}} -> {error, bind_error(Err)};
                Crash -> {error, {bind_failed, Crash}}
            end,
    [gen_server:reply(W, Reply) || W <- Waiters],
    case Owner of
        shared -> S;
        _ -> maybe_demonitor(Owner, S)
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

forget(Id, Owner, S) ->
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

owner_down(Pid, #s{owned = Owned, mons = Mons} = S) ->
    [begin
         case ets:lookup(?CTX_TABLE, Id) of
             [{_, Session, _, _}] -> async_unbind(Session);
             [] -> ok
         end,
         ets:delete(?CTX_TABLE, Id)
     end || Id <- maps:get(Pid, Owned, [])],
    ets:delete(?BOUND_TABLE, Pid),
    S#s{owned = maps:remove(Pid, Owned), mons = maps:remove(Pid, Mons)}.

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
        orelse lists:any(fun({_, _, O, _}) -> O =:= Pid end, maps:values(Binds)),
    case {Busy, Mons} of
        {false, #{Pid := Mon}} ->
            erlang:demonitor(Mon, [flush]),
            S#s{mons = maps:remove(Pid, Mons)};
        _ ->
            S
    end.

async_unbind(Session) ->
    _ = spawn(fun() -> unbind_rpc(Session, pyexec_config:get(default_timeout)) end),
    ok.

unbind_rpc(Session, Timeout) ->
    pyexec_rpc:call(unbind, #{session => Session}, Timeout).
