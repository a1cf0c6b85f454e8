%% @doc Pool figures (the erlang_python 1.x `py_pool:get_stats/0').
-module(py_pool).

-export([get_stats/0]).

%% @doc The server's GetStats: a map with at least `num_workers',
%% `available_workers', `checked_out' and `pending_requests', plus every
%% other field of GetStatsResponse (max_workers, sessions, ...).
%%
%% `available_workers' is what erlang_python 1.x users read it as: how many
%% more workers `bind()' can take, the server's `bindable_workers', so 0
%% when every bind would be refused with no_workers_available. The
%% server's own `available_workers' (idle, ready workers of its warm pool,
%% which a bind does not need: the server starts one) is reported as
%% `idle_workers'.
-spec get_stats() -> #{atom() => non_neg_integer() | binary()} | {error, term()}.
get_stats() ->
    case pyexec_rpc:call(get_stats, #{}, pyexec_config:get(default_timeout)) of
        {ok, #{available_workers := Idle, bindable_workers := Bindable} = Stats} ->
            Stats#{available_workers := Bindable, idle_workers => Idle};
        {error, {grpc, deadline_exceeded, _}} ->
            {error, timeout};
        {error, _} = E ->
            E
    end.
