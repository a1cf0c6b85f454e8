%% @doc Shared contexts (the erlang_python 2.x API).
%%
%% A pool is a fixed number of contexts; `default' has `num_contexts' of them
%% and `context_pools' configures others (`io' by default). A context is a
%% handle: its server session is bound on first use and bound again after it
%% was lost, so idle pools cost the server nothing.
-module(py_context_router).

-export([get_context/0, get_context/1, context/2,
         bind_context/1, unbind_context/0,
         num_contexts/0, num_contexts/1,
         contexts/0, contexts/1, pool_started/1]).

-include("pyexec_ctx.hrl").

%% @doc The calling process's context in the default pool.
-spec get_context() -> py:ctx().
get_context() ->
    get_context(default).

%% @doc The calling process's context in Pool: picked by the scheduler the
%% process runs on the first time (so processes on one scheduler share a
%% context), then remembered in the process dictionary so that the same
%% process always gets the same context even after migrating.
-spec get_context(atom()) -> py:ctx().
get_context(Pool) ->
    Key = {?MODULE, Pool},
    case get(Key) of
        undefined ->
            N = num_contexts(Pool),
            Index = (erlang:system_info(scheduler_id) - 1) rem N + 1,
            Ctx = context(Pool, Index),
            put(Key, Ctx),
            Ctx;
        Ctx ->
            Ctx
    end.

%% @doc The Index-th (1-based) context of Pool.
-spec context(atom(), pos_integer()) -> py:ctx().
context(Pool, Index) when is_integer(Index), Index >= 1 ->
    case Index =< num_contexts(Pool) of
        true -> #py_ctx{id = {Pool, Index}};
        false -> error({badarg, {no_such_context, Pool, Index}})
    end.

%% @doc Routes the calling process's py:call/eval/exec to Ctx.
-spec bind_context(py:ctx()) -> ok.
bind_context(#py_ctx{id = Id}) ->
    pyexec_registry:bind_process(self(), Id).

%% @doc Removes the calling process's binding. Always returns ok.
-spec unbind_context() -> ok.
unbind_context() ->
    py:unbind().

-spec num_contexts() -> pos_integer().
num_contexts() ->
    num_contexts(default).

-spec num_contexts(atom()) -> non_neg_integer().
num_contexts(default) ->
    pyexec_config:get(num_contexts);
num_contexts(Pool) ->
    maps:get(Pool, pyexec_config:get(context_pools), 0).

-spec contexts() -> [py:ctx()].
contexts() ->
    contexts(default).

-spec contexts(atom()) -> [py:ctx()].
contexts(Pool) ->
    [#py_ctx{id = {Pool, I}} || I <- lists:seq(1, num_contexts(Pool))].

%% @doc Whether Pool exists and the application is running.
-spec pool_started(atom()) -> boolean().
pool_started(Pool) ->
    whereis(pyexec_registry) =/= undefined andalso num_contexts(Pool) > 0.
