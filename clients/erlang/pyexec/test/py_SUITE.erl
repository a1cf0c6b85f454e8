%% The `py' API against a real pyexecd started by the suite on a free port
%% (--workers=2 --max_workers=4). Covers every API function of issue 4 and
%% the examples of both seed documents.
-module(py_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(MAX_WORKERS, 4).

all() ->
    [{group, v1}, {group, v2}, {group, v4}, {group, load}].

groups() ->
    [{v1, [sequence],
      [stateless_calls, names_atoms_or_binaries, python_errors_and_traceback, output_capture,
       types_to_python, types_from_python, big_integers, bad_values,
       seed_counter, bind_twice_and_unbind_always_ok, seed_isolated_contexts,
       seed_with_context_fun0, seed_with_context_fun1, with_context_unbinds_on_throw,
       ctx_functions_all_arities, seed_sqlite3, seed_incremental_processing,
       seed_context_not_bound, cleanup_on_process_death, pool_exhaustion, get_stats,
       timeout_interrupts_while_true, exception_types_create_no_atoms]},
     {v2, [sequence],
      [v2_seed_counter, v2_seed_isolated, v2_bind_context, v2_run_with_context,
       v2_context_affinity, v2_router_functions, v2_call_with_ctx, v2_seed_sqlite3,
       v2_seed_incremental, v2_unbind_leaves_shared_alone, v2_rebind_context_switches,
       v2_get_context_integer]},
     {v4, [sequence],
      [v4_call_on_pool, v4_spawn_call_await, v4_cast, v4_async_call_coroutines,
       v4_async_gather, v4_return_ref]},
     {load, [], [concurrent_1000_calls_100_procs]}].

init_per_suite(Config) ->
    Exe = pyexec_test_util:pyexecd_path(),
    case filelib:is_regular(Exe) of
        true -> ok;
        false -> ct:fail({pyexecd_not_found, Exe, "build it or set PYEXECD"})
    end,
    {ok, Srv} = pyexec_test_util:start_server(
                  Exe, ["--listen=127.0.0.1:0", "--workers=2",
                        "--max_workers=" ++ integer_to_list(?MAX_WORKERS),
                        "--session_idle_timeout=60s", "--default_timeout=30s"]),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    {exited, 0} = pyexec_test_util:stop_server(?config(srv, Config), "TERM"),
    ok.

init_per_group(_Group, Config) ->
    start_app(Config),
    Config.

end_per_group(_Group, _Config) ->
    %% Stopping the application releases every session it holds.
    pyexec_test_util:stop_app().

init_per_testcase(_TC, Config) ->
    Config.

end_per_testcase(_TC, _Config) ->
    py:unbind(),
    ok.

start_app(Config) ->
    #{port := Port} = ?config(srv, Config),
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", Port}]},
                                     {connections, 2},
                                     {num_contexts, 2},
                                     {context_pools, #{io => 1}}]).

%% checked_out as the server reports it, waiting for it to settle at
%% Expected (releases on process death are asynchronous by nature).
wait_checked_out(Expected) ->
    pyexec_test_util:wait_until(
      fun() -> case py_pool:get_stats() of
                   #{checked_out := Expected} -> true;
                   Other -> Other
               end
      end, {checked_out, Expected}).

%%====================================================================
%% 1.x: stateless calls and values
%%====================================================================

stateless_calls(_Config) ->
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ?assertEqual({ok, 42}, py:eval(<<"x * 2">>, #{x => 21})),
    ?assertEqual({ok, 42}, py:eval("x * 2", #{x => 21}, 5000)),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, 255}, py:call(builtins, int, [<<"ff">>], #{base => 16})),
    ?assertEqual({ok, 255}, py:call(builtins, int, [<<"ff">>], #{base => 16}, 5000)),
    ?assertEqual(ok, py:exec(<<"x = 1">>)),
    ?assertEqual(ok, py:exec(<<"assert y == 3, y">>, #{y => 3})),
    %% Stateless calls get a fresh namespace each time...
    ok = py:exec(<<"z = 5">>),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"z">>)),
    %% ...and locals are visible to their own call only.
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"y">>)),
    %% Dotted function paths.
    ?assertEqual({ok, <<"/a/b">>}, py:call('os.path', join, [<<"/a">>, <<"b">>])),
    ?assertEqual({ok, <<"/a/b">>}, py:call(os, 'path.join', [<<"/a">>, <<"b">>])).

names_atoms_or_binaries(_Config) ->
    ?assertEqual({ok, 1024.0}, py:call(<<"math">>, <<"pow">>, [2, 10])),
    ?assertEqual({ok, 1024.0}, py:call(math, <<"pow">>, [2, 10])),
    ?assertEqual({ok, 1024.0}, py:call("math", pow, [2, 10])),
    ?assertEqual({ok, 3}, py:call(builtins, len, [[1, 2, 3]])).

python_errors_and_traceback(_Config) ->
    ?assertEqual({error, {'ZeroDivisionError', "division by zero"}}, py:eval(<<"1/0">>)),
    Tb = py:last_traceback(),
    ?assert(is_binary(Tb)),
    ?assertNotEqual(nomatch, binary:match(Tb, <<"ZeroDivisionError">>)),
    ?assertEqual({error, {'ValueError', "math domain error"}}, py:call(math, sqrt, [-1])),
    ?assertMatch({error, {'KeyError', _}}, py:exec(<<"{}['missing']">>)),
    ?assertEqual({error, {'MyError', "custom ☃"}},
                 py:exec(<<"class MyError(Exception): pass\nraise MyError('custom ☃')"/utf8>>)),
    ?assertMatch({error, {'SyntaxError', _}}, py:eval(<<"1 +">>)),
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(no_such_module, f, [])),
    %% The traceback stays available until the next Python error.
    ok = py:exec(<<"pass">>),
    ?assertNotEqual(nomatch, binary:match(py:last_traceback(), <<"ModuleNotFoundError">>)).

output_capture(_Config) ->
    ok = py:exec(<<"import sys\nprint('hello')\nprint('oops', file=sys.stderr)">>),
    ?assertEqual(#{stdout => <<"hello\n">>, stderr => <<"oops\n">>}, py:last_output()),
    {ok, none} = py:eval(<<"print('x')">>),
    ?assertEqual(#{stdout => <<"x\n">>, stderr => <<>>}, py:last_output()).

%% What each Erlang term becomes in Python (checked by Python itself).
types_to_python(_Config) ->
    T = fun(Term) -> {ok, Name} = py:eval(<<"type(v).__name__">>, #{v => Term}), Name end,
    ?assertEqual(<<"int">>, T(1)),
    ?assertEqual(<<"int">>, T(1 bsl 100)),
    ?assertEqual(<<"float">>, T(1.5)),
    ?assertEqual(<<"float">>, T(nan)),
    ?assertEqual(<<"bool">>, T(true)),
    ?assertEqual(<<"NoneType">>, T(none)),
    ?assertEqual(<<"NoneType">>, T(nil)),
    ?assertEqual(<<"NoneType">>, T(undefined)),
    ?assertEqual(<<"str">>, T(hello)),
    ?assertEqual(<<"str">>, T(<<"hello">>)),
    ?assertEqual(<<"bytes">>, T({bytes, <<1, 2>>})),
    ?assertEqual(<<"set">>, T({set, [1, 2]})),
    ?assertEqual(<<"list">>, T("abc")),
    ?assertEqual(<<"tuple">>, T({1, 2})),
    ?assertEqual(<<"dict">>, T(#{a => 1})),
    ?assertEqual({ok, true}, py:eval(<<"v == float('inf') and w == float('-inf') and x != x">>,
                                     #{v => infinity, w => neg_infinity, x => nan})),
    ?assertEqual({ok, true}, py:eval(<<"v == {(1, 2): 'a', 3: [None]}">>,
                                     #{v => #{{1, 2} => <<"a">>, 3 => [none]}})),
    ?assertEqual({ok, [97, 98, 99]}, py:eval(<<"v">>, #{v => "abc"})).

%% What each Python value becomes in Erlang.
types_from_python(_Config) ->
    E = fun(Code) -> {ok, V} = py:eval(Code), V end,
    ?assertEqual(none, E(<<"None">>)),
    ?assertEqual(true, E(<<"True">>)),
    ?assertEqual(-7, E(<<"-7">>)),
    ?assertEqual(0.25, E(<<"0.25">>)),
    ?assertEqual(nan, E(<<"float('nan')">>)),
    ?assertEqual(infinity, E(<<"float('inf')">>)),
    ?assertEqual(neg_infinity, E(<<"-float('inf')">>)),
    ?assertEqual(<<"héllo ☃"/utf8>>, E(<<"'héllo ☃'"/utf8>>)),
    %% bytes arrive as a plain binary, as with erlang_python (the default
    %% `{decode_bytes, binary}'; `tagged' is tested in the grpcbox suite and
    %% the conformance runner).
    ?assertEqual(<<0, 255>>, E(<<"b'\\x00\\xff'">>)),
    ?assertEqual(<<"ab">>, E(<<"bytearray(b'ab')">>)),
    ?assertEqual([1, [2, [3]]], E(<<"[1, [2, [3]]]">>)),
    ?assertEqual({1, <<"a">>, {}}, E(<<"(1, 'a', ())">>)),
    ?assertEqual(#{1 => <<"x">>, <<"k">> => [], {1, 2} => none}, E(<<"{1: 'x', 'k': [], (1, 2): None}">>)),
    {set, S} = E(<<"{3, 1, 2}">>),
    ?assertEqual([1, 2, 3], lists:sort(S)),
    {set, FS} = E(<<"frozenset([4])">>),
    ?assertEqual([4], FS),
    ?assertMatch({opaque, <<"datetime.date">>, <<"datetime.date(2024, 1, 2)">>},
                 E(<<"__import__('datetime').date(2024, 1, 2)">>)),
    {opaque, Type, _Repr} = E(<<"object()">>),
    ?assertEqual(<<"object">>, Type),
    %% Round trip of a nested structure; atoms come back as str.
    V = #{<<"list">> => [1, 2.5, <<"s">>, <<"b">>, none, true, nan],
          <<"tuple">> => {1, {2, {3}}}, 42 => {set, [<<"x">>]}, {<<"k">>, 1} => #{}},
    ?assertEqual({ok, V}, py:eval(<<"v">>, #{v => V})),
    ?assertEqual({ok, <<"b">>}, py:eval(<<"v">>, #{v => {bytes, <<"b">>}})),
    ?assertEqual({ok, #{<<"a">> => [<<"b">>, none, none]}},
                 py:eval(<<"v">>, #{v => #{a => [b, nil, undefined]}})).

big_integers(_Config) ->
    Big = 1 bsl 200,
    ?assertEqual({ok, Big}, py:eval(<<"2 ** 200">>)),
    ?assertEqual({ok, -Big}, py:eval(<<"-(2 ** 200)">>)),
    ?assertEqual({ok, Big + 1}, py:eval(<<"x + 1">>, #{x => Big})),
    Max = 16#7fffffffffffffff,
    ?assertEqual({ok, Max + 1}, py:eval(<<"x + 1">>, #{x => Max})),
    ?assertEqual({ok, -Max - 2}, py:eval(<<"x - 1">>, #{x => -Max - 1})),
    ?assertEqual({ok, true}, py:eval(<<"x == 2**64 and type(x) is int">>, #{x => 1 bsl 64})),
    {ok, F} = py:call(math, factorial, [50]),
    ?assertEqual(lists:foldl(fun erlang:'*'/2, 1, lists:seq(1, 50)), F).

bad_values(_Config) ->
    ?assertMatch({error, {bad_value, _}}, py:eval(<<"x">>, #{x => self()})),
    ?assertMatch({error, {bad_value, _}}, py:call(builtins, len, [[make_ref()]])),
    ?assertMatch({error, {bad_value, <<255>>}}, py:eval(<<"x">>, #{x => <<255>>})),
    ?assertError({badarg, _}, py:eval(<<"1">>, #{}, -5)).

%%====================================================================
%% 1.x: binding
%%====================================================================

%% The counter example of the 1.x seed, with is_bound/0 around it.
seed_counter(_Config) ->
    false = py:is_bound(),
    ok = py:bind(),
    true = py:is_bound(),
    ok = py:exec(<<"counter = 0">>),
    ok = py:exec(<<"counter += 1">>),
    {ok, 1} = py:eval(<<"counter">>),
    ok = py:exec(<<"counter += 1">>),
    {ok, 2} = py:eval(<<"counter">>),
    %% call/3 on a bound process also runs in the session (__main__ is the
    %% session namespace).
    ok = py:exec(<<"def inc(n): return counter + n">>),
    {ok, 12} = py:call('__main__', inc, [10]),
    ok = py:unbind(),
    false = py:is_bound(),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"counter">>)).

bind_twice_and_unbind_always_ok(_Config) ->
    ok = py:unbind(),
    ok = py:bind(),
    ok = py:exec(<<"kept = 'yes'">>),
    ok = py:bind(),                       % does nothing
    ?assertEqual({ok, <<"yes">>}, py:eval(<<"kept">>)),
    ok = py:unbind(),
    ok = py:unbind(),
    {ok, Ctx} = py:bind(new),
    ok = py:unbind(Ctx),
    ok = py:unbind(Ctx).

seed_isolated_contexts(_Config) ->
    {ok, Ctx1} = py:bind(new),
    {ok, Ctx2} = py:bind(new),
    ok = py:ctx_exec(Ctx1, <<"x = 'context one'">>),
    ok = py:ctx_exec(Ctx2, <<"x = 'context two'">>),
    {ok, <<"context one">>} = py:ctx_eval(Ctx1, <<"x">>),
    {ok, <<"context two">>} = py:ctx_eval(Ctx2, <<"x">>),
    ok = py:unbind(Ctx1),
    ok = py:unbind(Ctx2).

seed_with_context_fun0(_Config) ->
    Result = py:with_context(fun() ->
                                     ok = py:exec(<<"total = 0">>),
                                     ok = py:exec(<<"for i in range(10): total += i">>),
                                     py:eval(<<"total">>)
                             end),
    {ok, 45} = Result,
    false = py:is_bound().

seed_with_context_fun1(_Config) ->
    Result = py:with_context(fun(Ctx) ->
                                     ok = py:ctx_exec(Ctx, <<"import json">>),
                                     ok = py:ctx_exec(Ctx, <<"data = {'key': 'value'}">>),
                                     py:ctx_eval(Ctx, <<"json.dumps(data)">>)
                             end),
    {ok, <<"{\"key\": \"value\"}">>} = Result.

with_context_unbinds_on_throw(_Config) ->
    Before = maps:get(checked_out, py_pool:get_stats()),
    ?assertThrow(boom, py:with_context(fun() -> ok = py:exec(<<"a = 1">>), throw(boom) end)),
    false = py:is_bound(),
    Ref = make_ref(),
    ?assertError({oops, Ref}, py:with_context(fun(C) -> put(ctx, C), error({oops, Ref}) end)),
    ?assertError(context_not_bound, py:ctx_eval(get(ctx), <<"1">>)),
    ?assertEqual(Before, maps:get(checked_out, py_pool:get_stats())).

ctx_functions_all_arities(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"def f(a, b=0): return a * 10 + b">>),
    ?assertEqual({ok, 10}, py:ctx_call(Ctx, '__main__', f, [1])),
    ?assertEqual({ok, 12}, py:ctx_call(Ctx, '__main__', f, [1], #{b => 2})),
    ?assertEqual({ok, 13}, py:ctx_call(Ctx, <<"__main__">>, <<"f">>, [1], #{b => 3}, 5000)),
    ?assertEqual({ok, 2.0}, py:ctx_call(Ctx, math, sqrt, [4])),
    ?assertEqual({ok, 10}, py:ctx_eval(Ctx, <<"f(1)">>)),
    ?assertEqual({ok, 55}, py:ctx_eval(Ctx, <<"f(n, 5)">>, #{n => 5})),
    ?assertEqual({ok, 56}, py:ctx_eval(Ctx, <<"f(n, 6)">>, #{n => 5}, 5000)),
    ok = py:ctx_exec(Ctx, <<"g = n + 1">>, #{n => 41}),
    ?assertEqual({ok, 42}, py:ctx_eval(Ctx, <<"g">>)),
    %% Locals are visible to their call only.
    ?assertMatch({error, {'NameError', _}}, py:ctx_eval(Ctx, <<"n">>)),
    ok = py:unbind(Ctx).

seed_sqlite3(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"
import sqlite3
conn = sqlite3.connect(':memory:')
cursor = conn.cursor()
cursor.execute('CREATE TABLE users (id INTEGER, name TEXT)')
">>),
    ok = py:exec(<<"cursor.execute('INSERT INTO users VALUES (1, \"Alice\")')">>),
    ok = py:exec(<<"cursor.execute('INSERT INTO users VALUES (2, \"Bob\")')">>),
    {ok, Users} = py:eval(<<"cursor.execute('SELECT * FROM users').fetchall()">>),
    ?assertEqual([{1, <<"Alice">>}, {2, <<"Bob">>}], Users),
    ok = py:exec(<<"conn.close()">>),
    ok = py:unbind().

seed_incremental_processing(_Config) ->
    Items = [1, 2, 3, 4, 5],
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"def process_item(i): return i * 2">>),
    ok = py:ctx_exec(Ctx, <<"results = []">>),
    lists:foreach(fun(Item) ->
                          ok = py:ctx_exec(Ctx, <<"results.append(process_item(item))">>,
                                           #{item => Item})
                  end, Items),
    {ok, Results} = py:ctx_eval(Ctx, <<"results">>),
    ?assertEqual([2, 4, 6, 8, 10], Results),
    ok = py:unbind(Ctx).

seed_context_not_bound(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:unbind(Ctx),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"1 + 1">>)),
    ?assertError(context_not_bound, py:ctx_exec(Ctx, <<"pass">>)),
    ?assertError(context_not_bound, py:ctx_call(Ctx, math, sqrt, [1])),
    ?assertError(context_not_bound, py:eval(Ctx, <<"1">>)).

%% A bound process that dies has its sessions released at once: the
%% server's checked_out drops back without anyone calling unbind.
cleanup_on_process_death(_Config) ->
    wait_checked_out(0),
    Parent = self(),
    Pid = spawn(fun() ->
                        ok = py:bind(),
                        {ok, _} = py:bind(new),
                        ok = py:exec(<<"x = 1">>),
                        Parent ! bound,
                        exit(normal)
                end),
    receive bound -> ok after 10000 -> error({not_bound, Pid}) end,
    wait_checked_out(0),
    %% Killed, not exiting normally, while holding two sessions.
    Victim = spawn(fun() ->
                           ok = py:bind(),
                           {ok, _} = py:bind(new),
                           Parent ! bound,
                           receive never -> ok end
                   end),
    receive bound -> ok after 10000 -> error(not_bound) end,
    ?assertMatch(#{checked_out := 2}, py_pool:get_stats()),
    exit(Victim, kill),
    wait_checked_out(0).

%% The seed: with all workers bound, the next bind() gets
%% {error, no_workers_available}; releasing one makes binding work again.
pool_exhaustion(_Config) ->
    wait_checked_out(0),
    Parent = self(),
    Holders = [spawn(fun() ->
                             Parent ! {self(), py:bind()},
                             receive release -> py:unbind(), Parent ! {self(), released} end
                     end) || _ <- lists:seq(1, ?MAX_WORKERS)],
    [receive {H, R} -> ?assertEqual(ok, R) after 30000 -> error(bind_timeout) end || H <- Holders],
    %% available_workers: how many more can be bound (erlang_python 1.x).
    ?assertMatch(#{checked_out := ?MAX_WORKERS, available_workers := 0}, py_pool:get_stats()),
    ?assertEqual({error, no_workers_available}, py:bind()),
    ?assertEqual({error, no_workers_available}, py:bind(new)),
    false = py:is_bound(),
    ?assertEqual({error, no_workers_available}, py:with_context(fun() -> unreachable end)),
    %% Stateless calls still run while every session is bound.
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    [H1 | Rest] = Holders,
    H1 ! release,
    receive {H1, released} -> ok end,
    ?assertEqual(ok, py:bind()),
    ok = py:unbind(),
    [begin H ! release, receive {H, released} -> ok end end || H <- Rest],
    wait_checked_out(0).

get_stats(_Config) ->
    Stats = py_pool:get_stats(),
    [?assert(is_integer(maps:get(K, Stats))) || K <- [num_workers, available_workers, checked_out,
                                                     pending_requests, max_workers, sessions]],
    ?assertEqual(?MAX_WORKERS, maps:get(max_workers, Stats)),
    ?assert(is_binary(maps:get(replica, Stats))),
    %% The server's idle warm workers (--workers=2) are idle_workers;
    %% available_workers is how many more workers can be bound.
    ?assert(is_integer(maps:get(idle_workers, Stats))),
    ?assertMatch(#{checked_out := 0, available_workers := ?MAX_WORKERS}, Stats),
    ok = py:bind(),
    {ok, Ctx} = py:bind(new),
    ?assertMatch(#{checked_out := 2, available_workers := ?MAX_WORKERS - 2}, py_pool:get_stats()),
    ok = py:unbind(Ctx),
    ok = py:unbind(),
    %% Unbind discards the worker, so the figures change at once.
    ?assertMatch(#{checked_out := 0, available_workers := ?MAX_WORKERS}, py_pool:get_stats()).

%% The timeout is the gRPC deadline: the server interrupts `while True:
%% pass' and the call returns {error, timeout} shortly after it.
timeout_interrupts_while_true(_Config) ->
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, py:call(builtins, exec, [<<"while True: pass">>], #{}, 500)),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ct:log("stateless timeout returned after ~b ms", [Elapsed]),
    %% The client keeps its deadline in whole milliseconds, so an answer
    %% that is exactly on time can measure as 499 ms here.
    ?assert(Elapsed >= 495),
    ?assert(Elapsed < 2400),
    %% In a session: the loop is interrupted, the session and its state
    %% survive.
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"state = 'kept'">>),
    ?assertEqual({error, timeout}, py:ctx_eval(Ctx, <<"exec('while True: pass')">>, #{}, 300)),
    ?assertEqual({ok, <<"kept">>}, py:ctx_eval(Ctx, <<"state">>)),
    ok = py:unbind(Ctx),
    %% No worker is left spinning.
    pyexec_test_util:wait_until(fun() -> maps:get(busy_workers, py_pool:get_stats()) =:= 0 end,
                                no_busy_workers).

%%====================================================================
%% 2.x: shared contexts
%%====================================================================

v2_seed_counter(_Config) ->
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"counter = 0">>),
    ok = py:exec(Ctx, <<"counter += 1">>),
    {ok, 1} = py:eval(Ctx, <<"counter">>),
    ok = py:exec(Ctx, <<"counter += 1">>),
    {ok, 2} = py:eval(Ctx, <<"counter">>).

v2_seed_isolated(_Config) ->
    Ctx1 = py:context(1),
    Ctx2 = py:context(2),
    ok = py:exec(Ctx1, <<"x = 'context one'">>),
    ok = py:exec(Ctx2, <<"x = 'context two'">>),
    {ok, <<"context one">>} = py:eval(Ctx1, <<"x">>),
    {ok, <<"context two">>} = py:eval(Ctx2, <<"x">>),
    %% Shared: another process sees the same namespace.
    Self = self(),
    spawn(fun() -> Self ! {other, py:eval(py:context(1), <<"x">>)} end),
    receive {other, R} -> ?assertEqual({ok, <<"context one">>}, R) end.

v2_bind_context(_Config) ->
    Ctx = py_context_router:get_context(),
    ok = py_context_router:bind_context(Ctx),
    true = py:is_bound(),
    ok = py:exec(<<"x = 42">>),
    {ok, 42} = py:eval(<<"x">>),
    ok = py_context_router:unbind_context(),
    false = py:is_bound(),
    %% The context itself keeps its state.
    {ok, 42} = py:eval(Ctx, <<"x">>).

v2_run_with_context(_Config) ->
    Run = fun(Fun) ->
                  Ctx = py_context_router:get_context(),
                  ok = py_context_router:bind_context(Ctx),
                  try Fun() after py_context_router:unbind_context() end
          end,
    Result = Run(fun() ->
                         ok = py:exec(<<"total = 0">>),
                         ok = py:exec(<<"for i in range(10): total += i">>),
                         py:eval(<<"total">>)
                 end),
    {ok, 45} = Result,
    false = py:is_bound().

v2_context_affinity(_Config) ->
    Ctx = py:context(),
    [?assertEqual(Ctx, begin erlang:yield(), py:context() end) || _ <- lists:seq(1, 100)],
    ?assertEqual(Ctx, py_context_router:get_context()),
    ?assert(lists:member(Ctx, py_context_router:contexts())),
    %% Processes are spread over the pool by scheduler.
    Self = self(),
    [spawn_opt(fun() -> Self ! {ctx, py:context()} end, [{scheduler, S}])
     || S <- lists:seq(1, erlang:system_info(schedulers_online))],
    Ctxs = [receive {ctx, C} -> C end || _ <- lists:seq(1, erlang:system_info(schedulers_online))],
    ?assert(lists:all(fun(C) -> lists:member(C, py_context_router:contexts()) end, Ctxs)),
    ?assertEqual(min(2, erlang:system_info(schedulers_online)), length(lists:usort(Ctxs))).

v2_router_functions(Config) ->
    ?assertEqual(2, py_context_router:num_contexts()),
    ?assertEqual(2, length(py_context_router:contexts())),
    ?assertEqual(py_context_router:contexts(), py_context_router:contexts(default)),
    ?assertEqual([py:context(1), py:context(2)], py_context_router:contexts()),
    ?assertEqual(1, length(py_context_router:contexts(io))),
    true = py_context_router:pool_started(default),
    true = py_context_router:pool_started(io),
    false = py_context_router:pool_started(nope),
    true = py:contexts_started(),
    IoCtx = py_context_router:get_context(io),
    ?assertEqual(IoCtx, py_context_router:get_context(io)),
    ok = py:exec(IoCtx, <<"io_state = 1">>),
    ?assertEqual({ok, 1}, py:eval(IoCtx, <<"io_state">>)),
    ?assertMatch({error, {'NameError', _}}, py:eval(py:context(1), <<"io_state">>)),
    ?assertError({badarg, _}, py:context(3)),
    pyexec_test_util:stop_app(),
    false = py:contexts_started(),
    false = py_context_router:pool_started(default),
    start_app(Config).

v2_call_with_ctx(_Config) ->
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"def f(a, b=0): return a - b">>),
    ?assertEqual({ok, 5}, py:call(Ctx, '__main__', f, [5])),
    ?assertEqual({ok, 3}, py:call(Ctx, '__main__', f, [5], #{kwargs => #{b => 2}})),
    ?assertEqual({ok, 1}, py:call(Ctx, '__main__', f, [5], [{kwargs, #{b => 4}}, {timeout, 5000}])),
    ?assertEqual({error, timeout},
                 py:call(Ctx, builtins, exec, [<<"while True: pass">>], #{timeout => 300})),
    ?assertEqual({ok, 4.0}, py:call(Ctx, math, sqrt, [16])),
    ?assertEqual({ok, 7}, py:eval(Ctx, <<"a + b">>, #{a => 3, b => 4})).

v2_seed_sqlite3(_Config) ->
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"
import sqlite3
conn = sqlite3.connect(':memory:')
cursor = conn.cursor()
cursor.execute('CREATE TABLE users (id INTEGER, name TEXT)')
">>),
    ok = py:exec(Ctx, <<"cursor.execute('INSERT INTO users VALUES (1, \"Alice\")')">>),
    ok = py:exec(Ctx, <<"cursor.execute('INSERT INTO users VALUES (2, \"Bob\")')">>),
    {ok, Users} = py:eval(Ctx, <<"cursor.execute('SELECT * FROM users').fetchall()">>),
    ?assertEqual([{1, <<"Alice">>}, {2, <<"Bob">>}], Users),
    ok = py:exec(Ctx, <<"conn.close()">>).

v2_seed_incremental(_Config) ->
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"results = []">>),
    lists:foreach(fun(Item) ->
                          {ok, none} = py:eval(Ctx, <<"results.append(item * 2)">>, #{item => Item})
                  end, [1, 2, 3, 4, 5]),
    {ok, [2, 4, 6, 8, 10]} = py:eval(Ctx, <<"results">>).

v2_unbind_leaves_shared_alone(_Config) ->
    Ctx = py:context(2),
    ok = py:exec(Ctx, <<"persist = 'still here'">>),
    ok = py:unbind(Ctx),
    ?assertEqual({ok, <<"still here">>}, py:eval(Ctx, <<"persist">>)).

%%====================================================================
%% Load
%%====================================================================

concurrent_1000_calls_100_procs(_Config) ->
    Parent = self(),
    T0 = erlang:monotonic_time(millisecond),
    Pids = [spawn_link(fun() ->
                               Res = [py:eval(<<"x * y">>, #{x => P, y => N}) || N <- lists:seq(1, 10)],
                               Parent ! {self(), P, Res}
                       end) || P <- lists:seq(1, 100)],
    [receive
         {Pid, P, Res} -> ?assertEqual([{ok, P * N} || N <- lists:seq(1, 10)], Res)
     after 120000 -> error({timeout, Pid})
     end || {Pid, P} <- lists:zip(Pids, lists:seq(1, 100))],
    Ms = erlang:monotonic_time(millisecond) - T0,
    ct:log("1000 calls from 100 processes in ~b ms (~.1f calls/s)", [Ms, 1000000 / max(Ms, 1)]),
    {comment, io_lib:format("~b ms", [Ms])}.

%%====================================================================
%% issue 11: fixes and the erlang_python 4.x calls
%%====================================================================

%% Python code can name exception classes at will; the type comes back as
%% an atom only when that atom already exists, else as a binary, so no
%% number of distinct names can fill the atom table.
exception_types_create_no_atoms(_Config) ->
    Code = <<"import uuid\n"
             "raise type('PyexecNoAtom' + uuid.uuid4().hex + 'Error', (Exception,), {})('boom')">>,
    %% One call first, so that loading the modules it needs (and their
    %% atoms) is not counted.
    {error, _} = py:exec(Code),
    Before = erlang:system_info(atom_count),
    Results = [py:exec(Code) || _ <- lists:seq(1, 50)],
    ?assert(erlang:system_info(atom_count) - Before < 25),
    [?assertMatch({error, {<<"PyexecNoAtom", _/binary>>, "boom"}}, R) || R <- Results],
    ?assertNotEqual(nomatch, binary:match(py:last_traceback(), <<"PyexecNoAtom">>)),
    %% Known exceptions keep erlang_python's atom, also built-in ones that no
    %% loaded code mentions (this module names it only as a binary).
    ?assertEqual({error, {'ZeroDivisionError', "division by zero"}}, py:eval(<<"1/0">>)),
    {error, {Buf, "b"}} = py:exec(<<"raise BufferError('b')">>),
    ?assert(is_atom(Buf)),
    ?assertEqual(<<"BufferError">>, atom_to_binary(Buf)).

%% bind_context/1 twice switches: get_context/0 and py:context/0 return the
%% bound context (erlang_python 4.x), and calls follow it.
v2_rebind_context_switches(_Config) ->
    [C1, C2] = py_context_router:contexts(),
    ok = py_context_router:bind_context(C1),
    ?assertEqual(C1, py_context_router:get_context()),
    ?assertEqual(C1, py:context()),
    ok = py_context_router:bind_context(C2),
    ?assertEqual(C2, py_context_router:get_context()),
    ?assertEqual(C2, py_context_router:get_context(default)),
    ?assertEqual(C2, py:context()),
    ok = py:exec(C2, <<"def where():\n    return 'c2'">>),
    ?assertEqual({ok, <<"c2">>}, py:call(default, '__main__', where, [])),
    ok = py:exec(<<"rebound_here = 2">>),
    ?assertEqual({ok, 2}, py:eval(C2, <<"rebound_here">>)),
    ?assertMatch({error, {'NameError', _}}, py:eval(C1, <<"rebound_here">>)),
    ok = py_context_router:bind_context(C1),
    ?assertEqual(C1, py:context()),
    ok = py_context_router:unbind_context(),
    false = py:is_bound(),
    ?assert(lists:member(py:context(), [C1, C2])),
    %% A private context can be bound too.
    {ok, P} = py:bind(new),
    ok = py_context_router:bind_context(P),
    ?assertEqual(P, py:context()),
    ok = py_context_router:unbind_context(),
    ok = py:unbind(P).

v2_get_context_integer(_Config) ->
    ?assertEqual(py:context(1), py_context_router:get_context(1)),
    ?assertEqual(py:context(2), py_context_router:get_context(2)),
    ?assertNotEqual(py_context_router:get_context(1), py_context_router:get_context(2)),
    ?assertError({badarg, _}, py_context_router:get_context(3)).

%% py:call(Pool, M, F, Args[, Kwargs]) runs on the caller's context of Pool.
v4_call_on_pool(_Config) ->
    [Io] = py_context_router:contexts(io),
    ?assertEqual(Io, py_context_router:get_context(io)),
    ok = py:exec(Io, <<"pool_marker = 'io'\ndef marker(suffix=''):\n    return pool_marker + suffix">>),
    ?assertEqual({ok, <<"io">>}, py:call(io, '__main__', marker, [])),
    ?assertEqual({ok, <<"io!">>}, py:call(io, '__main__', marker, [], #{suffix => <<"!">>})),
    ?assertEqual({ok, 4.0}, py:call(io, math, sqrt, [16])),
    ?assertEqual({ok, 4.0}, py:call(default, math, sqrt, [16])),
    %% The 1.x shapes are unchanged.
    ?assertEqual({ok, 255}, py:call(builtins, int, [<<"ff">>], #{base => 16})),
    ?assertEqual({ok, 255}, py:call(builtins, int, [<<"ff">>], #{base => 16}, 5000)).

v4_spawn_call_await(_Config) ->
    Ref = py:spawn_call(math, sqrt, [16]),
    ?assert(is_reference(Ref)),
    ?assertEqual({ok, 4.0}, py:await(Ref)),
    ?assertEqual({ok, 255}, py:await(py:spawn_call(builtins, int, [<<"ff">>], #{base => 16}), 5000)),
    ?assertEqual({error, {'ValueError', "math domain error"}}, py:await(py:spawn_call(math, sqrt, [-1]))),
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"import time\ndef slow(x, scale=1):\n    time.sleep(x)\n    return x * scale">>),
    Slow = py:spawn_call(Ctx, '__main__', slow, [0.5]),
    ?assertEqual({error, timeout}, py:await(Slow, 50)),
    %% The call went on and its result can still be collected.
    ?assertEqual({ok, 0.5}, py:await(Slow, 5000)),
    ?assertEqual({ok, 1.5}, py:await(py:spawn_call(Ctx, '__main__', slow, [0.5], #{scale => 3}))),
    %% A bound caller's spawn_call runs on its binding, like its call/3.
    ok = py:bind(),
    ok = py:exec(<<"def mine():\n    return 'mine'">>),
    ?assertEqual({ok, <<"mine">>}, py:await(py:spawn_call('__main__', mine, []))),
    ok = py:unbind(),
    %% Many at once, answered by reference.
    Refs = [{N, py:spawn_call(math, factorial, [N])} || N <- lists:seq(1, 30)],
    [?assertEqual({ok, lists:foldl(fun erlang:'*'/2, 1, lists:seq(1, N))}, py:await(R))
     || {N, R} <- lists:reverse(Refs)],
    %% A context that was unbound is an error, not a crash of the caller.
    {ok, P} = py:bind(new),
    ok = py:unbind(P),
    ?assertEqual({error, context_not_bound}, py:await(py:spawn_call(P, math, sqrt, [4]))).

v4_cast(_Config) ->
    Ctx = py:context(2),
    ok = py:exec(Ctx, <<"cast_marks = []\ndef mark(v, times=1):\n    cast_marks.extend([v] * times)">>),
    ?assertEqual(ok, py:cast(Ctx, '__main__', mark, [1])),
    ?assertEqual(ok, py:cast(Ctx, '__main__', mark, [2], #{times => 2})),
    pyexec_test_util:wait_until(fun() -> {ok, [1, 2, 2]} =:= py:eval(Ctx, <<"sorted(cast_marks)">>) end,
                                cast_marks),
    ok = py_context_router:bind_context(Ctx),
    ?assertEqual(ok, py:cast('__main__', mark, [3])),
    ?assertEqual(ok, py:cast('__main__', mark, [4], #{times => 1})),
    ok = py_context_router:unbind_context(),
    pyexec_test_util:wait_until(fun() -> {ok, [1, 2, 2, 3, 4]} =:= py:eval(Ctx, <<"sorted(cast_marks)">>) end,
                                cast_marks_bound),
    %% A cast whose call fails is still ok for the caller.
    ?assertEqual(ok, py:cast(math, sqrt, [-1])).

v4_async_call_coroutines(_Config) ->
    %% asyncio.sleep(delay, result) is a coroutine function.
    Ref = py:async_call(asyncio, sleep, [0.01, 5]),
    ?assert(is_reference(Ref)),
    ?assertEqual({ok, 5}, py:async_await(Ref)),
    ?assertEqual({ok, <<"r">>}, py:async_await(py:async_call(asyncio, sleep, [0], #{result => <<"r">>}), 5000)),
    Slow = py:async_call(asyncio, sleep, [0.5, slow]),
    ?assertEqual({error, timeout}, py:async_await(Slow, 50)),
    ?assertEqual({ok, <<"slow">>}, py:async_await(Slow)),
    %% A plain function's result is returned as is.
    ?assertEqual({ok, 3.0}, py:async_await(py:async_call(math, sqrt, [9]))),
    %% Coroutines defined in the caller's session.
    ok = py:bind(),
    ok = py:exec(<<"import asyncio\nasync def twice(x):\n    await asyncio.sleep(0)\n    return 2 * x\n"
                   "async def boom():\n    raise KeyError('k')">>),
    ?assertEqual({ok, 42}, py:async_await(py:async_call('__main__', twice, [21]))),
    ?assertMatch({error, {'KeyError', _}}, py:async_await(py:async_call('__main__', boom, []))),
    ok = py:unbind().

v4_async_gather(_Config) ->
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({ok, [1, 2, 2.0]},
                 py:async_gather([{asyncio, sleep, [1, 1]}, {asyncio, sleep, [1, 2]},
                                  {math, sqrt, [4]}])),
    %% The calls ran at once (on two pooled workers): one after the other
    %% they would take at least 2 s.
    ?assert(erlang:monotonic_time(millisecond) - T0 < 1900),
    ?assertMatch({error, {gather_failed, [{2, {'ValueError', _}}]}},
                 py:async_gather([{math, sqrt, [4]}, {math, sqrt, [-1]}], 5000)),
    ?assertEqual({ok, []}, py:async_gather([])).

%% Refs (`#{return => ref}') do not exist yet: refused, never ignored.
v4_return_ref(_Config) ->
    %% erlang_python's example (more in py_stream_SUITE).
    {ok, Ref} = py:call(py:context(1), builtins, list, [[1, 2, 3]], #{return => ref}),
    ?assert(py:is_ref(Ref)),
    ?assertEqual({ok, 3}, py:call_method(Ref, '__len__', [])),
    ?assertEqual(ok, py:release(Ref)).
