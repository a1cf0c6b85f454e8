%% @doc The pyexec application: loads the configuration, then starts the
%% supervision tree.
-module(pyexec_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    pyexec_config:load(),
    pyexec_sup:start_link().

stop(_State) ->
    ok.
