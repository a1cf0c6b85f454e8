%% @doc Python calling back into Erlang: the functions registered with
%% py:register_function/2,3, and the Run RPC that carries a call together
%% with the callbacks its Python code asks for.
%%
%% While any function is registered, py sends its eval/exec/call requests
%% as Run streams (run/4): the request goes first; each
%% `pyexec.call(Name, ...)' (or `erlang.call') the Python code makes comes
%% back as a CallbackRequest, which a process of its own answers by
%% applying the registered function to the list of arguments (keyword
%% arguments, if any, are a map appended to that list); the response comes
%% last, and the calling process then closes its side of the stream.
%%
%% A callback process knows the callback it runs (in its process
%% dictionary): the calls it makes through py carry its id
%% (x-pyexec-callback), so that they run nested on the interpreter that
%% waits for the callback, and py calls without a context run on the
%% session of the call that asked (or statelessly if that call was
%% stateless). Re-entry (Python -> Erlang -> Python -> ...) therefore works
%% at any depth, on one interpreter.
%%
%% Callback processes are not linked to anything: the calling process kills
%% those still running when its call ends, and a guard kills them if the
%% calling process dies first.
-module(pyexec_callback).

-export([register/2, unregister/1, any/0, run/4, context/0, set_context/1]).

-define(TABLE, pyexec_functions).
-define(CONTEXT_KEY, '$pyexec_callback').

-type function_spec() :: fun(([term()]) -> term()) | {module(), atom()}.

%% @doc Registers (or replaces) the function Python calls as Name.
-spec register(atom() | binary() | string(), function_spec()) -> ok.
register(Name, Fun) ->
    true = ets:insert(?TABLE, {key(Name), Fun}),
    ok.

-spec unregister(atom() | binary() | string()) -> ok.
unregister(Name) ->
    _ = (catch ets:delete(?TABLE, key(Name))),
    ok.

%% @doc Whether any function is registered (calls then go as Run streams).
-spec any() -> boolean().
any() ->
    case catch ets:info(?TABLE, size) of
        N when is_integer(N), N > 0 -> true;
        _ -> false
    end.

%% @doc The callback the calling process runs: `#{id, session}', or
%% undefined outside callback processes.
-spec context() -> #{id := binary(), session := binary()} | undefined.
context() ->
    get(?CONTEXT_KEY).

%% @doc Gives the calling process a callback's context (a process started
%% by a callback process for it: spawn_call/3, stream_start/3).
-spec set_context(#{id := binary(), session := binary()} | undefined) -> ok.
set_context(undefined) -> ok;
set_context(Context) -> put(?CONTEXT_KEY, Context), ok.

key(A) when is_atom(A) -> atom_to_binary(A, utf8);
key(B) when is_binary(B) -> B;
key(L) when is_list(L) -> unicode:characters_to_binary(L).

%%====================================================================
%% Run
%%====================================================================

%% @doc Runs an eval, exec or call request (Method) as a Run stream,
%% answering its callbacks; returns the response as pyexec_rpc:call/4
%% would.
-spec run(eval | exec | call, map(), timeout(), pyexec_rpc:opts()) ->
          {ok, map()} | {error, term()}.
run(Method, Req, Timeout, Opts) ->
    case pyexec_rpc:bidi_open(run, #{Method => Req}, Timeout, Opts) of
        {ok, S} ->
            Session = maps:get(session, Opts, <<>>),
            St = #{s => S, method => Method, session => Session, workers => #{},
                   guard => undefined},
            try loop(St) of
                {Result, St1} -> stop_workers(St1), Result
            catch
                Class:Reason:Stack ->
                    pyexec_rpc:stream_cancel(S),
                    erlang:raise(Class, Reason, Stack)
            end;
        {error, _} = E ->
            E
    end.

loop(#{s := S, method := Method} = St) ->
    case pyexec_rpc:stream_recv(S, infinity) of
        {ok, #{callback := Cb}} ->
            loop(start_worker(Cb, St));
        {ok, #{Method := Resp}} ->
            %% The response is the last message; the OK status follows once
            %% our side is closed.
            ok = pyexec_rpc:stream_close_send(S),
            case pyexec_rpc:stream_recv(S, infinity) of
                done -> {{ok, Resp}, St};
                {error, _} = E -> {E, St};
                Other -> pyexec_rpc:stream_cancel(S), {{error, unexpected(Other)}, St}
            end;
        {ok, Other} ->
            pyexec_rpc:stream_cancel(S),
            {{error, unexpected(Other)}, St};
        {ctl, {pyexec_stream_ctl, {callback_result, Pid, Result}}} ->
            ok = pyexec_rpc:stream_send(S, #{callback_result => Result}),
            loop(forget_worker(Pid, St));
        {ctl, {pyexec_stream_ctl, Mon, process, Pid, Reason}} ->
            %% A callback process that died without answering (killed).
            #{workers := Workers} = St,
            case Workers of
                #{Pid := {Mon, Id}} ->
                    Result = #{id => Id, error => error_result(exit, Reason, [])},
                    ok = pyexec_rpc:stream_send(S, #{callback_result => Result}),
                    loop(St#{workers := maps:remove(Pid, Workers)});
                _ ->
                    loop(St)
            end;
        {ctl, _} ->
            loop(St);
        done ->
            {{error, {grpc, internal, <<"Run ended without a response">>}}, St};
        {error, _} = E ->
            {E, St}
    end.

unexpected(Msg) ->
    {grpc, internal, iolist_to_binary(io_lib:format("unexpected Run message: ~0tP", [Msg, 8]))}.

%% A callback runs in a process of its own, so that several run at once
%% (Python threads) and the stream is still read while one runs.
start_worker(#{id := Id, name := Name, args := Args, kwargs := Kwargs},
             #{session := Session, workers := Workers} = St) ->
    Caller = self(),
    Context = #{id => Id, session => Session},
    Fun = lookup(Name),
    Pid = spawn(fun() ->
                        put(?CONTEXT_KEY, Context),
                        Result = answer(Id, Name, Fun, arguments(Args, Kwargs)),
                        Caller ! {pyexec_stream_ctl, {callback_result, self(), Result}}
                end),
    Mon = erlang:monitor(process, Pid, [{tag, pyexec_stream_ctl}]),
    St1 = guard(St),
    #{guard := Guard} = St1,
    Guard ! {watch, Pid},
    St1#{workers := Workers#{Pid => {Mon, Id}}}.

forget_worker(Pid, #{workers := Workers} = St) ->
    case Workers of
        #{Pid := {Mon, _}} ->
            erlang:demonitor(Mon, [flush]),
            St#{workers := maps:remove(Pid, Workers)};
        _ ->
            St
    end.

%% Kills the callback processes still running (a callback that never
%% answered), and the guard.
stop_workers(#{workers := Workers, guard := Guard}) ->
    maps:foreach(fun(Pid, {Mon, _}) ->
                         erlang:demonitor(Mon, [flush]),
                         exit(Pid, kill)
                 end, Workers),
    case Guard of
        undefined -> ok;
        _ -> Guard ! stop
    end,
    flush_results().

flush_results() ->
    receive {pyexec_stream_ctl, {callback_result, _, _}} -> flush_results()
    after 0 -> ok
    end.

%% One guard per Run with callbacks: it kills the callback processes if the
%% calling process dies.
guard(#{guard := undefined} = St) ->
    Caller = self(),
    Guard = spawn(fun() ->
                          Mon = erlang:monitor(process, Caller),
                          guard_loop(Mon, [])
                  end),
    St#{guard := Guard};
guard(St) ->
    St.

guard_loop(Mon, Pids) ->
    receive
        {watch, Pid} -> guard_loop(Mon, [Pid | Pids]);
        stop -> ok;
        {'DOWN', Mon, process, _, _} -> [exit(P, kill) || P <- Pids], ok
    end.

lookup(Name) ->
    case catch ets:lookup(?TABLE, Name) of
        [{_, Fun}] -> Fun;
        _ -> undefined
    end.

arguments(Args, Kwargs) when map_size(Kwargs) =:= 0 -> Args;
arguments(Args, Kwargs) -> Args ++ [Kwargs].

%% The CallbackResult for one callback: the function's value, or an error
%% (an unknown name, an exception, a value with no Python counterpart).
answer(Id, Name, undefined, _Args) ->
    #{id => Id, error => #{type => <<"LookupError">>,
                           message => <<"no Erlang function is registered as '", Name/binary,
                                        "' (py:register_function/2,3)">>,
                           traceback => <<>>}};
answer(Id, _Name, Fun, Args) ->
    try apply_function(Fun, Args) of
        Value ->
            Result = #{id => Id, value => value(Value)},
            try pyexec_pb:encode_msg(callback_result, Result) of
                _ -> Result
            catch
                throw:{pyexec_bad_value, Bad} ->
                    #{id => Id, error => #{type => <<"TypeError">>,
                                           message => fmt("the Erlang function returned a term "
                                                          "with no Python counterpart: ~0tP",
                                                          [Bad, 10]),
                                           traceback => <<>>}}
            end
    catch
        Class:Reason:Stack ->
            #{id => Id, error => error_result(Class, Reason, Stack)}
    end.

apply_function(Fun, Args) when is_function(Fun, 1) -> Fun(Args);
apply_function({M, F}, Args) -> M:F(Args).

%% `undefined' is None, as everywhere else; a missing value would be an
%% empty CallbackResult.
value(undefined) -> none;
value(V) -> V.

%% An Erlang exception as Python sees it (pyexec.CallbackError): its class
%% as the type, its reason as the message (a string or binary reason as
%% it is, anything else printed), the stack as the traceback.
error_result(Class, Reason, Stack) ->
    Message = case Reason of
                  B when is_binary(B) -> B;
                  L when is_list(L) ->
                      case io_lib:printable_unicode_list(L) of
                          true -> unicode:characters_to_binary(L);
                          false -> fmt("~0tP", [L, 30])
                      end;
                  _ -> fmt("~0tP", [Reason, 30])
              end,
    #{type => atom_to_binary(Class, utf8), message => Message,
      traceback => fmt("~tp", [Stack])}.

fmt(F, A) -> iolist_to_binary(io_lib:format(F, A)).
