%% Leases (issue 19): sessions are tied to the process that bound them (a
%% monitor) and to this node (an Attach stream per session), against a real
%% pyexecd with --lease_grace=1s and a short idle timeout.
%%
%% The node-death cases start a second Erlang node as an OS process (erl
%% -noshell with this application's ebin), which binds and prints its
%% session token; the suite then kills it with SIGKILL and asks the server
%% about the token directly.
-module(py_lease_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(GRACE_MS, 1000).

all() ->
    [node_killed_lease_ends_within_grace, node_killed_without_lease_session_stays,
     process_exit_unbinds_at_once, leased_session_does_not_expire_idle,
     connection_lost_lease_attached_again, session_ended_elsewhere_is_lost,
     shared_context_ended_elsewhere].

init_per_suite(Config) ->
    Exe = pyexec_test_util:pyexecd_path(),
    filelib:is_regular(Exe) orelse ct:fail({pyexecd_not_found, Exe, "build it or set PYEXECD"}),
    {ok, Srv} = pyexec_test_util:start_server(
                  Exe, ["--listen=127.0.0.1:0", "--workers=2", "--max_workers=6",
                        "--lease_grace=1s", "--session_idle_timeout=3s",
                        "--worker_max_processes=0"]),
    start_app(Srv),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

start_app(#{port := Port}) ->
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", Port}]}, {num_contexts, 1}]).

end_per_testcase(_TC, _Config) ->
    py:unbind(),
    ok.

%% eval("1") on a raw token, straight to the server.
eval_token(Token) ->
    pyexec_rpc:call(eval, #{session => Token, code => <<"1">>}, 5000).

%%--------------------------------------------------------------------

node_killed_lease_ends_within_grace(Config) ->
    {Token, Node} = child_node(Config, []),
    ?assertMatch({ok, #{value := 1}}, eval_token(Token)),
    T0 = kill_node(Node),
    %% Within the grace plus 1.5 s, well before the 3 s idle timeout would
    %% end an unleased session.
    Ms = wait_not_found(Token, T0, ?GRACE_MS + 1500),
    Line = io_lib:format("lease: session gone ~b ms after SIGKILL of its node (--lease_grace=1s)",
                         [Ms]),
    ct:pal("~s", [Line]),
    io:format(user, "~s~n", [Line]),
    ?assert(Ms >= ?GRACE_MS - 100).

node_killed_without_lease_session_stays(Config) ->
    {Token, Node} = child_node(Config, [{lease, false}]),
    kill_node(Node),
    %% Past the grace (within the 3 s idle timeout): nothing ended the
    %% session.
    timer:sleep(?GRACE_MS + 700),
    ?assertMatch({ok, #{value := 1}}, eval_token(Token)),
    {ok, _} = pyexec_rpc:call(unbind, #{session => Token}, 5000).

process_exit_unbinds_at_once(_Config) ->
    Self = self(),
    Pid = spawn(fun() -> ok = py:bind(), Self ! {token, token()}, receive stop -> ok end end),
    Token = receive {token, T} -> T after 10000 -> ct:fail(no_token) end,
    T0 = erlang:monotonic_time(millisecond),
    Pid ! stop,
    Ms = wait_not_found(Token, T0, 2000),
    ct:pal("session gone ~b ms after its process exited", [Ms]),
    ?assert(Ms < ?GRACE_MS).

%% The server's idle timeout (3 s here) does not end a leased session.
leased_session_does_not_expire_idle(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"kept = 1">>),
    timer:sleep(4000),
    ?assertEqual({ok, 1}, py:eval(<<"kept">>)).

%% The connections drop (their processes are killed and restart): each
%% lease attaches again within the grace, and the session is kept.
connection_lost_lease_attached_again(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"kept = 2">>),
    [exit(Pid, kill) || {I, Pid, _} <- ets:tab2list(pyexec_conns), is_integer(I)],
    timer:sleep(?GRACE_MS + 1000),
    ?assertEqual({ok, 2}, py:eval(<<"kept">>)).

%% Unbound behind this client's back (another client with the token): the
%% lease sees the session end, and the next call of the process bound to
%% it gets session_lost, as if it had found it gone; then the binding is
%% dropped and bind/0 starts afresh.
session_ended_elsewhere_is_lost(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"x = 1">>),
    Token = token(),
    {ok, _} = pyexec_rpc:call(unbind, #{session => Token}, 5000),
    pyexec_test_util:wait_until(
      fun() -> [{_, Id}] = ets:lookup(pyexec_bound, self()),
               ets:lookup(pyexec_ctx, Id) =:= [{Id, lost, self(), implicit}]
      end, marked_lost),
    ?assertEqual({error, session_lost}, py:eval(<<"x">>)),
    ?assertNot(py:is_bound()),
    ok = py:bind(),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"x">>)).

shared_context_ended_elsewhere(_Config) ->
    Ctx = py:context(1),
    ok = py:exec(Ctx, <<"y = 1">>),
    {py_ctx, Id} = Ctx,
    [{_, Token, shared, shared}] = ets:lookup(pyexec_ctx, Id),
    {ok, _} = pyexec_rpc:call(unbind, #{session => Token}, 5000),
    pyexec_test_util:wait_until(fun() -> ets:lookup(pyexec_ctx, Id) =:= [{Id, lost, shared, shared}] end,
                                marked_lost),
    ?assertEqual({error, session_lost}, py:eval(Ctx, <<"y">>)),
    %% A fresh session next time, without the old state.
    ?assertMatch({error, {'NameError', _}}, py:eval(Ctx, <<"y">>)).

%%--------------------------------------------------------------------

token() ->
    [{_, Id}] = ets:lookup(pyexec_bound, self()),
    [{_, Token, _, _}] = ets:lookup(pyexec_ctx, Id),
    Token.

%% Polls eval_token/1 until NOT_FOUND; ms since T0.
wait_not_found(Token, T0, Max) ->
    case eval_token(Token) of
        {error, {grpc, not_found, _}} ->
            erlang:monotonic_time(millisecond) - T0;
        R ->
            %% ABORTED: the poll raced with the session's end.
            ok = case R of
                     {ok, _} -> ok;
                     {error, {grpc, aborted, _}} -> ok;
                     _ -> R
                 end,
            case erlang:monotonic_time(millisecond) - T0 > Max of
                true -> ct:fail({session_still_there_after_ms, Max});
                false -> timer:sleep(20), wait_not_found(Token, T0, Max)
            end
    end.

%% Another node, bound to a session: {Token, Node}.
child_node(Config, Env) ->
    #{port := Port} = ?config(srv, Config),
    Erl = os:find_executable("erl"),
    Ebin = filename:dirname(code:which(py)),
    AppEnv = [{endpoints, [{"127.0.0.1", Port}]} | Env],
    Eval = lists:flatten(
             io_lib:format("application:load(pyexec), "
                           "[application:set_env(pyexec, K, V) || {K, V} <- ~w], "
                           "{ok, _} = application:ensure_all_started(pyexec), "
                           "ok = py:bind(), {ok, 1} = py:eval(<<\"1\">>), "
                           "[{_, Id}] = ets:lookup(pyexec_bound, self()), "
                           "[{_, T, _, _}] = ets:lookup(pyexec_ctx, Id), "
                           "io:format(\"token ~~s~~n\", [T]), "
                           "receive after infinity -> ok end.", [AppEnv])),
    P = open_port({spawn_executable, Erl},
                  [{args, ["-noshell", "-pa", Ebin, "-eval", Eval]},
                   {line, 4096}, binary, exit_status, stderr_to_stdout]),
    {os_pid, OsPid} = erlang:port_info(P, os_pid),
    Token = receive
                {P, {data, {eol, <<"token ", T/binary>>}}} -> T;
                {P, {exit_status, S}} -> ct:fail({child_node_exited, S})
            after 30000 -> ct:fail(child_node_no_token)
            end,
    {Token, {P, OsPid}}.

%% SIGKILL; returns the time it was sent.
kill_node({P, OsPid}) ->
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    receive {P, {exit_status, _}} -> ok after 10000 -> ct:fail(child_node_survived) end,
    T0.
