%% @doc Supervises the `connections' HTTP/2 connections, spread round-robin
%% over the configured endpoints.
-module(pyexec_conn_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

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
