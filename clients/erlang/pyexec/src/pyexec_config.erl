%% @doc Application configuration: reads and validates the `pyexec'
%% application environment once, at start, and keeps the result in
%% persistent_term so the per-call path reads it without copying.
%%
%% Every key is documented in README.md; defaults are in defaults/0.
-module(pyexec_config).

-export([load/0, get/1, all/0, decode_bytes/0, endpoints/0, endpoint/1]).

-compile({no_auto_import, [get/1]}).

-define(KEY, {?MODULE, config}).

defaults() ->
    #{endpoints => [{"127.0.0.1", 50051}],
      connections => 2,
      tls => false,
      default_timeout => 30000,
      num_contexts => erlang:system_info(schedulers_online),
      context_pools => #{io => 2},
      session_idle_timeout => 0,
      transport => builtin,
      grpcbox_channel => pyexec,
      connect_timeout => 5000,
      reconnect_backoff_min => 100,
      reconnect_backoff_max => 5000,
      keepalive_interval => infinity,
      metadata => [],
      max_message_size => 64 * 1024 * 1024,
      window_size => 4 * 1024 * 1024,
      decode_bytes => binary,
      deadline_grace => 2000,
      authority => undefined,
      lease => true,
      route_to_owner => false}.

%% @doc Reads the application env over the defaults, validates it and stores
%% it. Called by pyexec_app:start/2; raises on a bad value so that a
%% misconfiguration stops the application at boot with a clear reason.
-spec load() -> map().
load() ->
    Env = maps:from_list(application:get_all_env(pyexec)),
    Unknown = maps:keys(maps:without(maps:keys(defaults()) ++ [included_applications], Env)),
    Unknown =:= [] orelse error({pyexec_config, {unknown_keys, Unknown}}),
    Cfg0 = maps:merge(defaults(), maps:with(maps:keys(defaults()), Env)),
    Cfg = maps:map(fun validate/2, Cfg0),
    check_transport(Cfg, Env),
    persistent_term:put(?KEY, Cfg),
    Cfg.

-spec all() -> map().
all() ->
    persistent_term:get(?KEY, defaults()).

-spec get(atom()) -> term().
get(Key) ->
    maps:get(Key, all()).

-spec decode_bytes() -> tagged | binary.
decode_bytes() ->
    maps:get(decode_bytes, all()).

%% @doc Endpoints normalised to [{Host :: string(), Port}].
-spec endpoints() -> [{string(), inet:port_number()}].
endpoints() ->
    get(endpoints).

validate(endpoints, L) when is_list(L), L =/= [] ->
    [endpoint(E) || E <- (case io_lib:printable_list(L) of true -> [L]; false -> L end)];
validate(connections, N) when is_integer(N), N >= 1 -> N;
validate(tls, B) when is_boolean(B) -> B;
validate(tls, Opts) when is_list(Opts) -> Opts;
validate(default_timeout, T) -> timeout_value(default_timeout, T);
validate(num_contexts, N) when is_integer(N), N >= 1 -> N;
validate(context_pools, M) when is_map(M) -> validate(context_pools, maps:to_list(M));
validate(context_pools, L) when is_list(L) ->
    maps:from_list([{P, N} || {P, N} <- L, is_atom(P), P =/= default, is_integer(N), N >= 1]);
validate(session_idle_timeout, S) when is_integer(S), S >= 0 -> S;
validate(transport, T) when T =:= builtin; T =:= grpcbox -> T;
validate(grpcbox_channel, C) when is_atom(C) -> C;
validate(connect_timeout, T) when is_integer(T), T > 0 -> T;
validate(reconnect_backoff_min, T) when is_integer(T), T > 0 -> T;
validate(reconnect_backoff_max, T) when is_integer(T), T > 0 -> T;
validate(keepalive_interval, T) -> timeout_value(keepalive_interval, T);
validate(metadata, L) when is_list(L) ->
    [{string:lowercase(iolist_to_binary(K)), iolist_to_binary(V)} || {K, V} <- L];
validate(max_message_size, N) when is_integer(N), N > 0 -> N;
validate(window_size, N) when is_integer(N), N >= 65535, N =< 16#7fffffff -> N;
validate(decode_bytes, B) when B =:= tagged; B =:= binary -> B;
validate(deadline_grace, T) when is_integer(T), T >= 0 -> T;
validate(authority, undefined) -> undefined;
validate(authority, A) -> iolist_to_binary(A);
validate(lease, B) when is_boolean(B) -> B;
validate(route_to_owner, B) when is_boolean(B) -> B;
validate(Key, Value) -> error({pyexec_config, {bad_value, Key, Value}}).

%% grpcbox owns the connections in `{transport, grpcbox}' mode, and these
%% settings have no per-channel equivalent there (chatterbox reads windows
%% and frame sizes from its own application environment, the authority
%% comes from the endpoint, reconnects are grpcbox's). Setting one of them
%% to anything but its default is refused rather than ignored. Honoured in
%% grpcbox mode: endpoints, tls, metadata, connect_timeout, default_timeout,
%% deadline_grace and the rest of the keys that do not concern HTTP/2.
-define(NOT_WITH_GRPCBOX, [authority, keepalive_interval, window_size, max_message_size,
                           connections, reconnect_backoff_min, reconnect_backoff_max]).

check_transport(#{transport := grpcbox} = Cfg, Env) ->
    Defaults = defaults(),
    case [K || K <- ?NOT_WITH_GRPCBOX, is_map_key(K, Env),
               maps:get(K, Cfg) =/= validate(K, maps:get(K, Defaults))] of
        [] -> ok;
        Keys -> error({pyexec_config, {unsupported_with_grpcbox, Keys}})
    end;
check_transport(_Cfg, _Env) ->
    ok.

timeout_value(_, infinity) -> infinity;
timeout_value(_, T) when is_integer(T), T > 0 -> T;
timeout_value(Key, T) -> error({pyexec_config, {bad_value, Key, T}}).

%% @doc One endpoint, `{Host, Port}' or "host:port", as {Host, Port}.
-spec endpoint(term()) -> {string(), inet:port_number()}.
endpoint({Host, Port}) when is_integer(Port), Port > 0, Port < 65536 ->
    {host(Host), Port};
endpoint(S) when is_list(S); is_binary(S) ->
    %% "host:port"; the last colon separates the port so bracketed IPv6
    %% literals ("[::1]:50051") work.
    Str = unicode:characters_to_list(S),
    case string:split(Str, ":", trailing) of
        [Host, PortStr] ->
            endpoint({string:trim(Host, both, "[]"), list_to_integer(PortStr)});
        _ ->
            error({pyexec_config, {bad_endpoint, S}})
    end;
endpoint(E) ->
    error({pyexec_config, {bad_endpoint, E}}).

host(H) when is_list(H) -> H;
host(H) when is_binary(H) -> binary_to_list(H);
host(H) when is_atom(H) -> atom_to_list(H);
host(H) when is_tuple(H) -> inet:ntoa(H).
