%% The grpcbox transport. grpcbox cannot be fetched here, so:
%% 1. without grpcbox, pyexec_grpcbox must load and fail cleanly;
%% 2. with stand-ins for grpcbox_client, grpcbox_channel_sup and ctx that
%%    enforce grpcbox's API contract (see the _data directory), the `py' API
%%    must work end to end against the real pyexecd through
%%    {transport, grpcbox}: our #grpcbox_def{} marshal/unmarshal functions,
%%    deadline passing and status mapping are real; grpcbox's own HTTP/2
%%    stack is not exercised.
-module(pyexec_grpcbox_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [loads_without_grpcbox, start_fails_cleanly_without_grpcbox, {group, with_grpcbox}].

groups() ->
    [{with_grpcbox, [sequence], [api_over_grpcbox, errors_over_grpcbox, bind_limit_over_grpcbox]}].

init_per_suite(Config) ->
    {ok, Srv} = pyexec_test_util:start_server(pyexec_test_util:pyexecd_path(),
                                              ["--listen=127.0.0.1:0", "--workers=1",
                                               "--max_workers=2"]),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

init_per_group(with_grpcbox, Config) ->
    Ebin = filename:join([?config(priv_dir, Config), "grpcbox", "ebin"]),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    [begin
         Src = filename:join(?config(priv_dir, Config), M ++ ".erl"),
         {ok, _} = file:copy(filename:join(?config(data_dir, Config), M ++ ".erl.fake"), Src),
         {ok, _} = compile:file(Src, [{outdir, Ebin}, report])
     end || M <- ["grpcbox_client", "grpcbox_channel_sup", "ctx"]],
    ok = file:write_file(filename:join(Ebin, "grpcbox.app"),
                         io_lib:format("~p.~n", [{application, grpcbox,
                                                  [{vsn, "fake"}, {modules, []},
                                                   {registered, []},
                                                   {applications, [kernel, stdlib]}]}])),
    true = code:add_patha(Ebin),
    persistent_term:put(fake_grpcbox_calls, counters:new(1, [])),
    start_app(Config, []),
    [{ebin, Ebin} | Config].

end_per_group(with_grpcbox, Config) ->
    pyexec_test_util:stop_app(),
    code:del_path(?config(ebin, Config)),
    [begin code:purge(M), code:delete(M) end || M <- [grpcbox_client, grpcbox_channel_sup, ctx]],
    application:unload(grpcbox),
    ok.

start_app(Config, Extra) ->
    #{port := Port} = ?config(srv, Config),
    pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", Port}]},
                                {transport, grpcbox}, {grpcbox_channel, pyexec_test_channel}
                                | Extra]).

calls() -> counters:get(persistent_term:get(fake_grpcbox_calls), 1).

%%--------------------------------------------------------------------

loads_without_grpcbox(_Config) ->
    ?assertEqual(non_existing, code:which(grpcbox_client)),
    ?assertEqual({module, pyexec_grpcbox}, code:ensure_loaded(pyexec_grpcbox)),
    ?assertEqual({error, {grpc, unavailable, <<"grpcbox is not installed">>}},
                 pyexec_grpcbox:unary(get_stats, #{}, 1000)).

start_fails_cleanly_without_grpcbox(_Config) ->
    pyexec_test_util:stop_app(),
    ok = application:set_env(pyexec, transport, grpcbox),
    try
        ?assertMatch({error, {pyexec, {{shutdown, {failed_to_start_child, pyexec_grpcbox,
                                                   {grpcbox_not_available, _}}}, _}}},
                     application:ensure_all_started(pyexec)),
        ?assertEqual(undefined, whereis(pyexec_sup))
    after
        application:unset_env(pyexec, transport)
    end.

api_over_grpcbox(_Config) ->
    Before = calls(),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual(ok, py:exec(<<"x = 1">>)),
    ?assertEqual({ok, #{<<"k">> => {1, {set, [2]}, {bytes, <<3>>}}}},
                 py:eval(<<"v">>, #{v => #{k => {1, {set, [2]}, {bytes, <<3>>}}}})),
    ok = py:bind(),
    ok = py:exec(<<"counter = 41">>),
    ?assertEqual({ok, 42}, py:eval(<<"counter + 1">>)),
    ok = py:unbind(),
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"y = 'ctx'">>),
    ?assertEqual({ok, <<"ctx">>}, py:ctx_eval(Ctx, <<"y">>)),
    ok = py:unbind(Ctx),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"y">>)),
    ?assertMatch(#{num_workers := _, checked_out := 0}, py_pool:get_stats()),
    %% Each of the 13 RPCs above went through grpcbox_client:unary/5.
    ?assertEqual(13, calls() - Before).

errors_over_grpcbox(_Config) ->
    ?assertEqual({error, {'ZeroDivisionError', "division by zero"}}, py:eval(<<"1/0">>)),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, py:call(builtins, exec, [<<"while True: pass">>], #{}, 400)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 2400),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)).

bind_limit_over_grpcbox(_Config) ->
    {ok, A} = py:bind(new),
    {ok, B} = py:bind(new),
    ?assertEqual({error, no_workers_available}, py:bind(new)),
    ok = py:unbind(A),
    ok = py:unbind(B).
