%% A context handle: what py:bind(new), py:context/1 and
%% py_context_router:get_context/0,1 return. Opaque to users.
%%   id = reference()       a private session (py:bind/0, py:bind(new))
%%   id = {Pool, Index}     the Index-th shared context of Pool
-record(py_ctx, {id :: reference() | {atom(), pos_integer()}}).

%% ETS: context id -> session token.
%%   {Id, Session :: binary(), Owner :: pid() | shared, Kind}
%%   Kind = implicit (py:bind/0) | explicit (py:bind(new)) | shared (py:context/1)
-define(CTX_TABLE, pyexec_ctx).
%% ETS: process -> the context its py:call/eval/exec use.  {Pid, Id}
-define(BOUND_TABLE, pyexec_bound).
%% ETS: py:stream_start/exec_start reference -> the process driving it.  {Ref, Pid}
-define(STREAM_TABLE, pyexec_streams).
%% ETS: spawn_call/async_call/stream_start/exec_start reference -> the call,
%% for py:interrupt/1.  {Ref, Pid, Session, CallId, ReplyTo, spawned | stream}
-define(CALL_TABLE, pyexec_named_calls).
