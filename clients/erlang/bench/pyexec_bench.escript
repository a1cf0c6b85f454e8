#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% Latency and throughput of the Erlang client against a pyexecd it starts,
%% with a bare-gRPC baseline in the same run: the same client calling the C++
%% echo server (bench/echo_server_main), so the difference is pyexec's cost.
%%
%%   clients/erlang/bench/pyexec_bench.escript [Seconds] [Processes]
%%
%% Environment: PYEXECD, ECHO_SERVER (defaults: bazel-bin/server/pyexecd,
%% bazel-bin/bench/echo_server_main), CONNECTIONS (HTTP/2 connections of the
%% client, default 2). Build first with `rebar3 compile` in clients/erlang/pyexec.
-mode(compile).

main(Args) ->
    {Secs, Procs} = case Args of
                        [] -> {5, 50};
                        [S] -> {list_to_integer(S), 50};
                        [S, P | _] -> {list_to_integer(S), list_to_integer(P)}
                    end,
    Here = filename:dirname(filename:absname(escript:script_name())),
    Root = filename:dirname(filename:dirname(filename:dirname(Here))),
    true = code:add_patha(filename:join(filename:dirname(Here),
                                        "pyexec/_build/default/lib/pyexec/ebin")),
    Pyexecd = env("PYEXECD", filename:join(Root, "bazel-bin/server/pyexecd")),
    Echo = env("ECHO_SERVER", filename:join(Root, "bazel-bin/bench/echo_server_main")),
    Conns = list_to_integer(env("CONNECTIONS", "2")),
    %% The same server flags as the C++ bench's compare mode.
    {PyPort, PyOs} = start(Pyexecd, ["--listen=127.0.0.1:0", "--workers=9", "--max_workers=16"]),
    io:format("pyexecd on port ~b; ~b s per phase; ~b processes for throughput; ~b schedulers; "
              "~b connections~n", [PyPort, Secs, Procs, erlang:system_info(schedulers_online), Conns]),
    app([{endpoints, [{"127.0.0.1", PyPort}]}, {connections, Conns}]),
    ok = py:bind(),
    {ok, 2} = py:eval(<<"1+1">>),
    EvalLat = phase(1, Secs, fun() -> {ok, 2} = py:eval(<<"1+1">>) end),
    ok = py:unbind(),
    %% Like the C++ bench: 8 clients, each with its own bound session.
    Eval8 = phase(8, Secs, fun() -> {ok, 2} = py:eval(<<"1+1">>) end,
                  fun() -> ok = py:bind() end),
    EvalTput = phase(Procs, Secs, fun() -> {ok, 2} = py:eval(<<"1+1">>) end),
    kill(PyOs),
    Rows = [{"pyexec Eval \"1+1\", 1 process, bound session", EvalLat},
            {io_lib:format("pyexec Eval \"1+1\", ~b processes, stateless", [Procs]), EvalTput},
            {"pyexec Eval \"1+1\", 8 processes, bound session each", Eval8}],
    EchoRows = case filelib:is_regular(Echo) of
                   true ->
                       {EPort, EOs} = start(Echo, ["--listen=127.0.0.1:0"]),
                       app([{endpoints, [{"127.0.0.1", EPort}]}, {connections, Conns}]),
                       Call = fun() ->
                                      {ok, <<10, 1, "x">>} =
                                          pyexec_grpc:request(<<"/pyexec.bench.Echo/Echo">>,
                                                              <<10, 1, "x">>, 30000)
                                  end,
                       Call(),
                       R = [{"bare gRPC echo, 1 process", phase(1, Secs, Call)},
                            {io_lib:format("bare gRPC echo, ~b processes", [Procs]),
                             phase(Procs, Secs, Call)},
                            {"bare gRPC echo, 8 processes", phase(8, Secs, Call)}],
                       kill(EOs),
                       R;
                   false ->
                       io:format("(no echo server at ~s: baseline skipped)~n", [Echo]),
                       []
               end,
    io:format("~n~-52s ~10s ~10s ~10s~n", ["phase", "calls/s", "p50 us", "p99 us"]),
    [io:format("~-52s ~10b ~10b ~10b~n", [Name, Rate, P50, P99])
     || {Name, #{rate := Rate, p50 := P50, p99 := P99}} <- Rows ++ EchoRows],
    case EchoRows of
        [{_, #{p50 := E50}}, {_, #{rate := ERate}}, {_, #{rate := E8}}] ->
            [{_, #{p50 := P50}}, {_, #{rate := PRate}}, {_, #{rate := P8}}] = Rows,
            io:format("~nEval/echo: latency p50 ~.2fx; throughput ~.2fx (~b processes), "
                      "~.2fx (8 processes)~n",
                      [P50 / max(E50, 1), PRate / max(ERate, 1), Procs, P8 / max(E8, 1)]);
        _ -> ok
    end,
    application:stop(pyexec).

phase(N, Secs, Fun) ->
    phase(N, Secs, Fun, fun() -> ok end).

%% Runs Setup then Fun in a loop in N processes for Secs seconds; returns the
%% call rate and latency percentiles over all calls.
phase(N, Secs, Fun, Setup) ->
    Parent = self(),
    Pids = [spawn_link(fun() ->
                               Setup(),
                               Parent ! {ready, self()},
                               receive {go, Until} -> Parent ! {self(), loop(Fun, Until, [])} end
                       end) || _ <- lists:seq(1, N)],
    [receive {ready, P} -> ok end || P <- Pids],
    Until = erlang:monotonic_time(microsecond) + Secs * 1000000,
    [P ! {go, Until} || P <- Pids],
    Lats = lists:sort(lists:append([receive {P, L} -> L end || P <- Pids])),
    Count = length(Lats),
    #{rate => round(Count / Secs), p50 => pct(Lats, Count, 0.50), p99 => pct(Lats, Count, 0.99)}.

loop(Fun, Until, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    case T0 >= Until of
        true -> Acc;
        false ->
            Fun(),
            loop(Fun, Until, [erlang:monotonic_time(microsecond) - T0 | Acc])
    end.

pct(_, 0, _) -> 0;
pct(Sorted, Count, P) -> lists:nth(max(1, min(Count, round(Count * P))), Sorted).

app(Env) ->
    _ = application:stop(pyexec),
    application:load(pyexec),
    [application:set_env(pyexec, K, V) || {K, V} <- Env],
    {ok, _} = application:ensure_all_started(pyexec).

env(Name, Default) ->
    case os:getenv(Name) of
        V when V =:= false; V =:= "" -> Default;
        V -> V
    end.

%% Starts a server and waits for its "listening on HOST:PORT" line.
start(Exe, Args) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, {line, 4096}, binary, exit_status, stderr_to_stdout]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    wait(Port, OsPid).

wait(Port, OsPid) ->
    receive
        {Port, {data, {eol, <<"listening on ", Addr/binary>>}}} ->
            [_, P] = string:split(Addr, ":", trailing),
            %% Hand the port to a process that discards the server's log
            %% lines, so they do not pile up in this mailbox.
            Drain = spawn(fun Drain() -> receive _ -> Drain() end end),
            true = erlang:port_connect(Port, Drain),
            unlink(Port),
            {binary_to_integer(string:trim(P)), OsPid};
        {Port, {data, _}} ->
            wait(Port, OsPid);
        {Port, {exit_status, S}} ->
            io:format("server exited with ~p~n", [S]),
            halt(1)
    after 60000 ->
            io:format("server did not start~n"),
            halt(1)
    end.

kill(OsPid) ->
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)).
