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

%% @doc The calling process's context in the default pool: the one bound
%% with bind_context/1 if any (a later bind_context/1 switches it), else the
%% one picked by scheduler (see get_context/1).
-spec get_context() -> py:ctx().
get_context() ->
    get_context(default).

%% @doc `get_context(N)' with an integer is the N-th (1-based) context of the
%% default pool, as py:context(N) (erlang_python 4.x).
%%
%% `get_context(Pool)' is the calling process's context in Pool: for the
%% default pool the context bound with bind_context/1 if any; else picked by
%% the scheduler the process runs on the first time (so processes on one
%% scheduler share a context), then remembered in the process dictionary so
%% that the same process always gets the same context even after migrating.
-spec get_context(pos_integer() | atom()) -> py:ctx().
get_context(N) when is_integer(N) ->
    context(default, N);
get_context(default) ->
    case bound_context() of
        none -> pool_context(default);
        Ctx -> Ctx
    end;
get_context(Pool) when is_atom(Pool) ->
    pool_context(Pool).

pool_context(Pool) ->
    Key = {?MODULE, Pool},
    case get(Key) of
        undefined ->
            N = num_contexts(Pool),
            N > 0 orelse error({badarg, {no_such_pool, Pool}}),
            Index = (erlang:system_info(scheduler_id) - 1) rem N + 1,
            Ctx = context(Pool, Index),
            put(Key, Ctx),
            Ctx;
        Ctx ->
            Ctx
    end.

%% The context bound with bind_context/1: a shared context or a bind(new)
%% one. A py:bind/0 session is the process's implicit binding, not a context
%% it was handed, so it is not returned here.
bound_context() ->
    try ets:lookup(?BOUND_TABLE, self()) of
        [{_, {_Pool, _N} = Id}] -> #py_ctx{id = Id};
        [{_, Id}] ->
            case ets:lookup(?CTX_TABLE, Id) of
                [{_, _, _, explicit}] -> #py_ctx{id = Id};
                _ -> none
            end;
        [] -> none
    catch
        error:badarg -> none    % application not started
    end.

%% @doc The Index-th (1-based) context of Pool.
-spec context(atom(), pos_integer()) -> py:ctx().
context(Pool, Index) when is_integer(Index), Index >= 1 ->
    case Index =< num_contexts(Pool) of
        true -> #py_ctx{id = {Pool, Index}};
        false -> error({badarg, {no_such_context, Pool, Index}})
    end.

%% @doc Routes the calling process's py:call/eval/exec to Ctx, and makes
%% get_context/0 and py:context/0 return it. Binding again switches to the
%% new context.
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
