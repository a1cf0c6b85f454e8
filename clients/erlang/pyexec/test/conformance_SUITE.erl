%% The shared conformance vectors (clients/conformance/vectors.json, or
%% $PYEXEC_CONFORMANCE) through the public `py' API against a real pyexecd
%% started here, as clients/conformance/README.md asks of every client.
%%
%% The application runs with `{decode_bytes, tagged}' so that Python bytes
%% (`{bytes, Bin}') stay distinct from str (binary); the default, plain
%% binaries as in erlang_python, is lossy by design.
%%
%% Error classes of `status' cases, in this client's terms:
%%   session_not_found   {error, session_lost} (the server answered NOT_FOUND
%%                       for the process's session; a private context that
%%                       was unbound raises context_not_bound before any RPC)
%%   timeout             {error, timeout}
%%   invalid_argument    {error, {grpc, invalid_argument, _}}
%%   resource_exhausted  {error, no_workers_available} or
%%                       {error, {grpc, resource_exhausted, _}}
%%
%% A session token is opaque in the `py' API, so the two scenarios that name
%% a token (an unbound one, one never issued) put that token under the
%% calling process's binding in the registry's table (from inside the
%% registry, with sys:replace_state/2) and then call py:eval/1; so does the
%% lease case, for the token of a process that has exited.
%%
%% v2 kinds, in this client's terms:
%%   stream          py:stream/4 (on a py:with_context/1 binding after the
%%                   setup)
%%   ref             py:eval/1 of a bound process, the ref passed back as a
%%                   local, py:release/1
%%   callback        py:register_function/2 for each behaviour, then
%%                   py:eval/3 or py:exec/3 + py:eval/3 (timeout
%%                   timeout_seconds). The client sends calls as Run
%%                   streams only while some function is registered (a
%%                   plain call otherwise, where pyexec.call raises the
%%                   server's RuntimeError), so the case with no functions
%%                   runs with one unrelated function registered.
%%                   Behaviours: return_args is `fun(Args) -> Args end';
%%                   raise is `error(Message)'; never waits for ever;
%%                   reenter calls py:call('__main__', down, [N]), which
%%                   runs on the case's session (a callback process's
%%                   calls do) nested on its interpreter.
%%   lease           a process binds (lease by default), evaluates "1" and
%%                   exits; its token then fails session_not_found
%%   interrupt_race  Ref = py:spawn_call(Ctx, builtins, exec,
%%                   [<<"while True: pass">>]), then at once
%%                   py:interrupt(Ref) (it names the call) must be `ok' and
%%                   py:await(Ref) `{error, interrupted}'
%% The suite's pyexecd runs with --lease_grace=1s.
-module(conformance_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(CTX_TABLE, pyexec_ctx).
-define(BOUND_TABLE, pyexec_bound).

all() -> [conformance].

init_per_suite(Config) ->
    Exe = pyexecd_path(),
    {ok, Srv} = pyexec_test_util:start_server(Exe, ["--listen=127.0.0.1:0", "--workers=2",
                                                    "--max_workers=4", "--lease_grace=1s"]),
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", maps:get(port, Srv)}]},
                                     {decode_bytes, tagged}]),
    [{srv, Srv} | Config].

end_per_suite(Config) ->
    pyexec_test_util:stop_app(),
    pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

pyexecd_path() ->
    Exe = pyexec_test_util:pyexecd_path(),
    filelib:is_regular(Exe) orelse ct:fail({pyexecd_not_found, Exe, "build it or set PYEXECD"}),
    Exe.

vectors_path() ->
    case os:getenv("PYEXEC_CONFORMANCE") of
        P when P =:= false; P =:= "" ->
            filename:join(pyexec_test_util:repo_root(), "clients/conformance/vectors.json");
        P -> P
    end.

conformance(_Config) ->
    {ok, Json} = file:read_file(vectors_path()),
    #{<<"cases">> := Cases} = json(Json),
    ?assert(length(Cases) > 0),
    Results = [{maps:get(<<"name">>, C), run_case(C)} || C <- Cases],
    Failed = [{N, R} || {N, R} <- Results, R =/= ok],
    [ct:pal("conformance FAILED ~ts: ~tp", [N, R]) || {N, R} <- Failed],
    Summary = io_lib:format("conformance: ~b passed, ~b failed",
                            [length(Results) - length(Failed), length(Failed)]),
    ct:pal("~s", [Summary]),
    io:format(user, "~s~n", [Summary]),
    ?assertEqual([], Failed).

%% ok, or why the case failed. A crash is a failure of that case only.
run_case(C) ->
    try
        case_kind(maps:get(<<"kind">>, C), C)
    catch
        throw:Reason -> {failed, Reason};
        Class:Reason:Stack -> {crashed, Class, Reason, hd(Stack)}
    after
        py:unbind(),
        [py:unregister_function(N) || {N, _} <- ets:tab2list(pyexec_functions)]
    end.

case_kind(<<"roundtrip">>, #{<<"value">> := V} = C) ->
    Locals = #{x => native(V)},
    check_value(V, py:eval(<<"x">>, Locals)),
    case C of
        #{<<"python_type">> := T} -> expect({ok, T}, py:eval(<<"type(x).__name__">>, Locals));
        _ -> ok
    end;
case_kind(<<"eval">>, #{<<"code">> := Code, <<"expect">> := E} = C) ->
    check_value(E, maybe_session(C, fun() -> py:eval(Code) end));
case_kind(<<"call">>, #{<<"module">> := M, <<"function">> := F, <<"args">> := Args,
                        <<"expect">> := E} = C) ->
    Kwargs = maps:map(fun(_, V) -> native(V) end, maps:get(<<"kwargs">>, C, #{})),
    check_value(E, maybe_session(C, fun() -> py:call(M, F, [native(A) || A <- Args], Kwargs) end));
case_kind(<<"python_error">>, #{<<"op">> := Op, <<"code">> := Code,
                                <<"error">> := #{<<"type">> := Type} = Err}) ->
    Result = case Op of
                 <<"eval">> -> py:eval(Code);
                 <<"exec">> -> py:exec(Code)
             end,
    case Result of
        {error, {T, Msg}} when is_list(Msg) ->
            expect(Type, type_binary(T)),
            contains(unicode:characters_to_binary(Msg), maps:get(<<"message_contains">>, Err, <<>>)),
            contains(py:last_traceback(), maps:get(<<"traceback_contains">>, Err, <<>>));
        Other ->
            throw({expected_python_error, Type, Other})
    end;
case_kind(<<"status">>, #{<<"scenario">> := S, <<"expect">> := Class} = C) ->
    scenario(S, Class, C);
case_kind(<<"stream">>, #{<<"module">> := M, <<"function">> := F, <<"args">> := Args,
                          <<"expect_items">> := Items} = C) ->
    Kwargs = maps:map(fun(_, V) -> native(V) end, maps:get(<<"kwargs">>, C, #{})),
    case maybe_session(C, fun() -> py:stream(M, F, [native(A) || A <- Args], Kwargs) end) of
        {ok, Got} when length(Got) =:= length(Items) ->
            case all_match(Items, Got) of
                true -> ok;
                false -> throw({mismatch, Items, Got})
            end;
        Other ->
            throw({expected_items, Items, Other})
    end;
case_kind(<<"ref">>, #{<<"setup">> := Setup, <<"code">> := Code, <<"type">> := Type,
                       <<"use">> := Use, <<"expect">> := E, <<"after_release">> := Class}) ->
    ok = py:bind(),
    ok = py:exec(Setup),
    case py:eval(Code) of
        {ok, {py_ref, _, _, Type, _} = Ref} ->
            true = py:is_ref(Ref),
            check_value(E, py:eval(Use, #{r => Ref})),
            expect(ok, py:release(Ref)),
            status(Class, py:eval(Use, #{r => Ref}));
        Other ->
            throw({expected_ref, Type, Other})
    end;
case_kind(<<"callback">>, #{<<"functions">> := Functions, <<"code">> := Code} = C) ->
    Timeout = round(1000 * maps:get(<<"timeout_seconds">>, C, 10)),
    [ok = py:register_function(Name, behaviour(B)) || {Name, B} <- maps:to_list(Functions)],
    map_size(Functions) > 0 orelse py:register_function('_conformance_unused', fun(A) -> A end),
    Op = maps:get(<<"op">>, C, <<"eval">>),
    Bound = Op =:= <<"exec_then_eval">> orelse is_map_key(<<"setup">>, C),
    Run = fun() ->
                  case C of
                      #{<<"setup">> := <<>>} -> ok;
                      #{<<"setup">> := Setup} -> ok = py:exec(Setup);
                      _ -> ok
                  end,
                  case Op of
                      <<"eval">> -> py:eval(Code, #{}, Timeout);
                      <<"exec_then_eval">> ->
                          ok = py:exec(Code, #{}, Timeout),
                          py:eval(maps:get(<<"eval">>, C), #{}, Timeout)
                  end
          end,
    Result = case Bound of
                 true -> py:with_context(Run);
                 false -> Run()
             end,
    case C of
        #{<<"expect">> := E} -> check_value(E, Result);
        #{<<"error">> := #{<<"type">> := Type} = Err} ->
            case Result of
                {error, {T, Msg}} when is_list(Msg) ->
                    expect(Type, type_binary(T)),
                    contains(unicode:characters_to_binary(Msg),
                             maps:get(<<"message_contains">>, Err, <<>>));
                Other ->
                    throw({expected_python_error, Type, Other})
            end
    end;
case_kind(<<"lease">>, #{<<"grace_seconds">> := Grace, <<"expect">> := Class}) ->
    Self = self(),
    {Pid, Mon} = spawn_monitor(fun() ->
                                       ok = py:bind(),
                                       {ok, 1} = py:eval(<<"1">>),
                                       [{_, Id}] = ets:lookup(?BOUND_TABLE, self()),
                                       [{_, Token, _, _}] = ets:lookup(?CTX_TABLE, Id),
                                       Self ! {self(), Token}
                               end),
    Token = receive {Pid, T} -> T after 10000 -> throw(no_token) end,
    receive {'DOWN', Mon, process, Pid, normal} -> ok after 10000 -> throw(holder_alive) end,
    Deadline = erlang:monotonic_time(millisecond) + (Grace + 3) * 1000,
    lease_gone(Class, Token, Deadline);
case_kind(<<"interrupt_race">>, #{<<"rounds">> := Rounds}) ->
    {ok, Ctx} = py:bind(new),
    T0 = erlang:monotonic_time(millisecond),
    try
        Lost = length([R || R <- lists:seq(1, Rounds),
                            begin
                                Ref = py:spawn_call(Ctx, builtins, exec, [<<"while True: pass">>]),
                                I = py:interrupt(Ref),
                                {I, py:await(Ref, 20000)} =/= {ok, {error, interrupted}}
                            end]),
        Ms = erlang:monotonic_time(millisecond) - T0,
        Line = io_lib:format("conformance: interrupt_race ~b rounds, ~b lost, ~b ms", [Rounds, Lost, Ms]),
        ct:pal("~s", [Line]),
        io:format(user, "~s~n", [Line]),
        expect(0, Lost)
    after
        py:unbind(Ctx)
    end;
case_kind(Kind, _C) ->
    throw({unknown_kind, Kind}).

%% A callback behaviour of the vectors as an Erlang function.
behaviour(<<"return_args">>) -> fun(Args) -> Args end;
behaviour(#{<<"return">> := V}) -> Value = native(V), fun(_) -> Value end;
behaviour(#{<<"raise">> := Msg}) -> fun(_) -> error(Msg) end;
behaviour(<<"never">>) -> fun(_) -> receive after infinity -> ok end end;
behaviour(<<"reenter">>) ->
    fun([N]) ->
            {ok, V} = py:call('__main__', down, [N]),
            V + 1
    end;
behaviour(B) -> throw({unknown_behaviour, B}).

%% eval("1") on Token until it fails with Class, by Deadline.
lease_gone(Class, Token, Deadline) ->
    Result = with_token(Token, fun() -> py:eval(<<"1">>) end),
    case {Result, erlang:monotonic_time(millisecond) > Deadline} of
        {{ok, 1}, false} -> timer:sleep(100), lease_gone(Class, Token, Deadline);
        {{ok, 1}, true} -> throw({session_still_there, Token});
        _ -> status(Class, Result)
    end.

maybe_session(#{<<"setup">> := Setup}, Fun) ->
    py:with_context(fun() -> ok = py:exec(Setup), Fun() end);
maybe_session(_, Fun) ->
    Fun().

type_binary(T) when is_atom(T) -> atom_to_binary(T, utf8);
type_binary(T) when is_binary(T) -> T.

%%--------------------------------------------------------------------
%% status scenarios
%%--------------------------------------------------------------------

scenario(<<"unbind_then_eval">>, Class, _C) ->
    %% Through the API: an unbound private context is refused locally...
    {ok, Ctx} = py:bind(new),
    Token = token_of(Ctx),
    ok = py:unbind(Ctx),
    try py:ctx_eval(Ctx, <<"1">>) of
        R -> throw({expected_context_not_bound, R})
    catch
        error:context_not_bound -> ok
    end,
    %% ...and the server answers NOT_FOUND for the old token.
    status(Class, with_token(Token, fun() -> py:eval(<<"1">>) end));
scenario(<<"unknown_token">>, Class, _C) ->
    status(Class, with_token(<<"0000000000000000deadbeefdeadbeef">>,
                             fun() -> py:eval(<<"1">>) end));
scenario(<<"deadline_interrupts">>, Class, #{<<"timeout_seconds">> := Secs}) ->
    {ok, Ctx} = py:bind(new),
    try
        ok = py:ctx_exec(Ctx, <<"import time\nx = 1">>),
        status(Class, py:ctx_eval(Ctx, <<"time.sleep(30)">>, #{}, round(Secs * 1000))),
        expect({ok, 1}, py:ctx_eval(Ctx, <<"x">>))
    after
        py:unbind(Ctx)
    end;
scenario(<<"empty_code">>, Class, _C) ->
    status(Class, py:eval(<<"">>));
scenario(<<"too_deep">>, Class, #{<<"depth">> := Depth}) ->
    Nested = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, Depth - 1)),
    status(Class, py:eval(<<"x">>, #{x => Nested}));
scenario(S, _Class, _C) ->
    throw({unknown_scenario, S}).

status(<<"session_not_found">>, {error, session_lost}) -> ok;
status(<<"timeout">>, {error, timeout}) -> ok;
status(<<"invalid_argument">>, {error, {grpc, invalid_argument, _}}) -> ok;
status(<<"resource_exhausted">>, {error, no_workers_available}) -> ok;
status(<<"resource_exhausted">>, {error, {grpc, resource_exhausted, _}}) -> ok;
status(Class, Other) -> throw({expected_status, Class, Other}).


token_of({py_ctx, Id}) ->
    [{_, Token, _, _}] = ets:lookup(?CTX_TABLE, Id),
    Token.

%% Binds the calling process (py:bind/0), swaps its session token for Token
%% inside the registry, runs Fun and releases the real session.
with_token(Token, Fun) ->
    ok = py:bind(),
    [{_, Id}] = ets:lookup(?BOUND_TABLE, self()),
    [{_, Real, Owner, Kind}] = ets:lookup(?CTX_TABLE, Id),
    sys:replace_state(pyexec_registry,
                      fun(S) -> ets:insert(?CTX_TABLE, {Id, Token, Owner, Kind}), S end),
    try
        Fun()
    after
        py:unbind(),
        {ok, _} = pyexec_rpc:call(unbind, #{session => Real}, 5000)
    end.

%%--------------------------------------------------------------------
%% tagged values
%%--------------------------------------------------------------------

%% The Erlang term for a tagged JSON value (bytes tagged).
native(#{<<"none">> := null}) -> none;
native(#{<<"bool">> := B}) when is_boolean(B) -> B;
native(#{<<"int">> := S}) -> binary_to_integer(S);
native(#{<<"float">> := F}) -> float_value(F);
native(#{<<"str">> := S}) -> S;
native(#{<<"bytes">> := B64}) -> {bytes, base64:decode(B64)};
native(#{<<"list">> := L}) -> [native(E) || E <- L];
native(#{<<"tuple">> := L}) -> list_to_tuple([native(E) || E <- L]);
native(#{<<"set">> := L}) -> {set, [native(E) || E <- L]};
native(#{<<"dict">> := Pairs}) -> maps:from_list([{native(K), native(V)} || [K, V] <- Pairs]);
native(Other) -> throw({cannot_send, Other}).

float_value(<<"nan">>) -> nan;
float_value(<<"inf">>) -> infinity;
float_value(<<"-inf">>) -> neg_infinity;
float_value(F) when is_number(F) -> float(F).

check_value(Expected, {ok, Actual}) ->
    case matches(Expected, Actual) of
        true -> ok;
        false -> throw({mismatch, Expected, Actual})
    end;
check_value(Expected, Other) ->
    throw({expected_value, Expected, Other}).

matches(#{<<"none">> := null}, A) -> A =:= none;
matches(#{<<"bool">> := B}, A) -> A =:= B;
matches(#{<<"int">> := S}, A) -> is_integer(A) andalso A =:= binary_to_integer(S);
matches(#{<<"float">> := F}, A) ->
    case float_value(F) of
        X when is_atom(X) -> A =:= X;
        X -> is_float(A) andalso A == X
    end;
matches(#{<<"str">> := S}, A) -> A =:= S;
matches(#{<<"bytes">> := B64}, A) -> A =:= {bytes, base64:decode(B64)};
matches(#{<<"list">> := L}, A) -> is_list(A) andalso all_match(L, A);
matches(#{<<"tuple">> := L}, A) -> is_tuple(A) andalso all_match(L, tuple_to_list(A));
matches(#{<<"set">> := L}, {set, A}) -> unordered(L, A);
matches(#{<<"set">> := _}, _) -> false;
matches(#{<<"dict">> := Pairs}, A) when is_map(A) ->
    map_size(A) =:= length(Pairs) andalso
        lists:all(fun([K, V]) ->
                          case maps:find(native(K), A) of
                              {ok, AV} -> matches(V, AV);
                              error -> false
                          end
                  end, Pairs);
matches(#{<<"dict">> := _}, _) -> false;
matches(#{<<"opaque">> := O}, {opaque, T, R}) ->
    T =:= maps:get(<<"type">>, O) andalso maps:get(<<"repr">>, O, R) =:= R;
matches(#{<<"opaque">> := _}, _) -> false.

all_match(Es, As) ->
    length(Es) =:= length(As) andalso lists:all(fun({E, A}) -> matches(E, A) end, lists:zip(Es, As)).

%% Each expected element matches a distinct actual element.
unordered([], []) -> true;
unordered([], _) -> false;
unordered([E | Es], As) ->
    case lists:splitwith(fun(A) -> not matches(E, A) end, As) of
        {_, []} -> false;
        {Before, [_ | After]} -> unordered(Es, Before ++ After)
    end.

expect(Expected, Expected) -> ok;
expect(Expected, Actual) -> throw({expected, Expected, Actual}).

contains(_Bin, <<>>) -> ok;
contains(Bin, Part) when is_binary(Bin) ->
    case binary:match(Bin, Part) of
        nomatch -> throw({missing, Part, Bin});
        _ -> ok
    end;
contains(Other, Part) -> throw({missing, Part, Other}).

%%--------------------------------------------------------------------
%% A small JSON decoder (OTP 25 has none): objects become maps with binary
%% keys, arrays lists, strings UTF-8 binaries, null `null'.
%%--------------------------------------------------------------------

json(Bin) ->
    {V, Rest} = value(ws(Bin)),
    <<>> = ws(Rest),
    V.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> ws(R);
ws(B) -> B.

value(<<${, R/binary>>) -> object(ws(R), #{});
value(<<$[, R/binary>>) -> array(ws(R), []);
value(<<$", R/binary>>) -> string(R, []);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(B) -> number(B, []).

object(<<$}, R/binary>>, M) when map_size(M) =:= 0 -> {M, R};
object(<<$", B/binary>>, M) ->
    {K, R1} = string(B, []),
    <<$:, R2/binary>> = ws(R1),
    {V, R3} = value(ws(R2)),
    case ws(R3) of
        <<$,, R4/binary>> -> object(ws(R4), M#{K => V});
        <<$}, R4/binary>> -> {M#{K => V}, R4}
    end.

array(<<$], R/binary>>, []) -> {[], R};
array(B, Acc) ->
    {V, R1} = value(B),
    case ws(R1) of
        <<$,, R2/binary>> -> array(ws(R2), [V | Acc]);
        <<$], R2/binary>> -> {lists:reverse([V | Acc]), R2}
    end.

string(<<$", R/binary>>, Acc) ->
    {unicode:characters_to_binary(lists:reverse(Acc)), R};
string(<<$\\, $u, H:4/binary, $\\, $u, L:4/binary, R/binary>>, Acc)
  when H >= <<"D800">>, H =< <<"DBFF">>; H >= <<"d800">>, H =< <<"dbff">> ->
    Hi = binary_to_integer(H, 16), Lo = binary_to_integer(L, 16),
    string(R, [16#10000 + ((Hi - 16#D800) bsl 10) + (Lo - 16#DC00) | Acc]);
string(<<$\\, $u, H:4/binary, R/binary>>, Acc) -> string(R, [binary_to_integer(H, 16) | Acc]);
string(<<$\\, C, R/binary>>, Acc) ->
    string(R, [case C of $n -> $\n; $t -> $\t; $r -> $\r; $b -> $\b; $f -> $\f; _ -> C end | Acc]);
string(<<C/utf8, R/binary>>, Acc) -> string(R, [C | Acc]).

number(<<C, R/binary>>, Acc) when C >= $0, C =< $9; C =:= $-; C =:= $+; C =:= $.; C =:= $e; C =:= $E ->
    number(R, [C | Acc]);
number(R, Acc) ->
    S = lists:reverse(Acc),
    case lists:any(fun(C) -> lists:member(C, ".eE") end, S) of
        false -> {list_to_integer(S), R};
        true ->
            %% Erlang wants digits on both sides of a point: 1e5 -> 1.0e5.
            {Mant, Exp} = lists:splitwith(fun(C) -> C =/= $e andalso C =/= $E end, S),
            Mant1 = case lists:member($., Mant) of true -> Mant; false -> Mant ++ ".0" end,
            {list_to_float(Mant1 ++ Exp), R}
    end.
