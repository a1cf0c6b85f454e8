%% @doc Supervises the `connections' HTTP/2 connections, spread round-robin
%% over the configured endpoints, and the connections to sessions' owner
%% replicas (`route_to_owner'), started on first use.
-module(pyexec_conn_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, start_owner/1]).

%% @doc Starts the connection to an owner replica ("host:port"), if it is
%% not running yet. It connects in the background; pyexec_grpc uses it
%% once it is up. A connection to an owner that stays unreachable for a
%% minute stops (a replica that is gone does not come back under its
%% address), and starts again when a session names that owner again.
-spec start_owner(binary()) -> ok.
start_owner(Address) ->
    Endpoint = pyexec_config:endpoint(Address),
    Id = {owner, Address},
    case supervisor:start_child(?MODULE, #{id => Id,
                                           start => {pyexec_conn, start_link, [Id, Endpoint]},
                                           restart => transient}) of
        {error, already_present} -> _ = supervisor:restart_child(?MODULE, Id), ok;
        _ -> ok
    end.

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Endpoints = pyexec_config:endpoints(),
    N = pyexec_config:get(connections),
    Children = [#{id => {pyexec_conn, I},
                  start => {pyexec_conn, start_link,
                            [I, lists:nth((I - 1) rem length(Endpoints) + 1, Endpoints)]}}
                || I <- lists:seq(1, N)],
    %% A connection handles its own reconnects; a crash is a bug, and many of
    %% them should take the application down rather than loop.
    {ok, {#{strategy => one_for_one, intensity => 20, period => 10}, Children}}.
