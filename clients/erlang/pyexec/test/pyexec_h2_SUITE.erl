%% The built-in HTTP/2 + gRPC transport against an independent
%% implementation: Python grpcio (grpc-core), started by the suite. Covers
%% what pyexecd alone would not exercise on demand: flow control in both
%% directions with messages far above the windows, CONTINUATION both ways,
%% trailers-only responses with percent-encoded messages, deadlines,
%% RST_STREAM on caller death, GOAWAY, reconnection with backoff, keepalive
%% PINGs and TLS with ALPN.
-module(pyexec_h2_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(HUGE_WINDOW, (1 bsl 30 + 32768)).

all() ->
    [echo, concurrent_streams, large_request_flow_control, large_response_flow_control,
     huge_window_no_stall, max_message_size, continuation_both_ways, status_and_percent_encoded_message,
     deadline_sent_as_grpc_timeout, infinity_timeout, caller_death_resets_stream,
     goaway_finishes_inflight_then_reconnects, reconnect_with_backoff, keepalive_ping, tls_alpn_h2,
     bearer_metadata_on_every_call, mtls_with_bearer].

init_per_suite(Config) ->
    Script = filename:join(?config(data_dir, Config), "grpc_test_server.py"),
    [{script, Script} | Config].

end_per_suite(_Config) ->
    pyexec_test_util:stop_app().

init_per_testcase(TC, Config) ->
    {ok, Srv} = start_py(Config, []),
    Extra = case TC of
                continuation_both_ways ->
                    [{metadata, [{<<"x-echo-big">>, binary:copy(<<"m">>, 40000)}]}];
                max_message_size -> [{max_message_size, 1000000}];
                huge_window_no_stall -> [{window_size, ?HUGE_WINDOW}];
                keepalive_ping -> [{keepalive_interval, 200}];
                bearer_metadata_on_every_call ->
                    [{metadata, [{<<"authorization">>, <<"Bearer s3cr3t">>}]}];
                _ -> []
            end,
    ok = pyexec_test_util:start_app([{endpoints, [{"127.0.0.1", maps:get(port, Srv)}]},
                                     {connections, 2},
                                     {reconnect_backoff_min, 50},
                                     {reconnect_backoff_max, 400} | Extra]),
    [{srv, Srv} | Config].

end_per_testcase(_TC, Config) ->
    pyexec_test_util:stop_app(),
    _ = pyexec_test_util:stop_server(?config(srv, Config), "KILL"),
    ok.

start_py(Config, Args) ->
    pyexec_test_util:start_server("/usr/bin/python3", [?config(script, Config) | Args]).

rpc(Method, Body) -> rpc(Method, Body, 10000).
rpc(Method, Body, Timeout) ->
    pyexec_grpc:request(<<"/test.Echo/", Method/binary>>, Body, Timeout).

%%--------------------------------------------------------------------

echo(_Config) ->
    ?assertEqual({ok, <<"hello">>}, rpc(<<"Echo">>, <<"hello">>)),
    ?assertEqual({ok, <<>>}, rpc(<<"Echo">>, <<>>)),
    %% Unknown method: grpc-core answers UNIMPLEMENTED, trailers-only.
    ?assertMatch({error, {grpc, unimplemented, _}},
                 pyexec_grpc:request(<<"/test.Echo/Nope">>, <<>>, 5000)).

%% Many streams at once over two connections, from many processes.
concurrent_streams(_Config) ->
    Parent = self(),
    Expected = fun(I) -> [{ok, iolist_to_binary([integer_to_list(I), $:, integer_to_list(J)])}
                          || J <- lists:seq(1, 20)] end,
    Pids = [{spawn_link(fun() ->
                                Res = [rpc(<<"Echo">>, iolist_to_binary([integer_to_list(I), $:,
                                                                           integer_to_list(J)]))
                                       || J <- lists:seq(1, 20)],
                                Parent ! {self(), Res}
                        end), I} || I <- lists:seq(1, 50)],
    [receive {P, Res} -> ?assertEqual(Expected(I), Res) after 30000 -> error(timeout) end
     || {P, I} <- Pids],
    ok.

%% 12 MB out: far beyond the server's initial 64 KiB windows, so sending
%% only works if WINDOW_UPDATEs are honoured.
large_request_flow_control(_Config) ->
    Big = crypto:strong_rand_bytes(12 * 1024 * 1024),
    ?assertEqual({ok, Big}, rpc(<<"Echo">>, Big, 60000)),
    %% Several large ones in parallel share the connection window.
    Parent = self(),
    [spawn_link(fun() -> Parent ! {big, rpc(<<"Echo">>, Big, 60000)} end) || _ <- [1, 2, 3]],
    [receive {big, R} -> ?assertEqual({ok, Big}, R) end || _ <- [1, 2, 3]].

%% 20 MB in: beyond our 4 MiB stream window, so receiving only works if we
%% send WINDOW_UPDATEs.
large_response_flow_control(_Config) ->
    N = 20 * 1024 * 1024,
    {ok, Bin} = rpc(<<"Big">>, integer_to_binary(N), 60000),
    ?assertEqual(N, byte_size(Bin)),
    ?assertEqual(binary:copy(<<"z">>, N), Bin).

%% A stream window just above 1 GiB: the connection window (twice the
%% stream window, but never above 2^31-1) must still reach the server in
%% full. Packing 2 * W - 65535 into WINDOW_UPDATE's 31 bits would leave the
%% server a 64 KiB connection window that we never top up (we ack at half
%% our window), and this 20 MB response would stall until the deadline.
huge_window_no_stall(_Config) ->
    N = 20 * 1024 * 1024,
    {ok, Bin} = rpc(<<"Big">>, integer_to_binary(N), 20000),
    ?assertEqual(N, byte_size(Bin)).

max_message_size(_Config) ->
    ?assertMatch({error, {grpc, resource_exhausted, _}}, rpc(<<"Big">>, <<"2000000">>)),
    %% The connection is still fine afterwards.
    ?assertEqual({ok, <<"after">>}, rpc(<<"Echo">>, <<"after">>)).

%% 40 KB of metadata: our HEADERS is split into CONTINUATION frames, and
%% the server's trailers echoing it come back split as well.
continuation_both_ways(_Config) ->
    ?assertEqual({ok, <<"x">>}, rpc(<<"Echo">>, <<"x">>)),
    ?assertEqual({ok, <<"y">>}, rpc(<<"Echo">>, <<"y">>)).

%% grpc-core sends an abort as a trailers-only response with a
%% percent-encoded grpc-message.
status_and_percent_encoded_message(_Config) ->
    Msg = <<"no_workers_available: 100% busy ☃ \n"/utf8>>,
    ?assertEqual({error, {grpc, resource_exhausted, Msg}}, rpc(<<"Fail">>, <<"8:", Msg/binary>>)),
    ?assertEqual({error, {grpc, not_found, <<"gone">>}}, rpc(<<"Fail">>, <<"5:gone">>)),
    ?assertEqual({ok, <<"still ok">>}, rpc(<<"Echo">>, <<"still ok">>)).

%% The timeout travels as grpc-timeout: the server itself ends the call
%% with DEADLINE_EXCEEDED and sees it as cancelled.
deadline_sent_as_grpc_timeout(_Config) ->
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({error, {grpc, deadline_exceeded, _}}, rpc(<<"Sleep">>, <<"5">>, 300)),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assert(Elapsed < 2000),
    pyexec_test_util:wait_until(fun() -> rpc(<<"Cancelled">>, <<>>) =:= {ok, <<"1">>} end,
                                server_saw_cancellation).

%% With infinity no grpc-timeout is sent and the call simply runs.
infinity_timeout(_Config) ->
    ?assertEqual({ok, <<"slept">>}, rpc(<<"Sleep">>, <<"0.2">>, infinity)).

caller_death_resets_stream(_Config) ->
    Pid = spawn(fun() -> rpc(<<"Sleep">>, <<"30">>, infinity) end),
    timer:sleep(300),   % let the call reach the server's handler
    exit(Pid, kill),
    pyexec_test_util:wait_until(fun() -> rpc(<<"Cancelled">>, <<>>) =:= {ok, <<"1">>} end,
                                server_saw_rst_stream).

%% A graceful stop sends GOAWAY: the call in flight completes, new calls
%% fail cleanly, and once a server is back on the port the client recovers.
goaway_finishes_inflight_then_reconnects(Config) ->
    #{port := Port} = ?config(srv, Config),
    Parent = self(),
    spawn_link(fun() -> Parent ! {inflight, rpc(<<"Sleep">>, <<"1">>)} end),
    timer:sleep(200),
    ?assertEqual({ok, <<"stopping">>}, rpc(<<"Stop">>, <<"5">>)),
    receive {inflight, R} -> ?assertEqual({ok, <<"slept">>}, R) after 10000 -> error(no_reply) end,
    pyexec_test_util:wait_until(fun() -> is_error(rpc(<<"Echo">>, <<"a">>, 1000)) end, calls_fail),
    {ok, Srv2} = start_py(Config, ["--port", integer_to_list(Port)]),
    try
        pyexec_test_util:wait_until(fun() -> rpc(<<"Echo">>, <<"b">>, 1000) =:= {ok, <<"b">>} end,
                                    recovered)
    after
        pyexec_test_util:stop_server(Srv2, "KILL")
    end.

%% Abrupt death: calls fail fast with UNAVAILABLE while down, then recover.
reconnect_with_backoff(Config) ->
    #{port := Port} = Srv = ?config(srv, Config),
    ?assertEqual({ok, <<"a">>}, rpc(<<"Echo">>, <<"a">>)),
    pyexec_test_util:stop_server(Srv, "KILL"),
    pyexec_test_util:wait_until(
      fun() -> case rpc(<<"Echo">>, <<"a">>, 1000) of
                   {error, {grpc, unavailable, _}} -> true;
                   Other -> Other
               end
      end, unavailable),
    %% Failing fast: no waiting for the deadline.
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({error, {grpc, unavailable, _}}, rpc(<<"Echo">>, <<"a">>, 5000)),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 1000),
    {ok, Srv2} = start_py(Config, ["--port", integer_to_list(Port)]),
    try
        pyexec_test_util:wait_until(fun() -> rpc(<<"Echo">>, <<"b">>, 1000) =:= {ok, <<"b">>} end,
                                    recovered, 5000)
    after
        pyexec_test_util:stop_server(Srv2, "KILL")
    end.

%% PINGs every 200 ms during a 1.5 s call: each must be acknowledged, or
%% the connection would be dropped and the call fail.
keepalive_ping(_Config) ->
    ?assertEqual({ok, <<"slept">>}, rpc(<<"Sleep">>, <<"1.5">>)),
    ?assertEqual({ok, <<"a">>}, rpc(<<"Echo">>, <<"a">>)).

tls_alpn_h2(Config) ->
    Dir = ?config(priv_dir, Config),
    #{server_config := SrvOpts, client_config := CliOpts} =
        public_key:pkix_test_data(#{server_chain => #{root => [{digest, sha256},
                                                               {key, {namedCurve, secp256r1}}],
                                                      peer => [{digest, sha256},
                                                               {key, {namedCurve, secp256r1}},
                                                               {extensions, [san("localhost")]}]},
                                    client_chain => #{root => [{key, {namedCurve, secp256r1}}],
                                                      peer => [{key, {namedCurve, secp256r1}}]}}),
    CertFile = filename:join(Dir, "server.pem"),
    KeyFile = filename:join(Dir, "server.key"),
    Chain = [proplists:get_value(cert, SrvOpts) | proplists:get_value(cacerts, SrvOpts)],
    ok = file:write_file(CertFile, public_key:pem_encode([{'Certificate', C, not_encrypted} || C <- Chain])),
    {KeyType, KeyDer} = proplists:get_value(key, SrvOpts),
    ok = file:write_file(KeyFile, public_key:pem_encode([{KeyType, KeyDer, not_encrypted}])),
    {ok, Srv} = start_py(Config, ["--cert", CertFile, "--key", KeyFile]),
    try
        ok = pyexec_test_util:start_app(
               [{endpoints, [{"localhost", maps:get(port, Srv)}]},
                {tls, [{verify, verify_peer},
                       {cacerts, proplists:get_value(cacerts, CliOpts)},
                       {server_name_indication, "localhost"}]}]),
        ?assertEqual({ok, <<"secure">>}, rpc(<<"Echo">>, <<"secure">>)),
        Big = crypto:strong_rand_bytes(3 * 1024 * 1024),
        ?assertEqual({ok, Big}, rpc(<<"Echo">>, Big, 30000))
    after
        pyexec_test_util:stop_server(Srv, "KILL")
    end.

%% The configured metadata (a bearer token) reaches the server on every
%% call, on every connection.
bearer_metadata_on_every_call(_Config) ->
    [begin
         {ok, Lines} = rpc(<<"Metadata">>, <<>>),
         ?assert(lists:member(<<"authorization=Bearer s3cr3t">>, binary:split(Lines, <<"\n">>, [global])))
     end || _ <- lists:seq(1, 6)].

%% Mutual TLS: the server requires a client certificate from our CA; the
%% client presents one (ssl options `cert'/`key' here; `certfile'/`keyfile'
%% work the same) and sends its bearer token. Without the client
%% certificate the server refuses the connection.
mtls_with_bearer(Config) ->
    Dir = ?config(priv_dir, Config),
    #{server_config := SrvOpts, client_config := CliOpts} =
        public_key:pkix_test_data(#{server_chain => #{root => [{digest, sha256}, {key, {namedCurve, secp256r1}}],
                                                      peer => [{digest, sha256}, {key, {namedCurve, secp256r1}},
                                                               {extensions, [san("localhost")]}]},
                                    client_chain => #{root => [{digest, sha256}, {key, {namedCurve, secp256r1}}],
                                                      peer => [{digest, sha256}, {key, {namedCurve, secp256r1}}]}}),
    Pem = fun(Name, Entries) ->
                  F = filename:join(Dir, Name),
                  ok = file:write_file(F, public_key:pem_encode(Entries)),
                  F
          end,
    Certs = fun(L) -> [{'Certificate', C, not_encrypted} || C <- L] end,
    %% server_config's cacerts verify clients, client_config's verify the server.
    CertFile = Pem("m_server.pem", Certs([proplists:get_value(cert, SrvOpts)])),
    {KeyType, KeyDer} = proplists:get_value(key, SrvOpts),
    KeyFile = Pem("m_server.key", [{KeyType, KeyDer, not_encrypted}]),
    CaFile = Pem("m_client_ca.pem", Certs(proplists:get_value(cacerts, SrvOpts))),
    {ok, Srv} = start_py(Config, ["--cert", CertFile, "--key", KeyFile, "--client_ca", CaFile]),
    Tls = [{verify, verify_peer}, {cacerts, proplists:get_value(cacerts, CliOpts)},
           {server_name_indication, "localhost"}],
    Endpoint = {endpoints, [{"localhost", maps:get(port, Srv)}]},
    try
        ok = pyexec_test_util:start_app([Endpoint, {connect_timeout, 2000},
                                         {tls, [{cert, proplists:get_value(cert, CliOpts)},
                                                {key, proplists:get_value(key, CliOpts)} | Tls]},
                                         {metadata, [{<<"authorization">>, <<"Bearer mtls-t0k">>}]}]),
        {ok, Lines} = rpc(<<"Metadata">>, <<>>),
        ?assert(lists:member(<<"authorization=Bearer mtls-t0k">>, binary:split(Lines, <<"\n">>, [global]))),
        ok = pyexec_test_util:start_app([Endpoint, {connect_timeout, 2000}, {tls, Tls},
                                         {reconnect_backoff_min, 50}]),
        ?assertMatch({error, {grpc, unavailable, _}}, rpc(<<"Echo">>, <<"no cert">>, 2000))
    after
        pyexec_test_util:stop_server(Srv, "KILL")
    end.

san(Host) ->
    {'Extension', {2, 5, 29, 17}, false, [{dNSName, Host}]}.

is_error({error, _}) -> true;
is_error(Other) -> Other.
