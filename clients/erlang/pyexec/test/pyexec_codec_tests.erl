%% Protobuf codec tests: Value mapping round trips, wire-format details that
%% other implementations depend on, and edge cases.
-module(pyexec_codec_tests).
-include_lib("eunit/include/eunit.hrl").

rt(T) -> pyexec_value:decode(iolist_to_binary(pyexec_value:encode(T)), tagged).

round_trip_test_() ->
    Same = [0, 1, -1, 42, -42, 16#7fffffffffffffff, -16#8000000000000000,
            16#8000000000000000, -16#8000000000000001, 1 bsl 200, -(1 bsl 200),
            1.5, -0.0, 0.0, 1.0e308, 5.0e-324,
            true, false, none, nan, infinity, neg_infinity,
            <<>>, <<"hello">>, <<"héllo ☃"/utf8>>,
            {bytes, <<>>}, {bytes, <<0, 255, 1>>},
            [], [1, 2, 3], [[[[]]]], {}, {1, <<"a">>}, {set, [1, 2]}, {set, []},
            #{}, #{<<"k">> => 1}, #{1 => <<"one">>, {1, 2} => [3], none => true},
            #{<<"nested">> => [#{<<"deep">> => {1, [2, {set, [3]}]}}]}],
    [?_assertEqual(T, rt(T)) || T <- Same].

erlang_only_terms_test_() ->
    [?_assertEqual(none, rt(nil)),
     ?_assertEqual(none, rt(undefined)),
     ?_assertEqual(<<"hello">>, rt(hello)),
     ?_assertEqual(<<"ok">>, rt(ok)),
     ?_assertEqual([104, 105], rt("hi")),          % charlists stay lists
     ?_assertEqual(#{<<"a">> => 1}, rt(#{a => 1}))].

bad_values_test_() ->
    [?_assertThrow({pyexec_bad_value, _}, pyexec_value:encode(self())),
     ?_assertThrow({pyexec_bad_value, _}, pyexec_value:encode(make_ref())),
     ?_assertThrow({pyexec_bad_value, _}, pyexec_value:encode(fun() -> ok end)),
     ?_assertThrow({pyexec_bad_value, _}, pyexec_value:encode([1 | 2])),
     ?_assertThrow({pyexec_bad_value, <<255>>}, pyexec_value:encode(<<255>>)),
     ?_assertThrow({pyexec_bad_value, _}, pyexec_value:encode([ok, {a, self()}]))].

%% The bytes on the wire are what the C++ server parses: check them against
%% hand-computed protobuf encodings.
wire_format_test_() ->
    E = fun(T) -> iolist_to_binary(pyexec_value:encode(T)) end,
    [?_assertEqual(<<16#0a, 0>>, E(none)),
     ?_assertEqual(<<16#10, 1>>, E(true)),
     ?_assertEqual(<<16#10, 0>>, E(false)),             % oneof: written even when default
     ?_assertEqual(<<16#18, 0>>, E(0)),
     ?_assertEqual(<<16#18, 1>>, E(-1)),                % zigzag
     ?_assertEqual(<<16#18, 2>>, E(1)),
     ?_assertEqual(<<16#18, 16#fe, 16#ff, 16#ff, 16#ff, 16#ff, 16#ff, 16#ff, 16#ff, 16#ff, 1>>,
                   E(16#7fffffffffffffff)),
     ?_assertEqual(<<16#22, 19, "9223372036854775808">>, E(16#8000000000000000)),
     ?_assertEqual(<<16#29, 0, 0, 0, 0, 0, 0, 16#f8, 16#3f>>, E(1.5)),
     ?_assertEqual(<<16#32, 2, "hi">>, E(<<"hi">>)),
     ?_assertEqual(<<16#3a, 1, 7>>, E({bytes, <<7>>})),
     ?_assertEqual(<<16#40, 1, 16#6a, 2, 16#18, 2>>, E([1])),
     ?_assertEqual(<<16#48, 1>>, E({})),
     ?_assertEqual(<<16#58, 1, 16#6a, 2, 16#10, 1>>, E({set, [true]})),
     ?_assertEqual(<<16#50, 1, 16#72, 4, 16#32, 2, "k1", 16#6a, 2, 16#18, 4>>, E(#{<<"k1">> => 2}))].

decode_tolerance_test_() ->
    D = fun(B) -> pyexec_value:decode(B, tagged) end,
    [%% A dict whose items come before its keys (C++ serialises by field number).
     ?_assertEqual(#{<<"k">> => 2}, D(<<16#50, 1, 16#6a, 2, 16#18, 4, 16#72, 3, 16#32, 1, "k">>)),
     %% Unknown fields are skipped.
     ?_assertEqual(5, D(<<16#18, 10, 16#f8, 16#07, 1>>)),
     %% An empty Value is None.
     ?_assertEqual(none, D(<<>>)),
     %% Opaque.
     ?_assertEqual({opaque, <<"datetime.date">>, <<"datetime.date(2024, 1, 2)">>},
                   D(<<16#62, 42, 16#0a, 13, "datetime.date", 16#12, 25, "datetime.date(2024, 1, 2)">>)),
     %% NaN payloads other than the canonical one are still nan.
     ?_assertEqual(nan, D(<<16#29, 1, 0, 0, 0, 0, 0, 16#f0, 16#7f>>)),
     ?_assertEqual(nan, D(<<16#29, 0, 0, 0, 0, 0, 0, 16#f8, 16#ff>>)),
     %% bytes as bare binaries (erlang_python's shape, the default), or
     %% tagged when configured.
     ?_assertEqual(<<7>>, pyexec_value:decode(<<16#3a, 1, 7>>, binary)),
     ?_assertEqual(<<7>>, pyexec_value:decode(<<16#3a, 1, 7>>)),
     ?_assertEqual({bytes, <<7>>}, pyexec_value:decode(<<16#3a, 1, 7>>, tagged)),
     ?_assertError({pyexec_pb, bad_message}, D(<<16#32, 5, "ab">>))].

messages_test_() ->
    Msgs = [{bind_request, #{idle_timeout_seconds => 60, restore => <<>>}},
            {bind_request, #{idle_timeout_seconds => 0, restore => <<0, 255, "blob">>}},
            {bind_response, #{session => <<"tok">>, idle_timeout_seconds => 60,
                              owner => <<"10.0.0.8:50051">>, restore_lost => []}},
            {bind_response, #{session => <<"tok">>, idle_timeout_seconds => 0, owner => <<>>,
                              restore_lost => [#{name => <<"s">>, type => <<"socket.socket">>,
                                                 reason => <<"cannot pickle">>},
                                               #{name => <<"ref 01">>, type => <<>>,
                                                 reason => <<>>}],
                              restore_error => #{type => <<"E">>, message => <<"m">>,
                                                 traceback => <<>>}}},
            {snapshot_request, #{session => <<"s">>}},
            {snapshot_response, #{blob => <<1, 2, 3>>, lost => [], modules => [<<"math">>],
                                  refs => 2}},
            {attach_request, #{session => <<"s">>}},
            {attach_event, #{attached => #{grace_seconds => 5}}},
            {attach_event, #{ended => #{reason => <<"unbound">>}}},
            {run_request, #{eval => #{session => <<"s">>, code => <<"f()">>, locals => #{},
                                      result_as_ref => false}}},
            {run_request, #{exec => #{session => <<>>, code => <<"pass">>, locals => #{}}}},
            {run_request, #{call => #{session => <<>>, module => <<"m">>, function => <<"f">>,
                                      args => [1], kwargs => #{}, result_as_ref => false,
                                      target_ref => <<>>, get_attribute => false}}},
            {run_request, #{callback_result => #{id => <<"c1">>, value => none}}},
            {run_request, #{callback_result => #{id => <<"c1">>, value => [1, {set, [2]}]}}},
            {run_request, #{callback_result => #{id => <<"c2">>,
                                                 error => #{type => <<"LookupError">>,
                                                            message => <<"no f">>,
                                                            traceback => <<>>}}}},
            {run_event, #{callback => #{id => <<"c1">>, name => <<"f">>, args => [1, <<"a">>],
                                        kwargs => #{<<"k">> => 2.5}}}},
            {run_event, #{eval => #{value => 3, stdout => <<>>, stderr => <<>>}}},
            {run_event, #{exec => #{stdout => <<"o">>, stderr => <<>>}}},
            {run_event, #{call => #{value => none, stdout => <<>>, stderr => <<>>}}},
            {unbind_request, #{session => <<"tok">>}},
            {unbind_response, #{}},
            {eval_request, #{session => <<"s">>, code => <<"x + 1">>,
                             locals => #{<<"x">> => 41, <<"y">> => [none, {set, [1]}]},
                             result_as_ref => false}},
            {eval_request, #{session => <<"s">>, code => <<"x">>, locals => #{},
                             result_as_ref => true}},
            {exec_request, #{session => <<>>, code => <<"pass">>, locals => #{}}},
            {call_request, #{session => <<>>, module => <<"math">>, function => <<"sqrt">>,
                             args => [16, <<"a">>, #{1 => 2}], kwargs => #{<<"k">> => true},
                             result_as_ref => false, target_ref => <<>>, get_attribute => false}},
            {call_request, #{session => <<"s">>, module => <<>>, function => <<"w.x">>,
                             args => [], kwargs => #{}, result_as_ref => true,
                             target_ref => <<"0123456789abcdef01234567">>,
                             get_attribute => true}},
            {exec_event, #{stdout => <<"line\n">>, stderr => <<>>}},
            {exec_event, #{stdout => <<>>, stderr => <<>>, 'end' => #{}}},
            {exec_event, #{stdout => <<>>, stderr => <<>>,
                           'end' => #{error => #{type => <<"E">>, message => <<"m">>,
                                                 traceback => <<"t">>}}}},
            {call_event, #{stdout => <<>>, stderr => <<"e">>}},
            {call_event, #{stdout => <<>>, stderr => <<>>, value => none}},
            {call_event, #{stdout => <<>>, stderr => <<>>, value => [1, {py_ref, undefined,
                                                                      <<"id">>, <<>>, <<>>}]}},
            {release_request, #{session => <<"s">>, ref_ids => [<<"a">>, <<"b">>, <<"c">>]}},
            {release_request, #{session => <<"s">>, ref_ids => []}},
            {release_response, #{released => 2}},
            {interrupt_request, #{session => <<"s">>, call_id => <<>>}},
            {interrupt_request, #{session => <<"s">>, call_id => <<"c-17">>}},
            {interrupt_response, #{interrupted => true}},
            {interrupt_response, #{interrupted => false}},
            {eval_response, #{value => [1, 2], stdout => <<"out">>, stderr => <<>>}},
            {eval_response, #{error => #{type => <<"ZeroDivisionError">>,
                                         message => <<"division by zero">>,
                                         traceback => <<"Traceback...">>},
                              stdout => <<>>, stderr => <<"err">>}},
            {exec_response, #{stdout => <<>>, stderr => <<>>}},
            {call_response, #{value => none, stdout => <<>>, stderr => <<>>}},
            {get_stats_request, #{}},
            {get_stats_response, #{num_workers => 4, available_workers => 2, checked_out => 2,
                                   pending_requests => 0, max_workers => 8, starting_workers => 1,
                                   busy_workers => 3, workers_spawned => 1 bsl 40,
                                   workers_died => 0, calls_total => 12345, sessions => 2,
                                   replica => <<"10.0.0.7:50051">>, bindable_workers => 6}}],
    [?_assertEqual(M, pyexec_pb:decode_msg(T, iolist_to_binary(pyexec_pb:encode_msg(T, M))))
     || {T, M} <- Msgs].

message_defaults_test() ->
    ?assertEqual(#{session => <<>>, idle_timeout_seconds => 0, owner => <<>>, restore_lost => []},
                 pyexec_pb:decode_msg(bind_response, <<>>)),
    %% An empty oneof message is still sent (its presence is the choice).
    ?assertEqual(<<16#12, 0>>, iolist_to_binary(pyexec_pb:encode_msg(run_request, #{exec => #{}}))),
    %% An unset `value' stays unset, distinct from None.
    ?assertEqual(#{stdout => <<>>, stderr => <<>>}, pyexec_pb:decode_msg(eval_response, <<>>)),
    ?assertEqual(<<>>, iolist_to_binary(pyexec_pb:encode_msg(bind_request, #{}))),
    ?assertEqual(<<>>, iolist_to_binary(pyexec_pb:encode_msg(exec_request, #{session => <<>>}))).

map_keys_test() ->
    Bin = iolist_to_binary(pyexec_pb:encode_msg(eval_request, #{code => <<"a">>,
                                                                locals => #{a => 1, "b" => 2, <<"c">> => 3}})),
    #{locals := L} = pyexec_pb:decode_msg(eval_request, Bin),
    ?assertEqual(#{<<"a">> => 1, <<"b">> => 2, <<"c">> => 3}, L),
    ?assertThrow({pyexec_bad_value, 1}, pyexec_pb:encode_msg(eval_request, #{locals => #{1 => 2}})).

varint_test_() ->
    [?_assertEqual({1, N, <<>>}, pyexec_pb:read_field(<<8, (pyexec_pb:varint(N))/binary>>))
     || N <- [0, 1, 127, 128, 300, 16#ffffffff, 16#ffffffffffffffff]].

percent_decode_test_() ->
    P = fun pyexec_grpc:percent_decode/1,
    [?_assertEqual(<<"no_workers_available">>, P(<<"no_workers_available">>)),
     ?_assertEqual(<<"a b%">>, P(<<"a%20b%25">>)),
     ?_assertEqual(<<"☃"/utf8>>, P(<<"%E2%98%83">>)),
     ?_assertEqual(<<"100%zz">>, P(<<"100%zz">>)),
     ?_assertEqual(<<"%">>, P(<<"%">>))].

decode_status_test_() ->
    S = fun pyexec_grpc:decode_status/2,
    H = [{<<":status">>, <<"200">>}],
    [?_assertEqual(ok, S(H, [{<<"grpc-status">>, <<"0">>}])),
     ?_assertEqual({error, {grpc, not_found, <<"unknown session">>}},
                   S(H, [{<<"grpc-status">>, <<"5">>}, {<<"grpc-message">>, <<"unknown%20session">>}])),
     ?_assertEqual({error, {grpc, resource_exhausted, <<>>}}, S(H, [{<<"grpc-status">>, <<"8">>}])),
     ?_assertMatch({error, {grpc, unavailable, _}}, S([{<<":status">>, <<"503">>}], [])),
     ?_assertMatch({error, {grpc, unimplemented, _}}, S([{<<":status">>, <<"404">>}], [])),
     ?_assertMatch({error, {grpc, internal, _}}, S(H, []))].

frame_test_() ->
    F = fun(Io) -> iolist_to_binary(Io) end,
    Block = binary:copy(<<"x">>, 40000),
    Frames = F(pyexec_h2_frame:headers(1, Block, false, 16384)),
    {ok, {1, 0, 1, P1}, R1} = pyexec_h2_frame:parse(Frames, 16384),
    {ok, {9, 0, 1, P2}, R2} = pyexec_h2_frame:parse(R1, 16384),
    {ok, {9, 4, 1, P3}, <<>>} = pyexec_h2_frame:parse(R2, 16384),
    [?_assertEqual(Block, <<P1/binary, P2/binary, P3/binary>>),
     ?_assertEqual(more, pyexec_h2_frame:parse(<<0, 0, 5, 0, 0, 0, 0, 0, 1, "ab">>, 16384)),
     ?_assertEqual({error, frame_size_error},
                   pyexec_h2_frame:parse(<<0, 64, 1, 0, 0, 0, 0, 0, 1>>, 16384)),
     ?_assertEqual({ok, <<"abc">>}, pyexec_h2_frame:strip_padding(8, <<2, "abc", 0, 0>>)),
     ?_assertEqual({error, protocol_error}, pyexec_h2_frame:strip_padding(8, <<9, "abc">>)),
     ?_assertEqual({ok, [{4, 65535}, {3, 100}]},
                   pyexec_h2_frame:parse_settings(<<0, 4, 0, 0, 255, 255, 0, 3, 0, 0, 0, 100>>))].

%% WINDOW_UPDATE carries 31 bits: an increment outside 1..2^31-1 must be
%% refused, never silently truncated.
window_update_test_() ->
    F = fun(Io) -> iolist_to_binary(Io) end,
    [?_assertEqual(<<0, 0, 4, 8, 0, 0, 0, 0, 3, 16#7f, 16#ff, 16#ff, 16#ff>>,
                   F(pyexec_h2_frame:window_update(3, 16#7fffffff))),
     ?_assertError(_, pyexec_h2_frame:window_update(0, 16#80000000)),
     ?_assertError(_, pyexec_h2_frame:window_update(0, 0))].

%% Value.ref: only the id goes to the server (field 15, a Ref message with
%% field 1); a ref from the server decodes with its type and repr and no
%% session yet, which py stamps in (attach_session/2).
ref_wire_test_() ->
    Ref = {py_ref, <<"session-token">>, <<"0123456789abcdef01234567">>, <<"m.T">>, <<"<T>">>},
    Enc = iolist_to_binary(pyexec_value:encode(Ref)),
    FromServer = <<16#7a, 36, 16#0a, 24, "0123456789abcdef01234567", 16#12, 3, "m.T",
                   16#1a, 3, "<T>">>,
    [?_assertEqual(<<16#7a, 26, 16#0a, 24, "0123456789abcdef01234567">>, Enc),
     ?_assertEqual({py_ref, undefined, <<"0123456789abcdef01234567">>, <<"m.T">>, <<"<T>">>},
                   pyexec_value:decode(FromServer, binary)),
     %% Nested, in any container, and as a dict key.
     ?_assertEqual([1, {py_ref, undefined, <<"0123456789abcdef01234567">>, <<>>, <<>>}],
                   rt([1, Ref])),
     ?_assert(pyexec_value:is_ref(Ref)),
     ?_assertNot(pyexec_value:is_ref({py_ref, 1, 2, 3, 4})),
     ?_assertNot(pyexec_value:is_ref({opaque, <<"t">>, <<"r">>}))].

attach_session_test_() ->
    R = {py_ref, undefined, <<"i">>, <<"t">>, <<"r">>},
    S = {py_ref, <<"s">>, <<"i">>, <<"t">>, <<"r">>},
    Plain = [1, {2, #{3 => <<"x">>}}, {set, [4]}, {opaque, <<"t">>, <<"r">>}],
    [?_assertEqual(S, pyexec_value:attach_session(R, <<"s">>)),
     ?_assertEqual([1, {S, #{S => [S]}}, {set, [S]}],
                   pyexec_value:attach_session([1, {R, #{R => [R]}}, {set, [R]}], <<"s">>)),
     %% Without refs the very same term comes back (no copy).
     ?_assert(erts_debug:same(Plain, pyexec_value:attach_session(Plain, <<"s">>)))].

%% Field names that are Erlang reserved words are quoted atoms.
reserved_field_test() ->
    ?assertEqual([{1, error, {message, python_error}}], pyexec_pb:schema(stream_end)),
    ?assertMatch([_, _, {4, 'end', {message, stream_end}}], pyexec_pb:schema(exec_event)).
