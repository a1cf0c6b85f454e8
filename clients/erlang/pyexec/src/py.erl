%% @doc The erlang_python `py' API, served by a remote pyexec server.
%%
%% Both generations of the API are here:
%% - 1.x (workers): call/eval/exec without a context run on the process's
%%   bound session if it has one (bind/0, py_context_router:bind_context/1),
%%   else statelessly on any pooled interpreter; bind/0,1, unbind/0,1,
%%   is_bound/0, with_context/1 and the ctx_* functions manage sessions.
%% - 2.x (contexts): context/0,1 return shared contexts, and call/eval/exec
%%   take a context as their first argument.
%%
%% Results follow erlang_python: `{ok, Value}' or `ok'; a Python exception
%% is `{error, {TypeAtom, MessageCharlist}}' and its traceback is then
%% available from last_traceback/0; a timeout is `{error, timeout}'.
%% Other failures (see README.md):
%%   {error, no_workers_available}       bind past the server's --max_workers
%%   {error, session_lost}               the process's session or a shared
%%                                       context's session is gone (server
%%                                       restart, idle expiry); it has been
%%                                       dropped, the next call or bind starts afresh
%%   {error, {bad_value, Term}}          Term has no Python counterpart
%%   {error, {grpc, Code, Message}}      any other gRPC failure, e.g.
%%                                       {grpc, unavailable, _} while the
%%                                       server is unreachable
%%   error(context_not_bound)            raised by a call naming a private
%%                                       context that was unbound or lost
-module(py).

-export([call/3, call/4, call/5,
         eval/1, eval/2, eval/3,
         exec/1, exec/2, exec/3,
         bind/0, bind/1, bind/2, unbind/0, unbind/1, is_bound/0,
         snapshot/0, snapshot/1, snapshot/2, restore/1, restore/2,
         with_context/1,
         ctx_call/4, ctx_call/5, ctx_call/6,
         ctx_eval/2, ctx_eval/3, ctx_eval/4,
         ctx_exec/2, ctx_exec/3,
         context/0, context/1, contexts_started/0,
         cast/3, cast/4, cast/5, spawn_call/3, spawn_call/4, spawn_call/5,
         await/1, await/2, async_call/3, async_call/4, async_await/1, async_await/2,
         async_gather/1, async_gather/2,
         stream/3, stream/4, stream_eval/1, stream_eval/2,
         stream_start/3, stream_start/4, stream_cancel/1, exec_start/1, exec_start/2,
         interrupt/1,
         register_function/2, register_function/3, unregister_function/1,
         is_ref/1, call_method/3, call_method/4, getattr/2, to_term/1, release/1,
         last_traceback/0, last_output/0]).

-export_type([ctx/0, code/0, name/0, value/0, py_result/0, py_ref/0, bind_opts/0,
              lost_name/0]).

-include("pyexec_ctx.hrl").

%% A context handle. Treat it as opaque: its layout may change.
-type ctx() :: #py_ctx{}.
-type code() :: unicode:chardata().
-type name() :: atom() | binary() | string().
-type value() :: pyexec_value:term_in() | pyexec_value:term_out().
-type py_error() :: {atom() | binary(), string()} | timeout | interrupted | session_lost
                  | no_workers_available | {bad_value, term()} | pyexec_rpc:grpc_error().
%% A reference to a live Python object held by a bound session (a result
%% with no Erlang counterpart, or asked for with `#{return => ref}').
%% Opaque: use is_ref/1, call_method/3,4, getattr/2, to_term/1, release/1,
%% or pass it back as an argument, keyword argument or local of a call on
%% the same session.
-type py_ref() :: pyexec_value:py_ref().
-type py_result() :: {ok, value()} | {error, py_error()}.
%% Options of bind/1,2 and restore/2:
%%   lease         lease the session (an Attach stream: the server unbinds it
%%                 --lease_grace after this node is gone); default: the
%%                 `lease' key (true). false: only the idle timeout ends a
%%                 session whose owner never unbinds it (its node died).
%%   idle_timeout  seconds; default the `session_idle_timeout' key
%%   restore       bind(new, _) only: a snapshot/0,1,2 blob (see restore/2)
-type bind_opts() :: #{lease => boolean(), idle_timeout => non_neg_integer(),
                       restore => binary()}.
%% What a snapshot left out (a name of `__main__', or "ref <id>"), or what
%% a restore could not bring back (a module that no longer imports, or
%% `__pyexec_restore__' when that hook raised: type and message of the
%% exception).
-type lost_name() :: #{name := binary(), type := binary(), reason := binary()}.

%% async_gather/1,2: the helper is defined in a dict of its own (nothing
%% lands in the session's namespace); its result is a coroutine, which the
%% server awaits on the session's event loop. '__main__' is the session's
%% namespace, as for Call.
-define(GATHER_CODE,
        <<"(lambda d: (exec(_pyexec_src, d), d['run'](_pyexec_calls))[1])"
          "({'__builtins__': __builtins__, 'g': globals()})">>).

-define(GATHER_SRC, <<"
import asyncio, functools, importlib, inspect

def resolve(m, f):
    head, *rest = f.split('.')
    obj = g[head] if m == '__main__' else getattr(importlib.import_module(m), head)
    return functools.reduce(getattr, rest, obj)

async def one(m, f, a, k):
    r = resolve(m, f)(*a, **k)
    return (await r) if inspect.isawaitable(r) else r

async def run(calls):
    rs = await asyncio.gather(*[one(*c) for c in calls], return_exceptions=True)
    return [(0, type(r).__name__, str(r)) if isinstance(r, BaseException) else (1, r)
            for r in rs]
">>).

-define(TRACEBACK_KEY, '$pyexec_last_traceback').
-define(OUTPUT_KEY, '$pyexec_last_output').

%%====================================================================
%% call / eval / exec
%%====================================================================

%% @doc Calls Module.Function(*Args).
-spec call(name(), name(), [value()]) -> py_result().
call(Module, Function, Args) ->
    call(Module, Function, Args, #{}).

%% @doc `call(Module, Function, Args, Kwargs)' (1.x),
%% `call(Ctx, Module, Function, Args)' (2.x) or `call(Pool, Module,
%% Function, Args)' (4.x: on the calling process's context of Pool, e.g.
%% `io'; told apart from 1.x by Function being an atom or binary and Args
%% a list).
-spec call(ctx() | atom() | name(), name(), name() | [value()], [value()] | map()) -> py_result().
call(#py_ctx{} = Ctx, Module, Function, Args) ->
    call(Ctx, Module, Function, Args, #{});
call(Pool, Module, Function, Args) when is_atom(Pool), is_list(Args),
                                        (is_atom(Function) orelse is_binary(Function)) ->
    call(py_context_router:get_context(Pool), Module, Function, Args, #{});
call(Module, Function, Args, Kwargs) ->
    call(Module, Function, Args, Kwargs, default_timeout()).

%% @doc `call(Module, Function, Args, Kwargs, Timeout)' (1.x),
%% `call(Ctx, Module, Function, Args, Opts)' (2.x), where Opts is a map or
%% proplist with optional `kwargs' and `timeout', or `call(Pool, Module,
%% Function, Args, Kwargs)' (4.x).
-spec call(ctx() | atom() | name(), name(), name() | [value()], [value()] | map(),
           timeout() | map() | list()) -> py_result().
call(#py_ctx{id = Id}, Module, Function, Args, Opts) when is_map(Opts); is_list(Opts) ->
    O = maps:from_list(if is_map(Opts) -> maps:to_list(Opts); true -> proplists:unfold(Opts) end),
    AsRef = case maps:get(return, O, term) of
                ref -> true;
                term -> false;
                Other -> error({badarg, {return, Other}})
            end,
    Kwargs = maps:get(kwargs, O, #{}),
    is_list(Args) andalso is_map(Kwargs) orelse error({badarg, {Args, Kwargs}}),
    run({ctx, Id}, call, #{module => name(Module), function => name(Function), args => Args,
                           kwargs => Kwargs, result_as_ref => AsRef},
        maps:get(timeout, O, default_timeout()));
call(Pool, Module, Function, Args, Kwargs) when is_atom(Pool), is_list(Args), is_map(Kwargs),
                                                (is_atom(Function) orelse is_binary(Function)) ->
    call(py_context_router:get_context(Pool), Module, Function, Args, #{kwargs => Kwargs});
call(Module, Function, Args, Kwargs, Timeout) ->
    do_call(default, Module, Function, Args, Kwargs, Timeout).

%% @doc Evaluates one Python expression.
-spec eval(code()) -> py_result().
eval(Code) ->
    eval(Code, #{}).

%% @doc `eval(Code, Locals)' (1.x) or `eval(Ctx, Code)' (2.x). Locals are
%% visible to this evaluation only.
-spec eval(ctx() | code(), code() | map()) -> py_result().
eval(#py_ctx{id = Id}, Code) ->
    do_eval({ctx, Id}, Code, #{}, default_timeout());
eval(Code, Locals) when is_map(Locals) ->
    do_eval(default, Code, Locals, default_timeout()).

%% @doc `eval(Code, Locals, Timeout)' (1.x) or `eval(Ctx, Code, Locals)' (2.x).
-spec eval(ctx() | code(), code() | map(), map() | timeout()) -> py_result().
eval(#py_ctx{id = Id}, Code, Locals) when is_map(Locals) ->
    do_eval({ctx, Id}, Code, Locals, default_timeout());
eval(Code, Locals, Timeout) when is_map(Locals) ->
    do_eval(default, Code, Locals, Timeout).

%% @doc Executes Python statements.
-spec exec(code()) -> ok | {error, py_error()}.
exec(Code) ->
    exec(Code, #{}).

%% @doc `exec(Code, Locals)' (1.x) or `exec(Ctx, Code)' (2.x).
-spec exec(ctx() | code(), code() | map()) -> ok | {error, py_error()}.
exec(#py_ctx{id = Id}, Code) ->
    do_exec({ctx, Id}, Code, #{}, default_timeout());
exec(Code, Locals) when is_map(Locals) ->
    do_exec(default, Code, Locals, default_timeout()).

%% @doc `exec(Code, Locals, Timeout)': exec/2 with a timeout (an extension,
%% as eval/3).
-spec exec(code(), map(), timeout()) -> ok | {error, py_error()}.
exec(Code, Locals, Timeout) when is_map(Locals) ->
    do_exec(default, Code, Locals, Timeout).

%%====================================================================
%% Binding (1.x)
%%====================================================================

%% @doc Binds the calling process to a dedicated session: its later
%% call/eval/exec share one interpreter. Binding twice does nothing.
%% Returns `{error, no_workers_available}' when the server is at its limit.
%%
%% `bind(new)' instead returns a new context for the ctx_* functions, owned
%% by the calling process.
-spec bind() -> ok | {error, py_error()}.
bind() ->
    case is_bound() of
        true -> ok;
        false ->
            case pyexec_registry:bind(self(), implicit) of
                {ok, _Id} -> ok;
                {error, _} = E -> E
            end
    end.

-spec bind(new | bind_opts()) -> ok | {ok, ctx()} | {error, py_error()}.
bind(new) ->
    bind(new, #{});
bind(Opts) when is_map(Opts) ->
    %% bind/0 with options (`lease', `idle_timeout'); binding twice does
    %% nothing, as bind/0.
    is_map_key(restore, Opts) andalso error({badarg, {restore, use_restore_2}}),
    case is_bound() of
        true -> ok;
        false ->
            case pyexec_registry:bind(self(), implicit, bind_opts(Opts)) of
                {ok, _Id} -> ok;
                {error, _} = E -> E
            end
    end.

%% @doc `bind(new, Opts)': bind(new) with options (see bind_opts()):
%% `#{lease => false}' binds without a lease; `#{restore => Blob}' starts
%% the session from a snapshot (restore/2 also returns what was lost).
-spec bind(new, bind_opts()) -> {ok, ctx()} | {error, py_error()}.
bind(new, #{restore := <<>>}) ->
    restore(<<>>);
bind(new, Opts) when is_map(Opts) ->
    case pyexec_registry:bind(self(), explicit, bind_opts(Opts)) of
        {ok, Id} -> {ok, #py_ctx{id = Id}};
        {ok, Id, _Report} -> {ok, #py_ctx{id = Id}};
        {error, _} = E -> E
    end.

%% @doc Releases the calling process's binding (its session, if bind/0
%% created it). Always returns ok.
-spec unbind() -> ok.
unbind() ->
    case whereis(pyexec_registry) =/= undefined andalso pyexec_registry:unbind_process(self()) of
        {ok, Session} -> unbind_session(Session);
        _ -> ok
    end.

%% @doc Releases a context from bind(new). Always returns ok; shared
%% contexts (context/1) are left alone.
-spec unbind(ctx()) -> ok.
unbind(#py_ctx{id = Id}) ->
    case whereis(pyexec_registry) =/= undefined andalso pyexec_registry:release(Id) of
        {ok, Session} -> unbind_session(Session);
        _ -> ok
    end.

%% @doc Whether the calling process is bound (bind/0 or bind_context/1).
-spec is_bound() -> boolean().
is_bound() ->
    bound_id() =/= none.

%% @doc Runs Fun with a session bound for its duration and releases it
%% afterwards, even if Fun throws. A fun/0 runs with the process bound (if
%% the process is already bound, that binding is used and kept); a fun/1
%% gets a fresh context from bind(new). Returns what Fun returns, or
%% `{error, Reason}' if no session could be bound.
-spec with_context(fun(() -> Result) | fun((ctx()) -> Result)) -> Result | {error, py_error()}.
with_context(Fun) when is_function(Fun, 0) ->
    case is_bound() of
        true -> Fun();
        false ->
            case bind() of
                ok -> try Fun() after unbind() end;
                {error, _} = E -> E
            end
    end;
with_context(Fun) when is_function(Fun, 1) ->
    case bind(new) of
        {ok, Ctx} -> try Fun(Ctx) after unbind(Ctx) end;
        {error, _} = E -> E
    end.

%%====================================================================
%% Snapshot and restore
%%====================================================================

%% @doc Snapshots the calling process's session (bind/0,
%% py_context_router:bind_context/1): see snapshot/1. `{error, not_bound}'
%% if the process is not bound.
-spec snapshot() -> {ok, binary(), [lost_name()]} | {error, py_error() | not_bound}.
snapshot() ->
    case bound_id() of
        none -> {error, not_bound};
        Id -> do_snapshot({bound, Id}, default_timeout())
    end.

%% @doc Serializes the state of a context's session (its `__main__'
%% namespace, functions, classes and lambdas included, its imported modules
%% by name, its live refs) into `{ok, Blob, Lost}'. Blob is opaque and
%% sealed by the server (at most its --max_snapshot_bytes); restore/1,2
%% makes a new session from it, for the same principal only. Lost lists
%% what could not be carried (sockets, threads, generators in flight, C
%% objects): those names are missing after a restore. The session itself
%% is unchanged and stays usable.
-spec snapshot(ctx()) -> {ok, binary(), [lost_name()]} | {error, py_error()}.
snapshot(Ctx) ->
    snapshot(Ctx, default_timeout()).

-spec snapshot(ctx(), timeout()) -> {ok, binary(), [lost_name()]} | {error, py_error()}.
snapshot(#py_ctx{id = Id}, Timeout) ->
    do_snapshot({ctx, Id}, Timeout).

%% @doc A new context whose session starts with the state of a snapshot
%% blob: `{ok, Ctx, Lost}', owned by the caller as bind(new) (unbind/1
%% releases it; bind it to a process with
%% py_context_router:bind_context/1). The server runs the state's
%% `__pyexec_restore__()' if it defines one, to reopen what a snapshot
%% cannot carry. Lost lists the modules that no longer import here, and
%% `__pyexec_restore__' if that hook raised (the state is restored all the
%% same). A blob that is not this deployment's (forged, altered, sealed
%% with another peer secret) or is another principal's is refused:
%% `{error, {grpc, invalid_argument, Message}}'.
-spec restore(binary()) -> {ok, ctx(), [lost_name()]} | {error, py_error()}.
restore(Blob) ->
    restore(Blob, #{}).

%% @doc restore/1 with the options of bind(new, Opts): `lease', `idle_timeout'.
-spec restore(binary(), bind_opts()) -> {ok, ctx(), [lost_name()]} | {error, py_error()}.
restore(<<>>, Opts) when is_map(Opts) ->
    %% On the wire an empty `restore' is no restore at all: a new, empty
    %% session would be bound. Refused as the server refuses a bad blob.
    {error, {grpc, invalid_argument, <<"restore: an empty blob is not a snapshot">>}};
restore(Blob, Opts) when is_binary(Blob), is_map(Opts) ->
    case pyexec_registry:bind(self(), explicit, bind_opts(Opts#{restore => Blob})) of
        {ok, Id, Report} ->
            Hook = case Report of
                       #{restore_error := #{type := T, message := M}} ->
                           [#{name => <<"__pyexec_restore__">>, type => T, reason => M}];
                       _ -> []
                   end,
            {ok, #py_ctx{id = Id}, lost_names(maps:get(restore_lost, Report, [])) ++ Hook};
        {error, _} = E ->
            E
    end;
restore(Blob, Opts) ->
    error({badarg, {Blob, Opts}}).

do_snapshot(Target, Timeout) when Timeout =:= infinity; is_integer(Timeout), Timeout >= 0 ->
    case session(Target) of
        {ok, Session, Id} ->
            case pyexec_rpc:call(snapshot, #{session => Session}, Timeout,
                                 #{session => Session}) of
                {ok, #{blob := Blob, lost := Lost}} ->
                    {ok, Blob, lost_names(Lost)};
                {error, _} = E ->
                    result(snapshot, E, Target, Id, Session)
            end;
        {error, _} = E ->
            E
    end;
do_snapshot(_Target, Timeout) ->
    error({badarg, {timeout, Timeout}}).

lost_names(Lost) ->
    [maps:with([name, type, reason], L) || L <- Lost].

bind_opts(Opts) ->
    maps:foreach(fun(lease, V) when is_boolean(V) -> ok;
                    (idle_timeout, V) when is_integer(V), V >= 0 -> ok;
                    (restore, V) when is_binary(V) -> ok;
                    (K, V) -> error({badarg, {K, V}})
                 end, Opts),
    Opts.

%%====================================================================
%% Explicit contexts (1.x ctx_*)
%%====================================================================

-spec ctx_call(ctx(), name(), name(), [value()]) -> py_result().
ctx_call(Ctx, Module, Function, Args) ->
    ctx_call(Ctx, Module, Function, Args, #{}).

-spec ctx_call(ctx(), name(), name(), [value()], map()) -> py_result().
ctx_call(Ctx, Module, Function, Args, Kwargs) ->
    ctx_call(Ctx, Module, Function, Args, Kwargs, default_timeout()).

-spec ctx_call(ctx(), name(), name(), [value()], map(), timeout()) -> py_result().
ctx_call(#py_ctx{id = Id}, Module, Function, Args, Kwargs, Timeout) ->
    do_call({ctx, Id}, Module, Function, Args, Kwargs, Timeout).

-spec ctx_eval(ctx(), code()) -> py_result().
ctx_eval(Ctx, Code) ->
    ctx_eval(Ctx, Code, #{}).

-spec ctx_eval(ctx(), code(), map()) -> py_result().
ctx_eval(Ctx, Code, Locals) ->
    ctx_eval(Ctx, Code, Locals, default_timeout()).

-spec ctx_eval(ctx(), code(), map(), timeout()) -> py_result().
ctx_eval(#py_ctx{id = Id}, Code, Locals, Timeout) ->
    do_eval({ctx, Id}, Code, Locals, Timeout).

-spec ctx_exec(ctx(), code()) -> ok | {error, py_error()}.
ctx_exec(Ctx, Code) ->
    ctx_exec(Ctx, Code, #{}).

-spec ctx_exec(ctx(), code(), map()) -> ok | {error, py_error()}.
ctx_exec(#py_ctx{id = Id}, Code, Locals) ->
    do_exec({ctx, Id}, Code, Locals, default_timeout()).

%%====================================================================
%% Shared contexts (2.x)
%%====================================================================

%% @doc The calling process's context in the default pool: chosen by
%% scheduler, then remembered, so a process always gets the same one.
-spec context() -> ctx().
context() ->
    py_context_router:get_context().

%% @doc The N-th (1-based) context of the default pool.
-spec context(pos_integer()) -> ctx().
context(N) ->
    py_context_router:context(default, N).

%% @doc Whether the context pools are available (the application runs).
-spec contexts_started() -> boolean().
contexts_started() ->
    py_context_router:pool_started(default).

%%====================================================================
%% Asynchronous calls (erlang_python 4.x)
%%====================================================================
%%
%% Each runs the call in a new Erlang process, on the session the caller
%% would use for a synchronous call: the context given, else the caller's
%% binding (bind/0, bind_context/1), else a stateless call. The call keeps
%% its own deadline (`default_timeout'); await/2's timeout only bounds the
%% wait, as in erlang_python.

%% @doc Fire-and-forget `Module.Function(*Args)'. Always `ok'.
-spec cast(name(), name(), [value()]) -> ok.
cast(Module, Function, Args) ->
    cast(Module, Function, Args, #{}).

%% @doc `cast(Ctx, Module, Function, Args)' or `cast(Module, Function, Args, Kwargs)'.
-spec cast(ctx() | name(), name(), name() | [value()], [value()] | map()) -> ok.
cast(#py_ctx{} = Ctx, Module, Function, Args) ->
    cast(Ctx, Module, Function, Args, #{});
cast(Module, Function, Args, Kwargs) ->
    _ = spawn_target(caller_target(), {Module, Function, Args, Kwargs}, none),
    ok.

-spec cast(ctx(), name(), name(), [value()], map()) -> ok.
cast(#py_ctx{id = Id}, Module, Function, Args, Kwargs) ->
    _ = spawn_target({ctx, Id}, {Module, Function, Args, Kwargs}, none),
    ok.

%% @doc Starts `Module.Function(*Args)' and returns at once with a reference
%% for await/1,2.
-spec spawn_call(name(), name(), [value()]) -> reference().
spawn_call(Module, Function, Args) ->
    spawn_call(Module, Function, Args, #{}).

%% @doc `spawn_call(Ctx, Module, Function, Args)' or
%% `spawn_call(Module, Function, Args, Kwargs)'.
-spec spawn_call(ctx() | name(), name(), name() | [value()], [value()] | map()) -> reference().
spawn_call(#py_ctx{} = Ctx, Module, Function, Args) ->
    spawn_call(Ctx, Module, Function, Args, #{});
spawn_call(Module, Function, Args, Kwargs) ->
    spawn_target(caller_target(), {Module, Function, Args, Kwargs}, make_ref()).

-spec spawn_call(ctx(), name(), name(), [value()], map()) -> reference().
spawn_call(#py_ctx{id = Id}, Module, Function, Args, Kwargs) ->
    spawn_target({ctx, Id}, {Module, Function, Args, Kwargs}, make_ref()).

%% @doc The result of spawn_call/3,4,5, waiting up to 30 s.
-spec await(reference()) -> py_result().
await(Ref) ->
    await(Ref, 30000).

%% @doc The result of spawn_call/3,4,5 or async_call/3,4, or
%% `{error, timeout}' if it does not arrive within Timeout (the call goes
%% on; a later await can still collect it).
-spec await(reference(), timeout()) -> py_result().
await(Ref, Timeout) ->
    receive
        {py_response, Ref, Result} -> Result;
        {py_error, Ref, Error} -> {error, Error}
    after Timeout ->
            {error, timeout}
    end.

%% @doc Calls a Python coroutine function and runs the coroutine to its end
%% on the session's event loop (the server awaits an awaitable result);
%% returns a reference for async_await/1,2. A function that returns a
%% non-coroutine has that value as its result.
-spec async_call(name(), name(), [value()]) -> reference().
async_call(Module, Function, Args) ->
    async_call(Module, Function, Args, #{}).

-spec async_call(name(), name(), [value()], map()) -> reference().
async_call(Module, Function, Args, Kwargs) ->
    spawn_target(caller_target(), {Module, Function, Args, Kwargs}, make_ref()).

-spec async_await(reference()) -> py_result().
async_await(Ref) ->
    await(Ref, 30000).

-spec async_await(reference(), timeout()) -> py_result().
async_await(Ref, Timeout) ->
    await(Ref, Timeout).

%% @doc Runs the calls concurrently, as erlang_python does: one call to the
%% server that gathers them (asyncio.gather) on the event loop of the
%% session a synchronous call from the caller would use, so coroutines
%% that wait overlap on one interpreter. Returns `{ok, [Result, ...]}' in
%% the order given, or `{error, {gather_failed, [{Index, Reason}]}}'
%% (1-based) if any failed, Reason `{Type, Message}' as for call/3. The
%% timeout (default 30 s) is the deadline of the whole gather:
%% `{error, timeout}' after it (the server cancels the coroutines).
-spec async_gather([{name(), name(), [value()]}]) -> {ok, [value()]} | {error, term()}.
async_gather(Calls) ->
    async_gather(Calls, 30000).

-spec async_gather([{name(), name(), [value()]}], timeout()) -> {ok, [value()]} | {error, term()}.
async_gather(Calls, Timeout) when is_list(Calls) ->
    Specs = [case C of
                 {M, F, A} when is_list(A) -> {name(M), name(F), A, #{}};
                 {M, F, A, K} when is_list(A), is_map(K) -> {name(M), name(F), A, K};
                 _ -> error({badarg, C})
             end || C <- Calls],
    case do_eval(default, ?GATHER_CODE, #{<<"_pyexec_src">> => ?GATHER_SRC,
                                          <<"_pyexec_calls">> => Specs}, Timeout) of
        {ok, Results} ->
            Indexed = lists:zip(lists:seq(1, length(Results)), Results),
            case [{I, {exception_type(T), unicode:characters_to_list(M)}}
                  || {I, {0, T, M}} <- Indexed] of
                [] -> {ok, [V || {1, V} <- Results]};
                Errors -> {error, {gather_failed, Errors}}
            end;
        {error, _} = E ->
            E
    end.

%%====================================================================
%% Streaming (erlang_python 4.x)
%%====================================================================
%%
%% Backed by the CallStream and ExecStream RPCs: values and output arrive
%% while the Python code runs. Streams run on the session a synchronous
%% call would use (or the `ctx' option), with `default_timeout' as their
%% deadline unless the `timeout' option says otherwise.

%% @doc Calls Module.Function(*Args) and collects what it yields:
%% `{ok, [Item, ...]}' for a generator or iterator (a non-iterable result
%% is a one-element list). The items are read one by one as the server
%% streams them, with flow control, in the calling process.
%% A Python exception is `{error, Message}', the exception's str() as a
%% binary, as erlang_python's stream/3 gives it (it collects a
%% stream_start/3 stream); py:last_traceback() has the traceback.
-spec stream(name(), name(), [value()]) -> {ok, [value()]} | {error, py_error() | binary()}.
stream(Module, Function, Args) ->
    stream(Module, Function, Args, #{}).

%% @doc stream/3 with keyword arguments. With keyword arguments a Python
%% exception is `{error, {Type, Message}}', as for call/4: erlang_python
%% evaluates `list(Module.Function(...))' in that case.
-spec stream(name(), name(), [value()], map()) -> {ok, [value()]} | {error, py_error() | binary()}.
stream(Module, Function, Args, Kwargs) when is_list(Args), is_map(Kwargs) ->
    Req = #{module => name(Module), function => name(Function), args => Args, kwargs => Kwargs},
    Shape = case map_size(Kwargs) of
                0 -> message;
                _ -> type_and_message
            end,
    case open_stream(default, call_stream, Req, default_timeout()) of
        {ok, St} -> collect(St, Shape, [], [], []);
        {error, _} = E -> E
    end.

%% @doc Evaluates a generator expression and returns its items as a list
%% (erlang_python evaluates `list(Code)'; so does this).
-spec stream_eval(code()) -> py_result().
stream_eval(Code) ->
    stream_eval(Code, #{}).

-spec stream_eval(code(), map()) -> py_result().
stream_eval(Code, Locals) when is_map(Locals) ->
    do_eval(default, [<<"list(">>, code(Code), <<")">>], Locals, default_timeout()).

%% @doc Starts Module.Function(*Args) and returns `{ok, Ref}' at once; the
%% owner (default: the caller) then receives, as the server streams them:
%%   `{py_stream, Ref, {data, Item}}'  each item yielded (or the result)
%%   `{py_stream, Ref, done}'          the end
%%   `{py_stream, Ref, {error, Reason}}'  the end, after an error (a Python
%%       exception is its str() as a binary, as in erlang_python;
%%       `<<"cancelled">>' after stream_cancel/1; else as for call/3)
%% Options (a map): `owner' (pid), and extensions of this client: `ctx'
%% (a context), `kwargs', `timeout' (ms or infinity), `output' (true:
%% also deliver `{py_stream, Ref, {stdout | stderr, Binary}}' chunks).
%% Delivery pauses while the owner has more than 1000 messages queued, and
%% the paused stream stops the server (flow control), so a slow owner
%% cannot make memory grow without bound.
-spec stream_start(name(), name(), [value()]) -> {ok, reference()}.
stream_start(Module, Function, Args) ->
    stream_start(Module, Function, Args, #{}).

-spec stream_start(name(), name(), [value()], map()) -> {ok, reference()}.
stream_start(Module, Function, Args, Opts) when is_list(Args), is_map(Opts) ->
    Kwargs = maps:get(kwargs, Opts, #{}),
    is_map(Kwargs) orelse error({badarg, {kwargs, Kwargs}}),
    Req = #{module => name(Module), function => name(Function), args => Args, kwargs => Kwargs},
    start_driver(call_stream, Req, Opts#{output => maps:get(output, Opts, false)}).

%% @doc Executes Code with its output streamed (an extension: erlang_python
%% has no streamed exec). Returns `{ok, Ref}'; the owner receives
%% `{py_stream, Ref, {stdout, Bin}}' and `{py_stream, Ref, {stderr, Bin}}'
%% as the code writes (flushed at line ends or every 50 ms), then
%% `{py_stream, Ref, done}' or `{py_stream, Ref, {error, Reason}}'.
%% Options: `owner', `ctx', `locals', `timeout'.
-spec exec_start(code()) -> {ok, reference()}.
exec_start(Code) ->
    exec_start(Code, #{}).

-spec exec_start(code(), map()) -> {ok, reference()}.
exec_start(Code, Opts) when is_map(Opts) ->
    Locals = maps:get(locals, Opts, #{}),
    is_map(Locals) orelse error({badarg, {locals, Locals}}),
    start_driver(exec_stream, #{code => code(Code), locals => Locals}, Opts#{output => true}).

%% @doc Cancels a stream from stream_start/3,4 or exec_start/1,2: the
%% server interrupts the Python code (a bound session keeps its state) and
%% the owner receives `{py_stream, Ref, {error, <<"cancelled">>}}' as the
%% last event, unless the stream had already ended. Always ok.
-spec stream_cancel(reference()) -> ok.
stream_cancel(Ref) when is_reference(Ref) ->
    case catch ets:lookup(?STREAM_TABLE, Ref) of
        [{_, Pid}] ->
            Mon = erlang:monitor(process, Pid),
            Pid ! {pyexec_stream_ctl, cancel},
            %% Wait until the driver is gone, so nothing of this stream
            %% arrives after stream_cancel/1 has returned.
            receive {'DOWN', Mon, process, Pid, _} -> ok end;
        _ ->
            ok
    end.

%%====================================================================
%% Interrupt (erlang_python 4.x)
%%====================================================================

%% @doc Interrupts Python code: `ok', or `not_running'. The interrupted
%% call returns `{error, interrupted}' (a stream ends with it); a session
%% keeps its state. Callable from any process.
%%
%% `interrupt(Ctx)', `interrupt(Pid)' (the session bound by that process):
%% the call running on that session (or the first one waiting);
%% `not_running' when the context is idle or has no session yet.
%%
%% `interrupt(Ref)', Ref from spawn_call/3,4,5, async_call/3,4,
%% stream_start/3,4 or exec_start/1,2 (an extension): that very call, by
%% its name (x-pyexec-call-id), even if it has not reached the server yet,
%% so `Ref = py:spawn_call(Ctx, M, F, A), py:interrupt(Ref)' is never
%% lost. `not_running' once the call has ended. A stateless call is
%% stopped here (its stream reset).
-spec interrupt(ctx() | pid() | reference()) -> ok | not_running | {error, py_error()}.
interrupt(#py_ctx{id = Id}) ->
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, lost, _, _}] ->
            {error, session_lost};
        [{_, Session, _, _}] ->
            %% The CANCELLED of the calls in flight on the session is then
            %% an interruption (see pyexec_rpc).
            pyexec_rpc:mark_session_interrupted(Session),
            case pyexec_rpc:call(interrupt, #{session => Session}, default_timeout()) of
                {ok, #{interrupted := true}} ->
                    pyexec_rpc:mark_session_interrupted(Session),
                    ok;
                {ok, #{interrupted := false}} -> not_running;
                {error, {grpc, not_found, _}} -> {error, session_lost};
                {error, _} = E -> E
            end;
        [] ->
            not_running
    end;
interrupt(Ref) when is_reference(Ref) ->
    case catch ets:lookup(?CALL_TABLE, Ref) of
        [{_, Pid, <<>>, _CallId, Parent, spawned}] ->
            case catch ets:take(?CALL_TABLE, Ref) of
                [_] ->
                    %% Its connection resets the stream when it dies.
                    exit(Pid, kill),
                    Parent ! {py_response, Ref, {error, interrupted}},
                    ok;
                _ ->
                    not_running
            end;
        [{_, Pid, <<>>, _CallId, _Owner, stream}] ->
            Mon = erlang:monitor(process, Pid),
            Pid ! {pyexec_stream_ctl, interrupt},
            receive {'DOWN', Mon, process, Pid, _} -> ok end;
        [{_, _Pid, Session, CallId, _, _}] ->
            New = pyexec_rpc:mark_interrupted(CallId, Session),
            case pyexec_rpc:call(interrupt, #{session => Session, call_id => CallId},
                                 default_timeout()) of
                {ok, #{interrupted := true}} ->
                    ok;
                {ok, #{interrupted := false}} ->
                    New andalso pyexec_rpc:unmark_interrupted(CallId, Session),
                    not_running;
                {error, {grpc, not_found, _}} ->
                    {error, session_lost};
                {error, _} = E ->
                    E
            end;
        _ ->
            not_running
    end;
interrupt(Pid) when is_pid(Pid) ->
    case ets:lookup(?BOUND_TABLE, Pid) of
        [{_, Id}] -> interrupt(#py_ctx{id = Id});
        [] -> not_running
    end.

%%====================================================================
%% Callbacks (erlang_python's register_function)
%%====================================================================

%% @doc Registers Fun as the function Python calls with
%% `pyexec.call(Name, Arg...)' or `erlang.call(Name, Arg...)' (from any
%% call of this node). Fun gets the list of arguments (keyword arguments,
%% if any, as a map appended to it) and returns the value Python gets. An
%% exception in Fun raises pyexec.CallbackError in Python, with the class
%% as its type and the reason as its message. Fun runs in a process of its
%% own; py calls it makes without a context run on the session of the call
%% that asked (nested on its interpreter: re-entry). Registering again
%% replaces the function. While any function is registered, calls are sent
%% as Run streams (a round trip more than plain calls).
-spec register_function(atom() | binary(), fun(([value()]) -> value())) -> ok.
register_function(Name, Fun) when (is_atom(Name) orelse is_binary(Name)), is_function(Fun, 1) ->
    pyexec_callback:register(Name, Fun).

%% @doc Registers `Module:Function(Args)' as Name (see register_function/2).
-spec register_function(atom() | binary(), module(), atom()) -> ok.
register_function(Name, Module, Function)
  when (is_atom(Name) orelse is_binary(Name)), is_atom(Module), is_atom(Function) ->
    pyexec_callback:register(Name, {Module, Function}).

%% @doc Removes a registered function. Always ok.
-spec unregister_function(atom() | binary()) -> ok.
unregister_function(Name) when is_atom(Name); is_binary(Name) ->
    pyexec_callback:unregister(Name).

%%====================================================================
%% Object references (erlang_python 4.x py_ref API)
%%====================================================================

%% @doc Whether Term is a ref to a Python object.
-spec is_ref(term()) -> boolean().
is_ref({py_ref, Session, _, _, _} = Term) when is_binary(Session) ->
    pyexec_value:is_ref(Term);
is_ref(_) ->
    false.

%% @doc Calls the method Method of the ref's object, on the session that
%% holds it. Method may be a dotted path (`'inner.method'').
-spec call_method(py_ref(), name(), [value()]) -> py_result().
call_method(Ref, Method, Args) ->
    call_method(Ref, Method, Args, #{}).

%% @doc call_method/3 with keyword arguments (an extension).
-spec call_method(py_ref(), name(), [value()], map()) -> py_result().
call_method({py_ref, Session, Id, _, _} = Ref, Method, Args, Kwargs)
  when is_binary(Session), is_list(Args), is_map(Kwargs) ->
    ref_session(Ref),
    ref_error(<<"target_ref: ">>,
              run({session, Session}, call, #{target_ref => Id, function => name(Method),
                                              args => Args, kwargs => Kwargs}, default_timeout()));
call_method(Ref, _Method, _Args, _Kwargs) ->
    error({badarg, Ref}).

%% @doc Reads the attribute Name (may be dotted) of the ref's object.
-spec getattr(py_ref(), name()) -> py_result().
getattr({py_ref, Session, Id, _, _} = Ref, Name) when is_binary(Session) ->
    ref_session(Ref),
    ref_error(<<"target_ref: ">>,
              run({session, Session}, call, #{target_ref => Id, function => name(Name),
                                              get_attribute => true}, default_timeout()));
getattr(Ref, _Name) ->
    error({badarg, Ref}).

%% @doc The ref's object converted to an Erlang term. Parts with no Erlang
%% counterpart come back as new refs (an object with none at all: a new
%% ref to the same object).
-spec to_term(py_ref()) -> py_result().
to_term({py_ref, Session, _, _, _} = Ref) when is_binary(Session) ->
    ref_session(Ref),
    ref_error(<<"'_pyexec_ref': ">>,
              run({session, Session}, eval, #{code => <<"_pyexec_ref">>,
                                              locals => #{<<"_pyexec_ref">> => Ref}},
                  default_timeout()));
to_term(Ref) ->
    error({badarg, Ref}).

%% @doc Drops refs (one or a list) on their sessions (the Release RPC), so
%% their objects can be freed. erlang_python frees an object when the
%% Erlang term is garbage collected; a remote server cannot see that, so
%% refs live until released or until their session is unbound. Releasing
%% an already released ref does nothing. `ok', or `{error, session_lost}'.
-spec release(py_ref() | [py_ref()]) -> ok | {error, py_error()}.
release(Refs) when is_list(Refs) ->
    BySession = lists:foldl(fun({py_ref, S, Id, _, _} = R, Acc) when is_binary(S) ->
                                    ref_session(R),
                                    maps:update_with(S, fun(L) -> [Id | L] end, [Id], Acc);
                               (Bad, _) ->
                                    error({badarg, Bad})
                            end, #{}, Refs),
    maps:fold(fun(Session, Ids, ok) ->
                      case pyexec_rpc:call(release, #{session => Session, ref_ids => Ids},
                                           default_timeout()) of
                          {ok, _} -> ok;
                          {error, {grpc, not_found, _}} -> {error, session_lost};
                          {error, _} = E -> E
                      end;
                 (_, _, Err) ->
                      Err
              end, ok, BySession);
release(Ref) ->
    release([Ref]).

%% The server says where in the request a value failed (`'name': ...' for a
%% local, `target_ref: ...' for the Call's target). Where that part is one
%% this client made up to carry the caller's ref, it means nothing to the
%% caller: the message starts at what went wrong.
ref_error(Prefix, {error, {grpc, invalid_argument, Msg}} = E) ->
    N = byte_size(Prefix),
    case Msg of
        <<Prefix:N/binary, Rest/binary>> -> {error, {grpc, invalid_argument, Rest}};
        _ -> E
    end;
ref_error(_Prefix, Result) ->
    Result.

ref_session({py_ref, S, Id, T, R}) when is_binary(S), is_binary(Id), is_binary(T), is_binary(R) ->
    ok;
ref_session(Ref) ->
    error({badarg, Ref}).

%%====================================================================
%% Diagnostics
%%====================================================================

%% @doc The formatted Python traceback of the most recent call from this
%% process that returned `{error, {Type, Message}}', or undefined. Kept in
%% the process dictionary, so it costs nothing unless an exception occurs.
-spec last_traceback() -> binary() | undefined.
last_traceback() ->
    get(?TRACEBACK_KEY).

%% @doc What the most recent call from this process printed:
%% `#{stdout => Binary, stderr => Binary}' (bounded by the server).
-spec last_output() -> #{stdout := binary(), stderr := binary()}.
last_output() ->
    case get(?OUTPUT_KEY) of
        undefined -> #{stdout => <<>>, stderr => <<>>};
        {Out, Err} -> #{stdout => Out, stderr => Err}
    end.

%%====================================================================
%% Internals
%%====================================================================

%% The session a synchronous call from this process would use, resolved
%% here because the spawned process has no binding of its own.
caller_target() ->
    case bound_id() of
        none -> callback_target();
        Id -> {bound, Id}
    end.

%% In a callback process, calls without a context run on the session of the
%% call that asked for the callback (nested on its interpreter).
callback_target() ->
    case pyexec_callback:context() of
        #{session := Session} when Session =/= <<>> -> {session, Session};
        _ -> stateless
    end.

%% Runs a call in a new process; sends `{py_response, Ref, Result}' to the
%% caller unless Ref is none (cast). A raised error (context_not_bound, a
%% bad argument) becomes `{py_error, Ref, Reason}'.
%%
%% The session and the call's id are settled here, before this returns, so
%% that interrupt(Ref) names the call at once, even before the new process
%% has sent it (the server keeps an Interrupt that arrives first for its
%% call). A callback process's context goes with it (see pyexec_callback).
spawn_target(Target, {Module, Function, Args, Kwargs}, Ref) ->
    Parent = self(),
    Timeout = default_timeout(),
    Callback = pyexec_callback:context(),
    Resolved = try session(Target) catch error:Why -> {raise, Why} end,
    CallId = pyexec_rpc:new_call_id(),
    Go = make_ref(),
    Pid = spawn(fun() ->
                        receive Go -> ok end,
                        pyexec_callback:set_context(Callback),
                        Result = try
                                     case Resolved of
                                         {raise, Raised} -> error(Raised);
                                         {error, _} = E -> E;
                                         {ok, Session, Id} ->
                                             do_call({Target, Id, Session, CallId}, Module,
                                                     Function, Args, Kwargs, Timeout)
                                     end
                                 of
                                     R -> {py_response, Ref, R}
                                 catch
                                     error:Reason -> {py_error, Ref, Reason}
                                 end,
                        %% Whoever takes the entry answers: this process, or
                        %% interrupt/1 (a stateless call it stopped).
                        case Ref =/= none andalso catch ets:take(?CALL_TABLE, Ref) of
                            false -> ok;
                            [] -> ok;
                            _ -> Parent ! Result
                        end
                end),
    Ref =:= none orelse
        (catch ets:insert(?CALL_TABLE, {Ref, Pid, token(Resolved), CallId, Parent, spawned})),
    Pid ! Go,
    Ref.

token({ok, Session, _}) -> Session;
token(_) -> <<>>.




do_call(Target, Module, Function, Args, Kwargs, Timeout) when is_list(Args), is_map(Kwargs) ->
    run(Target, call, #{module => name(Module), function => name(Function),
                        args => Args, kwargs => Kwargs}, Timeout).

do_eval(Target, Code, Locals, Timeout) when is_map(Locals) ->
    run(Target, eval, #{code => code(Code), locals => Locals}, Timeout).

do_exec(Target, Code, Locals, Timeout) when is_map(Locals) ->
    run(Target, exec, #{code => code(Code), locals => Locals}, Timeout).

run(Target, Method, Req, Timeout) when Timeout =:= infinity;
                                       is_integer(Timeout), Timeout >= 0 ->
    case Target of
        {T, Id, Session, CallId} ->
            %% Settled by the process that started the call (spawn_target).
            run(T, Id, Session, CallId, Method, Req, Timeout);
        _ ->
            case session(Target) of
                {ok, Session, Id} ->
                    run(Target, Id, Session, pyexec_rpc:new_call_id(), Method, Req, Timeout);
                {error, _} = E ->
                    E
            end
    end;
run(_Target, _Method, _Req, Timeout) ->
    error({badarg, {timeout, Timeout}}).

run(Target, Id, Session, CallId, Method, Req, Timeout) ->
    Opts = call_opts(Session, CallId),
    Result = try send(Method, Req#{session => Session}, Timeout, Opts)
             catch throw:{pyexec_bad_value, Bad} -> {error, {bad_value, Bad}}
             end,
    result(Method, Result, Target, Id, Session).

%% Calls go as Run streams while functions are registered, so that Python
%% can call them (a plain call costs one round trip less).
send(Method, Req, Timeout, Opts) when Method =:= eval; Method =:= exec; Method =:= call ->
    case pyexec_callback:any() of
        true -> pyexec_callback:run(Method, Req, Timeout, Opts);
        false -> pyexec_rpc:call(Method, Req, Timeout, Opts)
    end.

%% Every call is named (x-pyexec-call-id), and a call made by a callback
%% process says which callback it runs (x-pyexec-callback).
call_opts(Session, CallId) ->
    Opts = #{session => Session, call_id => CallId},
    case pyexec_callback:context() of
        #{id := Cb} -> Opts#{callback => Cb};
        undefined -> Opts
    end.

%% Which session a call uses. `default' is the process's binding, if any,
%% else a stateless call (empty session); `{ctx, Id}' is an explicit
%% context; `{bound, Id}' and `stateless' are `default' as resolved in the
%% process that started an asynchronous call.
session(default) ->
    case bound_id() of
        none -> session(callback_target());
        Id -> session({bound, Id})
    end;
session(stateless) ->
    {ok, <<>>, none};
session({session, Session}) ->
    %% A ref's own session (call_method/3 and friends).
    {ok, Session, none};
session({bound, Id}) ->
    case session_of(Id) of
        {ok, Session} -> {ok, Session, Id};
        not_bound -> {error, session_lost};
        {error, _} = E -> E
    end;
session({ctx, Id}) ->
    case session_of(Id) of
        {ok, Session} -> {ok, Session, Id};
        not_bound -> error(context_not_bound);
        {error, _} = E -> E
    end.

session_of({_Pool, _N} = Id) ->
    pyexec_registry:ensure_shared(Id);
session_of(Id) ->
    case ets:lookup(?CTX_TABLE, Id) of
        [{_, lost, _, _}] ->
            %% Its lease saw it end on the server: drop it as a call that
            %% found it gone would.
            ok = pyexec_registry:lost(Id, lost),
            not_bound;
        [{_, Session, _, _}] -> {ok, Session};
        [] -> not_bound
    end.

bound_id() ->
    try ets:lookup(?BOUND_TABLE, self()) of
        [{_, Id}] -> Id;
        [] -> none
    catch
        error:badarg -> none    % application not started
    end.

result(Method, {ok, Resp}, _Target, _Id, Session) ->
    put(?OUTPUT_KEY, {maps:get(stdout, Resp), maps:get(stderr, Resp)}),
    case Resp of
        #{error := Err} ->
            {error, python_error(Err)};
        _ when Method =:= exec ->
            ok;
        _ ->
            {ok, with_session(maps:get(value, Resp, none), Session)}
    end;
result(_Method, {error, {grpc, deadline_exceeded, _}}, _Target, _Id, _Session) ->
    {error, timeout};
result(_Method, {error, {grpc, cancelled, _}}, _Target, _Id, _Session) ->
    %% We cancel only streams we stop reading, never a call we wait for: a
    %% CANCELLED answer is an Interrupt (py:interrupt/1), as erlang_python
    %% reports it.
    {error, interrupted};
result(_Method, {error, {grpc, not_found, _}}, {session, _}, _Id, _Session) ->
    %% A ref whose session is gone.
    {error, session_lost};
result(_Method, {error, {grpc, aborted, _}} = E, {session, _}, _Id, _Session) ->
    E;
result(_Method, {error, {grpc, not_found, _}}, Target, Id, Session) when Session =/= <<>> ->
    %% The server forgot the session (restart, idle expiry, worker crash).
    ok = pyexec_registry:lost(Id, Session),
    case {Target, Id} of
        {{ctx, _}, {_Pool, _N}} -> {error, session_lost};   % shared: rebinds next time
        {{ctx, _}, _} -> error(context_not_bound);
        {_, _} -> {error, session_lost}     % the process's own binding
    end;
result(_Method, {error, {grpc, aborted, _}} = E, _Target, Id, Session) when Session =/= <<>> ->
    %% The worker died during the call and its session died with it.
    ok = pyexec_registry:lost(Id, Session),
    E;
result(_Method, {error, _} = E, _Target, _Id, _Session) ->
    E.

python_error(#{type := Type, message := Msg, traceback := Tb}) ->
    put(?TRACEBACK_KEY, Tb),
    {exception_type(Type), unicode:characters_to_list(Msg)}.

with_session(Value, <<>>) -> Value;
with_session(Value, Session) -> pyexec_value:attach_session(Value, Session).

%% Opens a stream on the session Target resolves to: {ok, State} for
%% next_event/2, or an error as call/3 would return it.
open_stream(Target0, Method, Req, Timeout) when Timeout =:= infinity;
                                                is_integer(Timeout), Timeout >= 0 ->
    {Target, Resolved, CallId} =
        case Target0 of
            {T, Id0, Session0, C} -> {T, {ok, Session0, Id0}, C};
            _ -> {Target0, session(Target0), pyexec_rpc:new_call_id()}
        end,
    case Resolved of
        {ok, Session, Id} ->
            try pyexec_rpc:stream_open(Method, Req#{session => Session}, Timeout,
                                       call_opts(Session, CallId)) of
                {ok, S} -> {ok, #{s => S, target => Target, id => Id, session => Session,
                                  method => Method}};
                {error, _} = E -> result(Method, E, Target, Id, Session)
            catch
                throw:{pyexec_bad_value, Bad} -> {error, {bad_value, Bad}}
            end;
        {error, _} = E ->
            E
    end;
open_stream(_Target, _Method, _Req, Timeout) ->
    error({badarg, {timeout, Timeout}}).

%% The next event of a stream, in the `py_stream' event shapes:
%% {data, V} | {stdout, B} | {stderr, B} | done | {error, Reason} (the last
%% two end it), or {ctl, Ctl} for a control message to the reader. A Python
%% exception ends it as {exception, PythonError}, which the reader shapes.
next_event(#{s := S, target := Target, id := Id, session := Session, method := Method} = St, Wait) ->
    case pyexec_rpc:stream_recv(S, Wait) of
        {ok, #{'end' := #{error := Err}}} ->
            %% The status (OK) follows the `end' event.
            _ = pyexec_rpc:stream_recv(S, 5000),
            {exception, Err};
        {ok, #{'end' := _}} ->
            case pyexec_rpc:stream_recv(S, 5000) of
                done -> done;
                {error, _} = E -> stream_error(E, St);
                _ -> pyexec_rpc:stream_cancel(S), done
            end;
        {ok, #{value := V}} ->
            {data, with_session(V, Session)};
        {ok, #{stdout := Out}} when Out =/= <<>> ->
            {stdout, Out};
        {ok, #{stderr := Err}} when Err =/= <<>> ->
            {stderr, Err};
        {ok, _Empty} ->
            next_event(St, Wait);
        done ->
            %% A stream must end with an `end' event before its status.
            {error, {grpc, internal, <<"stream ended without an end event">>}};
        {error, _} = E ->
            stream_error(E, St#{target := Target, id := Id, method := Method});
        Other ->
            Other     % timeout | {ctl, _}
    end.

stream_error(E, #{target := Target, id := Id, session := Session, method := Method}) ->
    try result(Method, E, Target, Id, Session)
    catch error:context_not_bound -> {error, context_not_bound}
    end.

%% stream/3,4: reads every event in the calling process. Shape: how a
%% Python exception is returned (see stream/3 and stream/4).
collect(St, Shape, Acc, Out, Err) ->
    case next_event(St, infinity) of
        {data, V} -> collect(St, Shape, [V | Acc], Out, Err);
        {stdout, B} -> collect(St, Shape, Acc, [B | Out], Err);
        {stderr, B} -> collect(St, Shape, Acc, Out, [B | Err]);
        {ctl, _} -> collect(St, Shape, Acc, Out, Err);
        Final ->
            put(?OUTPUT_KEY, {iolist_to_binary(lists:reverse(Out)),
                              iolist_to_binary(lists:reverse(Err))}),
            case Final of
                done -> {ok, lists:reverse(Acc)};
                {exception, Exc} when Shape =:= message -> {error, exception_message(Exc)};
                {exception, Exc} -> {error, python_error(Exc)};
                {error, _} = E -> E
            end
    end.

%% A Python exception as erlang_python's streams report it: its str(), as
%% a binary. The traceback stays available through last_traceback/0.
exception_message(#{message := Msg, traceback := Tb}) ->
    put(?TRACEBACK_KEY, Tb),
    Msg.

-define(OWNER_QUEUE_MAX, 1000).

%% stream_start/4, exec_start/2: a driver process reads the stream (so the
%% connection's flow control follows its pace) and forwards the events to
%% the owner. It resolves the session in the caller first, as spawn_call/3.
start_driver(Method, Req, Opts) ->
    Owner = maps:get(owner, Opts, self()),
    is_pid(Owner) orelse error({badarg, {owner, Owner}}),
    Target = case maps:get(ctx, Opts, undefined) of
                 undefined -> caller_target();
                 #py_ctx{id = Id} -> {ctx, Id};
                 Bad -> error({badarg, {ctx, Bad}})
             end,
    Timeout = maps:get(timeout, Opts, default_timeout()),
    Output = maps:get(output, Opts),
    Ref = make_ref(),
    %% As spawn_target/3: settled here so that interrupt(Ref) can name it.
    Resolved = try session(Target) catch error:Why -> {raise, Why} end,
    CallId = pyexec_rpc:new_call_id(),
    Callback = pyexec_callback:context(),
    Pid = spawn(fun() ->
                        receive {Ref, go} -> ok end,
                        pyexec_callback:set_context(Callback),
                        drive(Ref, Owner, {Target, Resolved, CallId}, Method, Req, Timeout, Output)
                end),
    %% Registered before stream_cancel/1 can be called, and before the
    %% driver can end and delete the entry. Without the application (no
    %% table) the driver reports `{error, {grpc, unavailable, _}}' to the
    %% owner, as a call would return.
    _ = (catch ets:insert(?STREAM_TABLE, {Ref, Pid})),
    _ = (catch ets:insert(?CALL_TABLE, {Ref, Pid, token(Resolved), CallId, Owner, stream})),
    Pid ! {Ref, go},
    {ok, Ref}.

drive(Ref, Owner, {Target, Resolved, CallId}, Method, Req, Timeout, Output) ->
    %% Owner death arrives as a control message, so it ends a blocked read.
    erlang:monitor(process, Owner, [{tag, pyexec_stream_ctl}]),
    Final = try
                case Resolved of
                    {raise, Raised} -> error(Raised);
                    {error, _} = E0 -> E0;
                    {ok, Session, Id} -> open_stream({Target, Id, Session, CallId}, Method, Req,
                                                     Timeout)
                end
            of
                {ok, St} -> forward(St, Ref, Owner, Output);
                {error, _} = E -> E
            catch
                error:context_not_bound -> {error, context_not_bound};
                error:Reason -> {error, Reason}
            end,
    _ = (catch ets:delete(?STREAM_TABLE, Ref)),
    _ = (catch ets:delete(?CALL_TABLE, Ref)),
    case Final of
        owner_down -> ok;
        _ -> Owner ! {py_stream, Ref, Final}
    end.

forward(#{s := S} = St, Ref, Owner, Output) ->
    case next_event(St, infinity) of
        {data, V} ->
            case wait_for_owner(Owner, S) of
                ok -> Owner ! {py_stream, Ref, {data, V}}, forward(St, Ref, Owner, Output);
                Stop -> Stop
            end;
        {Chunk, B} when Chunk =:= stdout; Chunk =:= stderr ->
            case Output andalso wait_for_owner(Owner, S) of
                false -> forward(St, Ref, Owner, Output);
                ok -> Owner ! {py_stream, Ref, {Chunk, B}}, forward(St, Ref, Owner, Output);
                Stop -> Stop
            end;
        {ctl, Ctl} ->
            case ctl(Ctl, S) of
                continue -> forward(St, Ref, Owner, Output);
                Stop -> Stop
            end;
        {exception, Exc} ->
            {error, exception_message(Exc)};
        Final ->
            Final
    end.

ctl({pyexec_stream_ctl, cancel}, S) ->
    pyexec_rpc:stream_cancel(S),
    {error, <<"cancelled">>};
ctl({pyexec_stream_ctl, interrupt}, S) ->
    %% interrupt/1 of a stateless stream.
    pyexec_rpc:stream_cancel(S),
    {error, interrupted};
ctl({pyexec_stream_ctl, _Mon, process, _Owner, _}, S) ->
    pyexec_rpc:stream_cancel(S),
    owner_down;
ctl(_, _S) ->
    continue.

%% Holds delivery while the owner's mailbox is long. Nothing signals that
%% an owner has read its messages, so this checks every 10 ms; meanwhile
%% the stream is not read, the window is not reopened and the server waits.
wait_for_owner(Owner, S) when node(Owner) =:= node() ->
    case erlang:process_info(Owner, message_queue_len) of
        {message_queue_len, N} when N > ?OWNER_QUEUE_MAX ->
            receive
                M when element(1, M) =:= pyexec_stream_ctl ->
                    case ctl(M, S) of
                        continue -> wait_for_owner(Owner, S);
                        Stop -> Stop
                    end
            after 10 ->
                    wait_for_owner(Owner, S)
            end;
        _ ->
            ok
    end;
wait_for_owner(_Owner, _S) ->
    ok.

%% The exception type as an atom when that atom already exists (every
%% built-in exception, and any name the application itself mentions), else
%% as a binary: creating atoms from names chosen by Python code would let
%% it exhaust the node's atom table, which is never garbage collected.
%% Python's built-in names are atoms of pyexec_value
%% (builtin_exception_types/0), which an interactive node may not have
%% loaded yet: an exec error decodes no Value.
exception_type(Type) ->
    try binary_to_existing_atom(Type, utf8)
    catch error:badarg ->
            {module, _} = code:ensure_loaded(pyexec_value),
            try binary_to_existing_atom(Type, utf8)
            catch error:badarg -> Type
            end
    end.

unbind_session(lost) ->
    ok;
unbind_session(Session) ->
    %% Unbind is idempotent on the server and "unbind always returns ok":
    %% a failure here (server down) leaves the session to its idle timeout.
    _ = pyexec_rpc:call(unbind, #{session => Session}, default_timeout()),
    ok.

code(Code) ->
    case unicode:characters_to_binary(Code) of
        Bin when is_binary(Bin) -> Bin;
        _ -> error({badarg, {code, Code}})
    end.

name(A) when is_atom(A) -> atom_to_binary(A, utf8);
name(B) when is_binary(B) -> B;
name(L) when is_list(L) -> code(L).

default_timeout() ->
    pyexec_config:get(default_timeout).
