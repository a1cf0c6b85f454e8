%% Snapshot and restore (issue 17): py:snapshot/0,1,2, py:restore/1,2 and
%% bind(new, #{restore => Blob}) against a real pyexecd started by the suite
%% (one replica, no peer secret: its blobs are sealed with a key of its
%% own process).
-module(py_snapshot_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [state_functions_classes_restored, lost_names_listed, restore_hook,
     restore_reports_what_did_not_come_back, forged_and_tampered_blobs_refused,
     process_binding_and_shared_context, bind_new_with_restore_and_no_lease,
     snapshot_of_an_unbound_context, restored_context_released_with_its_owner].

init_per_suite(Config) ->
    Exe = pyexec_test_util:pyexecd_path(),
    filelib:is_regular(Exe) orelse ct:fail({pyexecd_not_found, Exe, "build it or set PYEXECD"}),
    {ok, Srv} = pyexec_test_util:start_server(
                  Exe, ["--listen=127.0.0.1:0", "--workers=2", "--max_workers=8",
                        "--lease_grace=1s", "--worker_max_processes=0"]),
    #{port := Port} = Srv,
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", Port}]}, {num_contexts, 1}]),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

end_per_testcase(_TC, _Config) ->
    py:unbind(),
    ok.

%%--------------------------------------------------------------------

state_functions_classes_restored(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"
import json, collections
x = 41
table = {i: i * i for i in range(1000)}
def f(a):
    return a + x + 1 - x
class Counter:
    def __init__(self, n):
        self.n = n
    def bump(self):
        self.n += 1
        return self.n
c = Counter(10)
sq = lambda v: v * v
Pair = collections.namedtuple('Pair', 'a b')
p = Pair(1, 2)
">>),
    {T, {ok, Blob, Lost}} = timer:tc(fun() -> py:snapshot(Ctx) end),
    ?assert(is_binary(Blob)),
    ?assertEqual([], Lost),
    ct:pal("snapshot: ~b bytes in ~b ms", [byte_size(Blob), T div 1000]),
    {ok, R, []} = py:restore(Blob),
    ?assertNotEqual(token(Ctx), token(R)),
    ?assertEqual({ok, 42}, py:eval(R, <<"f(x)">>)),
    ?assertEqual({ok, 11}, py:call(R, '__main__', 'c.bump', [])),
    ?assertEqual({ok, 12}, py:eval(R, <<"c.bump()">>)),
    ?assertEqual({ok, 5}, py:eval(R, <<"Counter(4).bump()">>)),
    ?assertEqual({ok, 49}, py:eval(R, <<"sq(7)">>)),
    ?assertEqual({ok, 998001}, py:eval(R, <<"table[999]">>)),
    ?assertEqual({ok, <<"[1, 2]">>}, py:eval(R, <<"json.dumps(list(p))">>)),
    %% Two sessions from then on: the original is unchanged and usable.
    ?assertEqual({ok, 11}, py:eval(Ctx, <<"c.bump()">>)),
    ok = py:exec(R, <<"x = 0">>),
    ?assertEqual({ok, 41}, py:eval(Ctx, <<"x">>)),
    %% A blob restores any number of times, each a fresh session.
    {ok, R2, []} = py:restore(Blob),
    ?assertEqual({ok, {41, 11}}, py:eval(R2, <<"(x, c.bump())">>)),
    [ok = py:unbind(C) || C <- [Ctx, R, R2]].

lost_names_listed(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"import socket, threading\n"
                        "s = socket.socket()\nlock = threading.Lock()\n"
                        "gen = (i for i in range(3)); next(gen)\nkept = [1, 2, 3]">>),
    {ok, Blob, Lost} = py:snapshot(Ctx),
    ct:pal("lost: ~p", [Lost]),
    Names = lists:sort([N || #{name := N} <- Lost]),
    ?assertEqual([<<"gen">>, <<"lock">>, <<"s">>], Names),
    [S] = [L || #{name := <<"s">>} = L <- Lost],
    ?assertMatch(#{type := <<"socket.socket">>, reason := <<_, _/binary>>}, S),
    {ok, R, []} = py:restore(Blob),
    ?assertEqual({ok, [1, 2, 3]}, py:eval(R, <<"kept">>)),
    ?assertEqual({ok, [false, false, false]},
                 py:eval(R, <<"[n in globals() for n in ('s', 'lock', 'gen')]">>)),
    ok = py:exec(Ctx, <<"s.close()">>),
    [ok = py:unbind(C) || C <- [Ctx, R]].

restore_hook(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"import socket\nport = 4242\ns = socket.socket()\n"
                        "def __pyexec_restore__():\n"
                        "    global s, reopened\n"
                        "    s = socket.socket()\n"
                        "    reopened = port\n">>),
    {ok, Blob, [#{name := <<"s">>}]} = py:snapshot(Ctx),
    {ok, R, []} = py:restore(Blob),
    ?assertEqual({ok, {4242, <<"socket">>}}, py:eval(R, <<"(reopened, type(s).__name__)">>)),
    ok = py:exec(R, <<"s.close()">>),
    ok = py:exec(Ctx, <<"s.close()">>),
    [ok = py:unbind(C) || C <- [Ctx, R]].

%% A module that no longer imports where the blob is restored (here: one
%% that existed only in sys.modules), and a restore hook that raises: the
%% state is restored all the same, and Lost says what is missing.
restore_reports_what_did_not_come_back(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"import sys, types\n"
                        "sys.modules['made_up_mod'] = types.ModuleType('made_up_mod')\n"
                        "import made_up_mod\nv = 7\n"
                        "def __pyexec_restore__():\n"
                        "    raise RuntimeError('cannot reopen')\n">>),
    {ok, Blob, _} = py:snapshot(Ctx),
    {ok, R, Lost} = py:restore(Blob),
    ct:pal("restore lost: ~p", [Lost]),
    ?assertMatch([#{name := <<"made_up_mod">>}, #{name := <<"__pyexec_restore__">>}], Lost),
    [_, Hook] = Lost,
    ?assertMatch(#{type := <<"RuntimeError">>, reason := <<"cannot reopen">>}, Hook),
    ?assertEqual({ok, 7}, py:eval(R, <<"v">>)),
    [ok = py:unbind(C) || C <- [Ctx, R]].

forged_and_tampered_blobs_refused(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"x = 1">>),
    {ok, Blob, []} = py:snapshot(Ctx),
    #{checked_out := Before} = py_pool:get_stats(),
    ?assertMatch({error, {grpc, invalid_argument, _}}, py:restore(<<"not a snapshot">>)),
    %% Empty (on the wire: no restore at all): refused here.
    ?assertMatch({error, {grpc, invalid_argument, _}}, py:restore(<<>>)),
    ?assertMatch({error, {grpc, invalid_argument, _}}, py:bind(new, #{restore => <<>>})),
    %% One byte changed anywhere: refused before it is unpickled.
    [begin
         <<H:P/binary, B, T/binary>> = Blob,
         Bad = <<H/binary, (B bxor 1), T/binary>>,
         ?assertMatch({error, {grpc, invalid_argument, _}}, py:restore(Bad)),
         ?assertMatch({error, {grpc, invalid_argument, _}}, py:bind(new, #{restore => Bad}))
     end || P <- [0, byte_size(Blob) div 2, byte_size(Blob) - 1]],
    %% Truncated, and extended.
    ?assertMatch({error, {grpc, invalid_argument, _}},
                 py:restore(binary:part(Blob, 0, byte_size(Blob) - 1))),
    ?assertMatch({error, {grpc, invalid_argument, _}}, py:restore(<<Blob/binary, 0>>)),
    %% No session was left behind by the refusals.
    #{checked_out := After} = py_pool:get_stats(),
    ?assertEqual(Before, After),
    ?assertError({badarg, _}, py:restore(not_a_binary)),
    ?assertError({badarg, _}, py:bind(new, #{restore => 1})),
    ?assertError({badarg, _}, py:bind(#{restore => Blob})),
    ok = py:unbind(Ctx).

%% The 1.x binding: snapshot/0 of the calling process's session; the
%% restored context bound to another process with bind_context/1. A
%% shared (2.x) context snapshots as well.
process_binding_and_shared_context(_Config) ->
    ?assertEqual({error, not_bound}, py:snapshot()),
    ok = py:bind(),
    ok = py:exec(<<"def greet(n):\n    return 'hi ' + n\nseen = ['a']">>),
    {ok, Blob, []} = py:snapshot(),
    Self = self(),
    Pid = spawn(fun() ->
                        {ok, Ctx, []} = py:restore(Blob),
                        ok = py_context_router:bind_context(Ctx),
                        Self ! {self(), py:call('__main__', greet, [<<"bob">>]),
                                py:eval(<<"seen">>)},
                        receive stop -> ok end
                end),
    receive
        {Pid, Greet, Seen} ->
            ?assertEqual({ok, <<"hi bob">>}, Greet),
            ?assertEqual({ok, [<<"a">>]}, Seen)
    after 15000 -> ct:fail(no_answer)
    end,
    Pid ! stop,
    ok = py:unbind(),
    Shared = py:context(1),
    ok = py:exec(Shared, <<"shared_v = 99">>),
    {ok, SBlob, _} = py:snapshot(Shared, 10000),
    {ok, R, []} = py:restore(SBlob),
    ?assertEqual({ok, 99}, py:eval(R, <<"shared_v">>)),
    ok = py:unbind(R).

bind_new_with_restore_and_no_lease(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:exec(Ctx, <<"z = 'zed'">>),
    {ok, Blob, []} = py:snapshot(Ctx),
    Leases0 = attach_streams(),
    {ok, R} = py:bind(new, #{restore => Blob, lease => false}),
    ?assertEqual({ok, <<"zed">>}, py:eval(R, <<"z">>)),
    ?assertEqual(Leases0, attach_streams()),
    {ok, R2, []} = py:restore(Blob, #{lease => true}),
    ?assertEqual(Leases0 + 1, attach_streams()),
    ok = py:bind(#{lease => false}),
    ?assertEqual(Leases0 + 1, attach_streams()),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)),
    ok = py:unbind(),
    [ok = py:unbind(C) || C <- [Ctx, R, R2]].

snapshot_of_an_unbound_context(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:unbind(Ctx),
    ?assertError(context_not_bound, py:snapshot(Ctx)),
    %% Gone on the server (unbound behind the client's back).
    {ok, Ctx2} = py:bind(new),
    [{_, Token, _, _}] = ets:lookup(pyexec_ctx, element(2, Ctx2)),
    {ok, _} = pyexec_rpc:call(unbind, #{session => Token}, 5000),
    ?assertError(context_not_bound, py:snapshot(Ctx2)).

restored_context_released_with_its_owner(_Config) ->
    {ok, Ctx} = py:bind(new),
    {ok, Blob, []} = py:snapshot(Ctx),
    Self = self(),
    Pid = spawn(fun() ->
                        {ok, R, []} = py:restore(Blob),
                        Self ! {token, token(R)},
                        receive stop -> ok end
                end),
    Token = receive {token, T} -> T after 15000 -> ct:fail(no_token) end,
    ?assertMatch({ok, _}, pyexec_rpc:call(eval, #{session => Token, code => <<"1">>}, 5000)),
    Pid ! stop,
    pyexec_test_util:wait_until(
      fun() ->
              case pyexec_rpc:call(eval, #{session => Token, code => <<"1">>}, 5000) of
                  {error, {grpc, not_found, _}} -> true;
                  Other -> Other
              end
      end, restored_session_released, 5000),
    ok = py:unbind(Ctx).

%%--------------------------------------------------------------------

token({py_ctx, Id}) ->
    [{_, Token, _, _}] = ets:lookup(pyexec_ctx, Id),
    Token.

%% Leases the registry holds (one lease process and Attach stream per
%% leased session): the `leases' field of its state (#s{}: mons, owned,
%% binds, bind_opts, shared_binds, pending, leases, lease_ids).
attach_streams() ->
    Leases = element(8, sys:get_state(pyexec_registry)),
    true = is_map(Leases) andalso lists:all(fun is_pid/1, maps:values(Leases)),
    map_size(Leases).
