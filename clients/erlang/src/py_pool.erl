%% @doc Pool figures (the erlang_python 1.x `py_pool:get_stats/0').
-module(py_pool).

-export([get_stats/0]).

%% @doc The server's GetStats: a map with at least `num_workers',
%% `available_workers', `checked_out' and `pending_requests', plus every
%% other field of GetStatsResponse (max_workers, sessions, ...).
-spec get_stats() -> #{atom() => non_neg_integer() | binary()} | {error, term()}.
get_stats() ->
    case pyexec_rpc:call(get_stats, #{}, pyexec_config:get(default_timeout)) of
        {ok, Stats} -> Stats;
        {error, {grpc, deadline_exceeded, _}} -> {error, timeout};
        {error, _} = E -> E
    end.
