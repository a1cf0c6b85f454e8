%% Helpers shared by the Common Test suites: start and stop external servers
%% (pyexecd, the grpcio test server) and the pyexec application.
-module(pyexec_test_util).

-export([pyexecd_path/0, repo_root/0,
         start_server/2, start_server/3, stop_server/2, server_output/1,
         start_app/1, stop_app/0, wait_until/2, wait_until/3]).

%% The repository root, found from this module's source path so that the
%% suites work wherever rebar3 runs them from.
repo_root() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:join(lists:sublist(filename:split(Src), length(filename:split(Src)) - 5)).

%% $PYEXECD if set, else bazel-bin/server/pyexecd under the repository root.
pyexecd_path() ->
    case os:getenv("PYEXECD") of
        P when P =:= false; P =:= "" -> filename:join(repo_root(), "bazel-bin/server/pyexecd");
        P -> P
    end.

start_server(Exe, Args) ->
    start_server(Exe, Args, 60000).

%% Starts Exe and waits for its "listening on HOST:PORT" line. Returns a map
%% with the port number and the OS pid. A process owns the Erlang port and
%% keeps the server's output (for server_output/1 and the CT log).
start_server(Exe, Args, Timeout) ->
    Parent = self(),
    Ref = make_ref(),
    Owner = spawn(fun() -> owner(Parent, Ref, Exe, Args) end),
    receive
        {Ref, {ok, Port, OsPid}} ->
            {ok, #{port => Port, os_pid => OsPid, owner => Owner}};
        {Ref, {error, _} = E} ->
            E
    after Timeout ->
            exit(Owner, kill),
            {error, {timeout_waiting_for_listen_line, Exe}}
    end.

owner(Parent, Ref, Exe, Args) ->
    P = open_port({spawn_executable, Exe},
                  [{args, Args}, {line, 4096}, binary, exit_status, stderr_to_stdout, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(P, os_pid),
    wait_listen(P, Parent, Ref, OsPid, []).

wait_listen(P, Parent, Ref, OsPid, Lines) ->
    receive
        {P, {data, {eol, <<"listening on ", Addr/binary>> = L}}} ->
            [_, PortBin] = string:split(Addr, ":", trailing),
            Parent ! {Ref, {ok, binary_to_integer(string:trim(PortBin)), OsPid}},
            loop(P, [L | Lines], undefined);
        {P, {data, {_, L}}} ->
            wait_listen(P, Parent, Ref, OsPid, [L | Lines]);
        {P, {exit_status, S}} ->
            Parent ! {Ref, {error, {exited, S, lists:reverse(Lines)}}}
    end.

loop(P, Lines, Waiter) ->
    receive
        {P, {data, {_, L}}} ->
            loop(P, [L | Lines], Waiter);
        {P, {exit_status, S}} ->
            case Waiter of
                undefined -> ok;
                {W, R} -> W ! {R, {exited, S}}
            end,
            exit_loop(Lines, S);
        {output, From, R} ->
            From ! {R, lists:reverse(Lines)},
            loop(P, Lines, Waiter);
        {wait_exit, From, R} ->
            loop(P, Lines, {From, R})
    end.

exit_loop(Lines, S) ->
    receive
        {output, From, R} -> From ! {R, lists:reverse(Lines)}, exit_loop(Lines, S);
        {wait_exit, From, R} -> From ! {R, {exited, S}}, exit_loop(Lines, S)
    after 60000 -> ok
    end.

%% Sends Signal ("TERM", "KILL") to the server and waits for it to exit.
%% Returns its exit status.
stop_server(#{os_pid := OsPid, owner := Owner}, Signal) ->
    _ = os:cmd("kill -" ++ Signal ++ " " ++ integer_to_list(OsPid)),
    R = make_ref(),
    Owner ! {wait_exit, self(), R},
    receive
        {R, {exited, S}} -> {exited, S}
    after 30000 ->
            _ = os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
            timeout
    end.

server_output(#{owner := Owner}) ->
    R = make_ref(),
    Owner ! {output, self(), R},
    receive {R, Lines} -> Lines after 5000 -> [] end.

%% (Re)starts the pyexec application with Env (a proplist) on top of a
%% clean environment.
start_app(Env) ->
    stop_app(),
    application:load(pyexec),
    [application:unset_env(pyexec, K) || {K, _} <- application:get_all_env(pyexec)],
    [application:set_env(pyexec, K, V) || {K, V} <- Env],
    {ok, _} = application:ensure_all_started(pyexec),
    ok.

stop_app() ->
    _ = application:stop(pyexec),
    ok.

wait_until(Fun, What) ->
    wait_until(Fun, What, 10000).

%% Polls Fun every 20 ms until it returns true; fails with What after
%% Timeout ms. Used for conditions another process establishes
%% asynchronously (a monitor firing, a reconnect), never as a plain sleep.
wait_until(Fun, What, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_loop(Fun, What, Deadline).

wait_loop(Fun, What, Deadline) ->
    case Fun() of
        true -> ok;
        Other ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({timeout_waiting_for, What, Other});
                false -> timer:sleep(20), wait_loop(Fun, What, Deadline)
            end
    end.
