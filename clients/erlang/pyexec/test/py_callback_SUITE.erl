%% Python calling back into Erlang (py:register_function/2,3,
%% unregister_function/1, erlang.call / pyexec.call over Run) against a real
%% pyexecd started by the suite, with the shapes of erlang_python's
%% py_reentrant_SUITE; and what a callback costs, printed.
-module(py_callback_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [values_both_ways, errors_both_ways, unknown_and_unregistered, module_function,
     stateless_nesting_5_deep, session_reentry_5_deep, callback_calls_without_context,
     concurrent_callers, callback_that_never_answers,
     interrupt_a_call_waiting_for_a_callback, caller_death_kills_its_callbacks,
     async_gather_is_concurrent, round_trip_figures].

init_per_suite(Config) ->
    Exe = pyexec_test_util:pyexecd_path(),
    filelib:is_regular(Exe) orelse ct:fail({pyexecd_not_found, Exe, "build it or set PYEXECD"}),
    {ok, Srv} = pyexec_test_util:start_server(
                  Exe, ["--listen=127.0.0.1:0", "--workers=3", "--max_workers=6",
                        "--lease_grace=1s", "--worker_max_processes=0"]),
    #{port := Port} = Srv,
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", Port}]}]),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

end_per_testcase(_TC, _Config) ->
    [py:unregister_function(N) || {N, _} <- ets:tab2list(pyexec_functions)],
    py:unbind(),
    ok.

%%--------------------------------------------------------------------

values_both_ways(_Config) ->
    Self = self(),
    ok = py:register_function(echo, fun(Args) -> Self ! {got, Args}, Args end),
    {ok, R} = py:eval(<<"erlang.call('echo', 1, 'a', b'\\x00', [2.5, None], (True,), "
                        "{'k': 2**70, 3: {1, 2}}, float('inf'))">>),
    Expected = [1, <<"a">>, <<0>>, [2.5, none], {true},
                #{<<"k">> => 1180591620717411303424, 3 => {set, [1, 2]}}, infinity],
    receive {got, Args} -> ?assertEqual(Expected, sort_sets(Args)) after 5000 -> ct:fail(no_call) end,
    ?assertEqual(Expected, sort_sets(R)),
    %% Erlang terms of every kind back to Python, with their Python types.
    ok = py:register_function(give, fun([]) ->
                                            {1, <<"s">>, {bytes, <<1>>}, [none, undefined, nil],
                                             #{<<"m">> => {set, [7]}}, 1 bsl 80, -0.5, true,
                                             atom}
                                    end),
    ?assertEqual({ok, [<<"tuple">>, <<"int">>, <<"str">>, <<"bytes">>, <<"list">>, <<"dict">>,
                       <<"int">>, <<"float">>, <<"bool">>, <<"str">>, [none, none, none],
                       <<"set">>, 1 bsl 80]},
                 py:eval(<<"(lambda t: [type(t).__name__] + [type(x).__name__ for x in t] "
                           "+ [t[3], type(t[4]['m']).__name__, t[5]])(pyexec.call('give'))">>)),
    %% Keyword arguments come as a map after the positional ones.
    ok = py:register_function(kw, fun(Args) -> Args end),
    ?assertEqual({ok, [1, #{<<"b">> => 2}]}, py:eval(<<"pyexec.call('kw', 1, b=2)">>)).

sort_sets(L) when is_list(L) -> [sort_sets(X) || X <- L];
sort_sets({set, L}) -> {set, lists:sort(L)};
sort_sets(T) when is_tuple(T) -> list_to_tuple(sort_sets(tuple_to_list(T)));
sort_sets(M) when is_map(M) -> maps:map(fun(_, V) -> sort_sets(V) end, M);
sort_sets(X) -> X.

errors_both_ways(_Config) ->
    %% An Erlang exception is pyexec.CallbackError in Python: class as type,
    %% reason as message; Python can catch it...
    ok = py:register_function(may_fail, fun([true]) -> error(intentional_error);
                                           ([<<"exit">>]) -> exit(<<"gone">>);
                                           ([<<"throw">>]) -> throw("thrown");
                                           ([false]) -> <<"success">>
                                        end),
    ?assertEqual({ok, <<"success">>}, py:eval(<<"erlang.call('may_fail', False)">>)),
    ?assertEqual({ok, [<<"error">>, <<"intentional_error">>]},
                 catching(<<"erlang.call('may_fail', True)">>)),
    ?assertEqual({ok, [<<"exit">>, <<"gone">>]}, catching(<<"erlang.call('may_fail', 'exit')">>)),
    ?assertEqual({ok, [<<"throw">>, <<"thrown">>]}, catching(<<"erlang.call('may_fail', 'throw')">>)),
    %% ...and an uncaught one is the outer call's error.
    ?assertMatch({error, {'CallbackError', "error: intentional_error" ++ _}},
                 py:eval(<<"erlang.call('may_fail', True)">>)),
    ?assertNotEqual(nomatch, binary:match(py:last_traceback(), <<"CallbackError">>)),
    %% A Python error after the callback returned.
    ok = py:register_function(one, fun(_) -> 1 end),
    ?assertMatch({error, {'ZeroDivisionError', _}}, py:eval(<<"pyexec.call('one') / 0">>)),
    %% A Python error inside the nested call the callback makes reaches the
    %% Erlang function as a result, which it can hand back.
    ok = py:register_function(nested, fun([Code]) ->
                                              {error, {T, M}} = py:eval(Code),
                                              {error, T, unicode:characters_to_binary(M)}
                                      end),
    ?assertEqual({ok, [<<"error">>, <<"ZeroDivisionError">>, <<"division by zero">>]},
                 py:eval(<<"list(pyexec.call('nested', '1/0'))">>)),
    %% A term with no Python counterpart is a TypeError in Python.
    ok = py:register_function(bad, fun(_) -> self() end),
    ?assertMatch({ok, [<<"TypeError">>, <<"the Erlang function returned a term", _/binary>>]},
                 catching(<<"pyexec.call('bad')">>)).

%% [type, message] of the CallbackError that Code raises.
catching(Code) ->
    ok = py:bind(),
    try
        ok = py:exec(<<"def catch(f):\n    try:\n        f()\n    except pyexec.CallbackError as e:\n"
                       "        return [e.type, e.message]\n">>),
        py:eval(<<"catch(lambda: ", Code/binary, ")">>)
    after
        py:unbind()
    end.

unknown_and_unregistered(_Config) ->
    ok = py:register_function(known, fun(_) -> 1 end),
    ?assertMatch({error, {'CallbackError', "LookupError: no Erlang function is registered as 'nope'" ++ _}},
                 py:eval(<<"pyexec.call('nope')">>)),
    ok = py:register_function(<<"bin_name">>, fun(_) -> 2 end),
    ?assertEqual({ok, 2}, py:eval(<<"erlang.call('bin_name')">>)),
    ok = py:unregister_function(<<"bin_name">>),
    ?assertMatch({error, {'CallbackError', "LookupError" ++ _}}, py:eval(<<"erlang.call('bin_name')">>)),
    %% Registering again replaces.
    ok = py:register_function(known, fun(_) -> 3 end),
    ?assertEqual({ok, 3}, py:eval(<<"erlang.call('known')">>)),
    ok = py:unregister_function(known),
    ok = py:unregister_function(never_registered),
    %% Nothing registered: plain calls (no Run), and pyexec.call says so.
    ?assertMatch({error, {'RuntimeError', "pyexec.call: the client registered no functions" ++ _}},
                 py:eval(<<"pyexec.call('known')">>)).

module_function(_Config) ->
    ok = py:register_function(sum_list, lists, sum),
    ?assertEqual({ok, 6}, py:eval(<<"erlang.call('sum_list', 1, 2, 3)">>)).

%% erlang_python's test_nested_callbacks: stateless py:eval inside the
%% callback, five levels deep.
stateless_nesting_5_deep(_Config) ->
    ok = py:register_function(call_level, fun([Level, N]) when Level >= N -> Level;
                                             ([Level, N]) ->
                                                  Code = iolist_to_binary(
                                                           io_lib:format("__import__('erlang').call('call_level', ~p, ~p)",
                                                                         [Level + 1, N])),
                                                  {ok, R} = py:eval(Code),
                                                  R
                                          end),
    ?assertEqual({ok, 3}, py:eval(<<"__import__('erlang').call('call_level', 1, 3)">>)),
    ?assertEqual({ok, 5}, py:eval(<<"__import__('erlang').call('call_level', 1, 5)">>)),
    ?assertEqual({ok, 8}, py:eval(<<"__import__('erlang').call('call_level', 1, 8)">>)).

%% Python -> Erlang -> Python on the same session, with its state: each
%% nested call runs on the interpreter that waits for the callback (it
%% would wait for ever behind it otherwise).
session_reentry_5_deep(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"depths = []\ndef down(n):\n    depths.append(n)\n"
                   "    return 0 if n == 0 else pyexec.call('down', n - 1) + 1">>),
    ok = py:register_function(down, fun([N]) -> {ok, V} = py:call('__main__', down, [N]), V + 1 end),
    ?assertEqual({ok, 12}, py:eval(<<"down(6)">>)),
    ?assertEqual({ok, [6, 5, 4, 3, 2, 1, 0]}, py:eval(<<"depths">>)).

%% A callback's py calls without a context run on the session of the call
%% that asked; with a context, on that context.
callback_calls_without_context(_Config) ->
    {ok, Other} = py:bind(new),
    ok = py:ctx_exec(Other, <<"where = 'other'">>),
    ok = py:register_function(where, fun([]) ->
                                             {ok, Here} = py:eval(<<"where">>),
                                             {ok, There} = py:ctx_eval(Other, <<"where">>),
                                             [Here, There]
                                     end),
    ok = py:bind(),
    ok = py:exec(<<"where = 'mine'">>),
    ?assertEqual({ok, [<<"mine">>, <<"other">>]}, py:eval(<<"pyexec.call('where')">>)),
    py:unbind(Other).

%% erlang_python's test_concurrent_reentrant: ten callers at once.
concurrent_callers(_Config) ->
    ok = py:register_function(triple, fun([X]) -> X * 3 end),
    Self = self(),
    [spawn_link(fun() ->
                        Input = N * 10,
                        R = py:eval(iolist_to_binary(io_lib:format("__import__('erlang').call('triple', ~p)", [Input]))),
                        Self ! {done, N, R}
                end) || N <- lists:seq(1, 10)],
    [receive {done, N, R} -> ?assertEqual({ok, N * 30}, R) after 20000 -> ct:fail({timeout, N}) end
     || N <- lists:seq(1, 10)].

%% A callback that never answers: pyexec.call raises TimeoutError before the
%% call's deadline, and the session goes on.
callback_that_never_answers(_Config) ->
    ok = py:register_function(slow, fun(_) -> receive after infinity -> ok end end),
    ok = py:bind(),
    ok = py:exec(<<"r = None">>),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual(ok, py:exec(<<"try:\n    pyexec.call('slow')\nexcept TimeoutError:\n"
                               "    r = 'timed out'">>, #{}, 1500)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 1500),
    ?assertEqual({ok, <<"timed out">>}, py:eval(<<"r">>)),
    ?assertEqual([], callback_processes()).

%% The processes running callbacks (none once calls have ended).
callback_processes() ->
    [P || P <- processes(),
          case process_info(P, dictionary) of
              {dictionary, D} -> lists:keymember('$pyexec_callback', 1, D);
              _ -> false
          end].

%% py:interrupt(Ref) of a call whose Python code waits in pyexec.call.
interrupt_a_call_waiting_for_a_callback(_Config) ->
    Self = self(),
    ok = py:register_function(block, fun(_) -> Self ! blocked, receive after infinity -> ok end end),
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"x = 1\ndef wait():\n    return pyexec.call('block')">>),
    Ref = py:spawn_call(Ctx, '__main__', wait, []),
    receive blocked -> ok after 10000 -> ct:fail(no_callback) end,
    ?assertEqual(ok, py:interrupt(Ref)),
    ?assertEqual({error, interrupted}, py:await(Ref, 10000)),
    pyexec_test_util:wait_until(fun() -> callback_processes() =:= [] end, callbacks_gone),
    ?assertEqual({ok, 1}, py:ctx_eval(Ctx, <<"x">>)),
    py:unbind(Ctx).

%% A caller that dies while its callback runs: the callback process dies
%% too (its guard), and the server stops the call.
caller_death_kills_its_callbacks(_Config) ->
    Self = self(),
    ok = py:register_function(block, fun(_) -> Self ! blocked, receive after infinity -> ok end end),
    Caller = spawn(fun() -> py:eval(<<"pyexec.call('block')">>) end),
    receive blocked -> ok after 10000 -> ct:fail(no_callback) end,
    ?assertMatch([_], callback_processes()),
    exit(Caller, kill),
    pyexec_test_util:wait_until(fun() -> callback_processes() =:= [] end, callbacks_gone),
    pyexec_test_util:wait_until(fun() -> maps:get(busy_workers, py_pool:get_stats()) =:= 0 end,
                                no_busy_worker).

%% async_gather runs the coroutines concurrently on one interpreter's event
%% loop: three 0.5 s sleeps take about 0.5 s (issue 19), whatever the pool.
async_gather_is_concurrent(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"import asyncio\nasync def nap(x):\n    await asyncio.sleep(0.5)\n    return x\n"
                   "async def boom():\n    raise ValueError('no')\n">>),
    {Us, R} = timer:tc(fun() -> py:async_gather([{'__main__', nap, [I]} || I <- [1, 2, 3]]) end),
    ct:pal("async_gather of three 0.5 s sleeps: ~b ms", [Us div 1000]),
    ?assertEqual({ok, [1, 2, 3]}, R),
    ?assert(Us < 1200000),
    ?assertEqual({error, {gather_failed, [{2, {'ValueError', "no"}}]}},
                 py:async_gather([{'__main__', nap, [1]}, {'__main__', boom, []}, {math, sqrt, [4]}])),
    ?assertEqual({error, timeout}, py:async_gather([{asyncio, sleep, [5]}], 300)),
    Ref = py:async_call('__main__', nap, [7]),
    ?assertEqual({ok, 7}, py:async_await(Ref)).

%% What a callback costs: Eval p50 without functions registered (plain
%% Eval), with some registered (Run: one round trip more for the
%% half-close), and an Eval that makes one callback.
round_trip_figures(_Config) ->
    ok = py:bind(),
    N = 300,
    %% Interleaved, so that a noisy moment on the shared machine weighs on
    %% the three alike.
    Id = fun([X]) -> X end,
    Plain = fun() -> ok = py:unregister_function(id), {ok, 1} = py:eval(<<"1">>) end,
    Run = fun() -> ok = py:register_function(id, Id), {ok, 1} = py:eval(<<"1">>) end,
    Callback = fun() -> ok = py:register_function(id, Id),
                        {ok, 1} = py:eval(<<"pyexec.call('id', 1)">>) end,
    [F() || _ <- lists:seq(1, 20), F <- [Plain, Run, Callback]],
    Samples = [[element(1, timer:tc(F)) || F <- [Plain, Run, Callback]] || _ <- lists:seq(1, N)],
    [P, R, C] = [lists:nth(N div 2, lists:sort([lists:nth(I, S) || S <- Samples]))
                 || I <- [1, 2, 3]],
    Line = io_lib:format("callback figures (p50 of ~b, bound session): Eval ~b us, Eval as Run ~b us "
                         "(~.2fx), Eval with one callback ~b us (~.2fx Eval)",
                         [N, P, R, R / P, C, C / P]),
    ct:pal("~s", [Line]),
    io:format(user, "~s~n", [Line]),
    ?assert(C > R).
