%% HPACK and Huffman tests. The byte strings are RFC 7541 Appendix C
%% (C.2 to C.6); each sequence is checked in both directions: our decoder
%% must produce the header lists and dynamic tables of the RFC, and our
%% encoder, with the same table size and Huffman choice, must produce the
%% RFC's exact bytes.
-module(pyexec_hpack_tests).
-include_lib("eunit/include/eunit.hrl").

hex(S) ->
    Clean = [C || C <- S, C =/= $\s, C =/= $\n],
    binary:decode_hex(list_to_binary(Clean)).

h(N, V) -> {list_to_binary(N), list_to_binary(V)}.

%%--------------------------------------------------------------------
%% C.2: single representations
%%--------------------------------------------------------------------

c2_1_literal_with_indexing_test() ->
    Bin = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    {ok, Hs, D} = pyexec_hpack:decode(Bin, pyexec_hpack:new_decoder()),
    ?assertEqual([h("custom-key", "custom-header")], Hs),
    ?assertEqual([h("custom-key", "custom-header")], pyexec_hpack:table(D)),
    ?assertEqual(55, pyexec_hpack:table_size(D)),
    {Enc, E} = pyexec_hpack:encode(Hs, pyexec_hpack:new_encoder(#{huffman => never})),
    ?assertEqual(Bin, iolist_to_binary(Enc)),
    ?assertEqual(55, pyexec_hpack:table_size(E)).

c2_2_literal_without_indexing_test() ->
    Bin = hex("040c 2f73 616d 706c 652f 7061 7468"),
    {ok, Hs, D} = pyexec_hpack:decode(Bin, pyexec_hpack:new_decoder()),
    ?assertEqual([h(":path", "/sample/path")], Hs),
    ?assertEqual([], pyexec_hpack:table(D)),
    {Enc, E} = pyexec_hpack:encode([{<<":path">>, <<"/sample/path">>, no_index}],
                                   pyexec_hpack:new_encoder(#{huffman => never})),
    ?assertEqual(Bin, iolist_to_binary(Enc)),
    ?assertEqual([], pyexec_hpack:table(E)).

c2_3_literal_never_indexed_test() ->
    Bin = hex("1008 7061 7373 776f 7264 0673 6563 7265 74"),
    {ok, Hs, D} = pyexec_hpack:decode(Bin, pyexec_hpack:new_decoder()),
    ?assertEqual([h("password", "secret")], Hs),
    ?assertEqual([], pyexec_hpack:table(D)),
    {Enc, _} = pyexec_hpack:encode([{<<"password">>, <<"secret">>, never_index}],
                                   pyexec_hpack:new_encoder(#{huffman => never})),
    ?assertEqual(Bin, iolist_to_binary(Enc)).

c2_4_indexed_test() ->
    {ok, Hs, D} = pyexec_hpack:decode(hex("82"), pyexec_hpack:new_decoder()),
    ?assertEqual([h(":method", "GET")], Hs),
    ?assertEqual([], pyexec_hpack:table(D)),
    {Enc, _} = pyexec_hpack:encode(Hs, pyexec_hpack:new_encoder()),
    ?assertEqual(hex("82"), iolist_to_binary(Enc)).

%%--------------------------------------------------------------------
%% C.3 / C.4: requests, 4096-octet table
%%--------------------------------------------------------------------

requests() ->
    R1 = [h(":method", "GET"), h(":scheme", "http"), h(":path", "/"),
          h(":authority", "www.example.com")],
    R2 = R1 ++ [h("cache-control", "no-cache")],
    R3 = [h(":method", "GET"), h(":scheme", "https"), h(":path", "/index.html"),
          h(":authority", "www.example.com"), h("custom-key", "custom-value")],
    T1 = [h(":authority", "www.example.com")],
    T2 = [h("cache-control", "no-cache") | T1],
    T3 = [h("custom-key", "custom-value") | T2],
    [{R1, T1, 57}, {R2, T2, 110}, {R3, T3, 164}].

c3_requests_without_huffman_test() ->
    Blocks = [hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
              hex("8286 84be 5808 6e6f 2d63 6163 6865"),
              hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")],
    run_sequence(Blocks, requests(), 4096, never).

c4_requests_with_huffman_test() ->
    Blocks = [hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
              hex("8286 84be 5886 a8eb 1064 9cbf"),
              hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")],
    run_sequence(Blocks, requests(), 4096, auto).

%%--------------------------------------------------------------------
%% C.5 / C.6: responses, 256-octet table, with eviction
%%--------------------------------------------------------------------

responses() ->
    Date1 = "Mon, 21 Oct 2013 20:13:21 GMT",
    Date2 = "Mon, 21 Oct 2013 20:13:22 GMT",
    Cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    R1 = [h(":status", "302"), h("cache-control", "private"), h("date", Date1),
          h("location", "https://www.example.com")],
    R2 = [h(":status", "307"), h("cache-control", "private"), h("date", Date1),
          h("location", "https://www.example.com")],
    R3 = [h(":status", "200"), h("cache-control", "private"), h("date", Date2),
          h("location", "https://www.example.com"), h("content-encoding", "gzip"),
          h("set-cookie", Cookie)],
    T1 = [h("location", "https://www.example.com"), h("date", Date1),
          h("cache-control", "private"), h(":status", "302")],
    T2 = [h(":status", "307"), h("location", "https://www.example.com"),
          h("date", Date1), h("cache-control", "private")],
    T3 = [h("set-cookie", Cookie), h("content-encoding", "gzip"), h("date", Date2)],
    [{R1, T1, 222}, {R2, T2, 222}, {R3, T3, 215}].

c5_responses_without_huffman_test() ->
    Blocks = [hex("4803 3330 3258 0770 7269 7661 7465 611d
                   4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                   2032 303a 3133 3a32 3120 474d 546e 1768
                   7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                   6c65 2e63 6f6d"),
              hex("4803 3330 37c1 c0bf"),
              hex("88c1 611d 4d6f 6e2c 2032 3120 4f63 7420
                   3230 3133 2032 303a 3133 3a32 3220 474d
                   54c0 5a04 677a 6970 7738 666f 6f3d 4153
                   444a 4b48 514b 425a 584f 5157 454f 5049
                   5541 5851 5745 4f49 553b 206d 6178 2d61
                   6765 3d33 3630 303b 2076 6572 7369 6f6e
                   3d31")],
    run_sequence(Blocks, responses(), 256, never).

c6_responses_with_huffman_test() ->
    Blocks = [hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe
                   9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                   2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8
                   e9ae 82ae 43d3"),
              hex("4883 640e ffc1 c0bf"),
              hex("88c1 6196 d07a be94 1054 d444 a820 0595
                   040b 8166 e084 a62d 1bff c05a 839b d9ab
                   77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b
                   3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                   9587 3160 65c0 03ed 4ee5 b106 3d50 07")],
    run_sequence(Blocks, responses(), 256, auto).

run_sequence(Blocks, Expected, TableSize, Huffman) ->
    D0 = pyexec_hpack:new_decoder(TableSize),
    E0 = pyexec_hpack:new_encoder(#{huffman => Huffman, max_size => TableSize}),
    lists:foldl(
      fun({Block, {Headers, Table, Size}}, {D, E}) ->
              {ok, Got, D1} = pyexec_hpack:decode(Block, D),
              ?assertEqual(Headers, Got),
              ?assertEqual(Table, pyexec_hpack:table(D1)),
              ?assertEqual(Size, pyexec_hpack:table_size(D1)),
              {Enc, E1} = pyexec_hpack:encode(Headers, E),
              ?assertEqual(Block, iolist_to_binary(Enc)),
              ?assertEqual(Table, pyexec_hpack:table(E1)),
              {D1, E1}
      end, {D0, E0}, lists:zip(Blocks, Expected)),
    ok.

%%--------------------------------------------------------------------
%% Huffman
%%--------------------------------------------------------------------

huffman_rfc_strings_test_() ->
    Cases = [{"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"},
             {"no-cache", "a8eb 1064 9cbf"},
             {"custom-key", "25a8 49e9 5ba9 7d7f"},
             {"custom-value", "25a8 49e9 5bb8 e8b4 bf"},
             {"302", "6402"},
             {"private", "aec3 771a 4b"},
             {"Mon, 21 Oct 2013 20:13:21 GMT",
              "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"},
             {"https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"},
             {"gzip", "9bd9 ab"}],
    [?_assertEqual(hex(H), pyexec_huffman:encode(list_to_binary(S))) || {S, H} <- Cases] ++
    [?_assertEqual({ok, list_to_binary(S)}, pyexec_huffman:decode(hex(H))) || {S, H} <- Cases].

%% The table must be a complete prefix code over 257 symbols: Kraft sum of
%% exactly 1 and no code a prefix of another. A typo in one entry breaks this.
huffman_table_is_complete_prefix_code_test() ->
    Codes = tuple_to_list(pyexec_huffman:codes()),
    ?assertEqual(257, length(Codes)),
    Max = 30,
    ?assertEqual(1 bsl Max, lists:sum([1 bsl (Max - L) || {_, L} <- Codes])),
    Expanded = lists:sort([{C bsl (Max - L), L} || {C, L} <- Codes]),
    ?assertEqual(257, length(lists:usort([C || {C, _} <- Expanded]))).

huffman_round_trip_all_octets_test() ->
    All = list_to_binary(lists:seq(0, 255)),
    ?assertEqual({ok, All}, pyexec_huffman:decode(pyexec_huffman:encode(All))),
    Rand = crypto:strong_rand_bytes(2000),
    ?assertEqual({ok, Rand}, pyexec_huffman:decode(pyexec_huffman:encode(Rand))),
    ?assertEqual(byte_size(pyexec_huffman:encode(Rand)), pyexec_huffman:encoded_size(Rand)).

huffman_rejects_bad_padding_test() ->
    %% "a" is 00011 padded with 111 (16#1f). A zero bit in the padding, or
    %% padding of 8 bits or more, is a decoding error (RFC 7541 section 5.2).
    ?assertEqual({ok, <<"a">>}, pyexec_huffman:decode(<<16#1f>>)),
    ?assertEqual({error, huffman}, pyexec_huffman:decode(<<16#1e>>)),
    ?assertEqual({error, huffman}, pyexec_huffman:decode(<<16#1f, 16#ff>>)),
    %% EOS (30 ones) inside the string.
    ?assertEqual({error, huffman}, pyexec_huffman:decode(<<16#ff, 16#ff, 16#ff, 16#ff>>)).

%%--------------------------------------------------------------------
%% Edge cases
%%--------------------------------------------------------------------

integer_boundaries_test() ->
    %% 1337 with a 5-bit prefix is the RFC's C.1.2 example.
    Hs = [{<<"x-", (binary:copy(<<"a">>, N))/binary>>, binary:copy(<<"v">>, N)}
          || N <- [0, 1, 29, 30, 31, 126, 127, 128, 300, 1337, 20000]],
    {Enc, _} = pyexec_hpack:encode(Hs, pyexec_hpack:new_encoder(#{huffman => never})),
    {ok, Got, _} = pyexec_hpack:decode(iolist_to_binary(Enc), pyexec_hpack:new_decoder()),
    ?assertEqual(Hs, Got).

size_update_test() ->
    E0 = pyexec_hpack:new_encoder(),
    {_, E1} = pyexec_hpack:encode([{<<"a">>, <<"b">>}], E0),
    E2 = pyexec_hpack:set_encoder_max_size(0, E1),
    ?assertEqual([], pyexec_hpack:table(E2)),
    {Enc, E3} = pyexec_hpack:encode([{<<"a">>, <<"b">>}], E2),
    <<2#001:3, 0:5, _/binary>> = Bin = iolist_to_binary(Enc),
    ?assertEqual([], pyexec_hpack:table(E3)),
    {ok, [{<<"a">>, <<"b">>}], D} = pyexec_hpack:decode(Bin, pyexec_hpack:new_decoder()),
    ?assertEqual([], pyexec_hpack:table(D)).

decoder_errors_test_() ->
    D = pyexec_hpack:new_decoder(),
    [?_assertMatch({error, _}, pyexec_hpack:decode(<<16#80>>, D)),          % index 0
     ?_assertMatch({error, _}, pyexec_hpack:decode(<<16#ff, 16#00>>, D)),   % index 127, empty table
     ?_assertMatch({error, _}, pyexec_hpack:decode(<<16#40, 16#05, "ab">>, D)), % truncated
     ?_assertMatch({error, _}, pyexec_hpack:decode(<<16#3f, 16#e2, 16#1f>>, D)), % update past limit
     ?_assertMatch({error, _}, pyexec_hpack:decode(<<16#82, 16#20>>, D)),   % late size update
     ?_assertMatch({error, _}, pyexec_hpack:decode(<<16#ff, 16#ff, 16#ff, 16#ff, 16#ff, 16#ff>>, D))].

eviction_of_oversized_entry_test() ->
    E = pyexec_hpack:new_encoder(#{max_size => 64}),
    {_, E1} = pyexec_hpack:encode([{<<"a">>, <<"b">>}], E),
    ?assertEqual(34, pyexec_hpack:table_size(E1)),
    {_, E2} = pyexec_hpack:encode([{<<"big">>, binary:copy(<<"x">>, 100)}], E1),
    ?assertEqual([], pyexec_hpack:table(E2)).
