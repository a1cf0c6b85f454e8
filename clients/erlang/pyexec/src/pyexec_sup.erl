%% @doc Top supervisor.
%%
%%   pyexec_sup (rest_for_one)
%%     pyexec_conn_sup   the HTTP/2 connections (built-in transport), or
%%     pyexec_grpcbox    the owner of the grpcbox channel (grpcbox transport)
%%     pyexec_registry   sessions and bindings
%%
%% rest_for_one: if the connections had to restart, every session's
%% bookkeeping restarts too, and the registry stops before the connections on
%% shutdown so it can still Unbind its sessions.
-module(pyexec_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    %% The connection table and round-robin counter live as long as the
    %% supervisor, so connection restarts do not lose them.
    _ = ets:new(pyexec_conns, [named_table, public, set, {read_concurrency, true}]),
    %% Calls in flight by x-pyexec-call-id (pyexec_rpc), owners of sessions
    %% (route_to_owner), and the functions Python may call back.
    _ = ets:new(pyexec_calls, [named_table, public, set, {write_concurrency, true}]),
    _ = ets:new(pyexec_routes, [named_table, public, set, {read_concurrency, true}]),
    _ = ets:new(pyexec_functions, [named_table, public, set, {read_concurrency, true}]),
    _ = ets:new(pyexec_named_calls, [named_table, public, set, {write_concurrency, true}]),
    persistent_term:put({pyexec_grpc, rr}, atomics:new(1, [])),
    Transport = case pyexec_config:get(transport) of
                    builtin ->
                        [#{id => pyexec_conn_sup,
                           start => {pyexec_conn_sup, start_link, []},
                           type => supervisor}];
                    grpcbox ->
                        %% Owns the grpcbox channel: stops it on shutdown.
                        [#{id => pyexec_grpcbox,
                           start => {pyexec_grpcbox, start_link, []},
                           type => worker,
                           shutdown => 5000}]
                end,
    Registry = #{id => pyexec_registry,
                 start => {pyexec_registry, start_link, []},
                 shutdown => 5000},
    {ok, {#{strategy => rest_for_one, intensity => 10, period => 10},
          Transport ++ [Registry]}}.
