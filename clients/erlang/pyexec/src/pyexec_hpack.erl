%% @doc HPACK header compression (RFC 7541): integer and string primitives,
%% static and dynamic tables, Huffman strings, dynamic table size updates.
%%
%% An encoder and a decoder are separate values because HTTP/2 keeps one
%% compression context per direction. Both are plain data: the connection
%% process threads them through its state, so no locking is involved.
-module(pyexec_hpack).

-export([new_encoder/0, new_encoder/1, new_decoder/0, new_decoder/1,
         encode/2, decode/2,
         set_encoder_max_size/2, set_decoder_limit/2,
         table/1, table_size/1]).

-export_type([encoder/0, decoder/0, header/0]).

-type header() :: {binary(), binary()}.
%% Per-header options in an encode list: `no_index` keeps a value that changes
%% on every request (grpc-timeout) out of the dynamic table.
-type header_in() :: header() | {binary(), binary(), no_index | never_index}.

-record(table, {entries = [] :: [header()],   % most recent first
                size = 0 :: non_neg_integer(), % RFC size: sum of len+32
                max = 4096 :: non_neg_integer()}).

-record(encoder, {table = #table{} :: #table{},
                  huffman = auto :: auto | always | never,
                  %% Size update owed to the peer at the start of the next
                  %% header block (after its SETTINGS_HEADER_TABLE_SIZE changed).
                  pending_update = undefined :: undefined | non_neg_integer()}).

-record(decoder, {table = #table{} :: #table{},
                  %% Our SETTINGS_HEADER_TABLE_SIZE: the most the peer may use.
                  limit = 4096 :: non_neg_integer()}).

-opaque encoder() :: #encoder{}.
-opaque decoder() :: #decoder{}.

-define(ENTRY_OVERHEAD, 32).
%% A header list larger than this is refused rather than buffered without end.
-define(MAX_STRING, 16#1000000).

%%====================================================================
%% Construction
%%====================================================================

-spec new_encoder() -> encoder().
new_encoder() -> new_encoder(#{}).

%% @doc Options: `huffman => auto | always | never' (auto picks the shorter
%% form, preferring Huffman on a tie), `max_size => Octets'.
-spec new_encoder(map()) -> encoder().
new_encoder(Opts) ->
    #encoder{huffman = maps:get(huffman, Opts, auto),
             table = #table{max = maps:get(max_size, Opts, 4096)}}.

-spec new_decoder() -> decoder().
new_decoder() -> new_decoder(4096).

-spec new_decoder(non_neg_integer()) -> decoder().
new_decoder(Limit) -> #decoder{limit = Limit, table = #table{max = Limit}}.

%% @doc The peer's SETTINGS_HEADER_TABLE_SIZE changed: shrink or grow our
%% encoding table and announce the new size in the next block.
-spec set_encoder_max_size(non_neg_integer(), encoder()) -> encoder().
set_encoder_max_size(Max, #encoder{table = T} = E) ->
    E#encoder{table = evict(T#table{max = Max}), pending_update = Max}.

%% @doc Our advertised SETTINGS_HEADER_TABLE_SIZE changed.
-spec set_decoder_limit(non_neg_integer(), decoder()) -> decoder().
set_decoder_limit(Limit, D) -> D#decoder{limit = Limit}.

%% @doc Dynamic table contents, most recent first (for tests and debugging).
-spec table(encoder() | decoder()) -> [header()].
table(#encoder{table = T}) -> T#table.entries;
table(#decoder{table = T}) -> T#table.entries.

-spec table_size(encoder() | decoder()) -> non_neg_integer().
table_size(#encoder{table = T}) -> T#table.size;
table_size(#decoder{table = T}) -> T#table.size.

%%====================================================================
%% Encoding
%%====================================================================

%% @doc Encodes a header list into one header block. Exact matches are sent
%% as indexed fields; everything else as a literal with incremental indexing
%% (using an indexed name when there is one), unless the header asks not to
%% be indexed.
-spec encode([header_in()], encoder()) -> {iodata(), encoder()}.
encode(Headers, #encoder{pending_update = Pending} = E0) ->
    Prefix = case Pending of
                 undefined -> [];
                 Size -> enc_int(Size, 5, 2#001)
             end,
    {Acc, E} = lists:foldl(fun enc_header/2, {[], E0#encoder{pending_update = undefined}},
                           Headers),
    {[Prefix | lists:reverse(Acc)], E}.

enc_header({Name, Value}, Acc) ->
    enc_header({Name, Value, index}, Acc);
enc_header({Name, Value, Mode}, {Acc, #encoder{table = T, huffman = H} = E}) ->
    case find(Name, Value, T) of
        {full, Idx} ->
            {[enc_int(Idx, 7, 1) | Acc], E};
        Found ->
            NameIdx = case Found of {name, I} -> I; none -> 0 end,
            NamePart = case NameIdx of
                           0 -> enc_str(Name, H);
                           _ -> []
                       end,
            case Mode of
                index ->
                    Bin = [enc_int(NameIdx, 6, 2#01), NamePart, enc_str(Value, H)],
                    {[Bin | Acc], E#encoder{table = add({Name, Value}, T)}};
                no_index ->
                    {[[enc_int(NameIdx, 4, 2#0000), NamePart, enc_str(Value, H)] | Acc], E};
                never_index ->
                    {[[enc_int(NameIdx, 4, 2#0001), NamePart, enc_str(Value, H)] | Acc], E}
            end
    end.

%% Integer representation (section 5.1) with an N-bit prefix; Flags are the
%% bits above the prefix in the first octet.
enc_int(I, N, Flags) when I < (1 bsl N) - 1 ->
    <<Flags:(8 - N), I:N>>;
enc_int(I, N, Flags) ->
    Max = (1 bsl N) - 1,
    [<<Flags:(8 - N), Max:N>> | enc_int_rest(I - Max)].

enc_int_rest(I) when I < 128 -> [<<I>>];
enc_int_rest(I) -> [<<1:1, (I band 127):7>> | enc_int_rest(I bsr 7)].

enc_str(S, Mode) ->
    Plain = byte_size(S),
    UseHuffman = case Mode of
                     always -> true;
                     never -> false;
                     auto -> pyexec_huffman:encoded_size(S) =< Plain
                 end,
    case UseHuffman of
        true ->
            HS = pyexec_huffman:encode(S),
            [enc_int(byte_size(HS), 7, 1), HS];
        false ->
            [enc_int(Plain, 7, 0), S]
    end.

%%====================================================================
%% Decoding
%%====================================================================

%% @doc Decodes one complete header block (HEADERS plus CONTINUATIONs).
%% A failure is a connection error (COMPRESSION_ERROR) for the caller.
-spec decode(binary(), decoder()) -> {ok, [header()], decoder()} | {error, term()}.
decode(Block, D) ->
    try dec(Block, D, [], true) of
        {Headers, D1} -> {ok, Headers, D1}
    catch
        throw:{hpack, Why} -> {error, Why}
    end.

%% `First` tracks whether a table size update is still allowed (only at the
%% start of a block, section 4.2).
dec(<<>>, D, Acc, _First) ->
    {lists:reverse(Acc), D};
dec(<<1:1, _/bits>> = B, D, Acc, _) ->                 % indexed field
    {Idx, Rest} = dec_int(B, 7),
    dec(Rest, D, [lookup(Idx, D#decoder.table) | Acc], false);
dec(<<2#01:2, _/bits>> = B, D, Acc, _) ->              % literal, incremental indexing
    {Idx, R1} = dec_int(B, 6),
    {H, R2} = dec_literal(Idx, R1, D),
    T = add(H, D#decoder.table),
    dec(R2, D#decoder{table = T}, [H | Acc], false);
dec(<<2#001:3, _/bits>> = B, #decoder{table = T, limit = L} = D, Acc, First) ->
    {Size, Rest} = dec_int(B, 5),
    First orelse throw({hpack, late_size_update}),
    Size =< L orelse throw({hpack, size_update_over_limit}),
    dec(Rest, D#decoder{table = evict(T#table{max = Size})}, Acc, First);
dec(<<2#000:3, _/bits>> = B, D, Acc, _) ->             % literal, not / never indexed
    {Idx, R1} = dec_int(B, 4),
    {H, R2} = dec_literal(Idx, R1, D),
    dec(R2, D, [H | Acc], false).

dec_literal(0, Bin, _D) ->
    {Name, R1} = dec_str(Bin),
    {Value, R2} = dec_str(R1),
    {{Name, Value}, R2};
dec_literal(Idx, Bin, D) ->
    {Name, _} = lookup(Idx, D#decoder.table),
    {Value, R} = dec_str(Bin),
    {{Name, Value}, R}.

dec_int(B, N) ->
    Max = (1 bsl N) - 1,
    Skip = 8 - N,
    case B of
        <<_:Skip, Max:N, Rest/binary>> -> dec_int_rest(Rest, 0, Max);
        <<_:Skip, I:N, Rest/binary>> -> {I, Rest};
        _ -> throw({hpack, truncated})
    end.

dec_int_rest(<<1:1, V:7, Rest/binary>>, Shift, Acc) when Shift < 28 ->
    dec_int_rest(Rest, Shift + 7, Acc + (V bsl Shift));
dec_int_rest(<<0:1, V:7, Rest/binary>>, Shift, Acc) when Shift =< 28 ->
    {Acc + (V bsl Shift), Rest};
dec_int_rest(_, _, _) ->
    throw({hpack, bad_integer}).

dec_str(<<H:1, _/bits>> = B) ->
    {Len, R} = dec_int(B, 7),
    Len =< ?MAX_STRING orelse throw({hpack, string_too_long}),
    case R of
        <<S:Len/binary, Rest/binary>> when H =:= 0 ->
            {S, Rest};
        <<S:Len/binary, Rest/binary>> ->
            case pyexec_huffman:decode(S) of
                {ok, Plain} -> {Plain, Rest};
                {error, _} -> throw({hpack, huffman})
            end;
        _ ->
            throw({hpack, truncated})
    end;
dec_str(_) ->
    throw({hpack, truncated}).

%%====================================================================
%% Tables
%%====================================================================

lookup(0, _) ->
    throw({hpack, zero_index});
lookup(Idx, _) when Idx =< 61 ->
    element(Idx, static());
lookup(Idx, #table{entries = E}) ->
    try lists:nth(Idx - 61, E)
    catch error:_ -> throw({hpack, {bad_index, Idx}})
    end.

%% Finds an exact match, else a name match, preferring the static table so
%% our indexes stay stable as the dynamic table churns.
find(Name, Value, #table{entries = E}) ->
    Static = static_index(),
    case Static of
        #{{Name, Value} := I} -> {full, I};
        _ ->
            case find_dynamic(Name, Value, E, 62, none) of
                {full, _} = Full -> Full;
                DynName ->
                    case Static of
                        #{Name := I} -> {name, I};
                        _ -> DynName
                    end
            end
    end.

find_dynamic(_N, _V, [], _I, NameHit) -> NameHit;
find_dynamic(N, V, [{N, V} | _], I, _) -> {full, I};
find_dynamic(N, V, [{N, _} | Rest], I, none) -> find_dynamic(N, V, Rest, I + 1, {name, I});
find_dynamic(N, V, [_ | Rest], I, NameHit) -> find_dynamic(N, V, Rest, I + 1, NameHit).

%% Section 4.4: adding an entry larger than the table empties it.
add({N, V} = H, #table{entries = E, size = S, max = Max} = T) ->
    Sz = byte_size(N) + byte_size(V) + ?ENTRY_OVERHEAD,
    case Sz > Max of
        true -> T#table{entries = [], size = 0};
        false -> evict(T#table{entries = [H | E], size = S + Sz})
    end.

evict(#table{size = S, max = Max} = T) when S =< Max -> T;
evict(#table{entries = E, size = S} = T) ->
    {Keep, [{N, V}]} = lists:split(length(E) - 1, E),
    evict(T#table{entries = Keep, size = S - byte_size(N) - byte_size(V) - ?ENTRY_OVERHEAD}).

%% Reverse index over the static table: {Name, Value} and Name -> lowest index.
static_index() ->
    case persistent_term:get({?MODULE, static_index}, undefined) of
        undefined ->
            L = lists:zip(lists:seq(1, 61), tuple_to_list(static())),
            Map = lists:foldr(fun({I, {N, V}}, M) -> M#{{N, V} => I, N => I} end, #{}, L),
            persistent_term:put({?MODULE, static_index}, Map),
            Map;
        Map -> Map
    end.

%% Appendix A.
static() ->
    {{<<":authority">>, <<>>},
     {<<":method">>, <<"GET">>},
     {<<":method">>, <<"POST">>},
     {<<":path">>, <<"/">>},
     {<<":path">>, <<"/index.html">>},
     {<<":scheme">>, <<"http">>},
     {<<":scheme">>, <<"https">>},
     {<<":status">>, <<"200">>},
     {<<":status">>, <<"204">>},
     {<<":status">>, <<"206">>},
     {<<":status">>, <<"304">>},
     {<<":status">>, <<"400">>},
     {<<":status">>, <<"404">>},
     {<<":status">>, <<"500">>},
     {<<"accept-charset">>, <<>>},
     {<<"accept-encoding">>, <<"gzip, deflate">>},
     {<<"accept-language">>, <<>>},
     {<<"accept-ranges">>, <<>>},
     {<<"accept">>, <<>>},
     {<<"access-control-allow-origin">>, <<>>},
     {<<"age">>, <<>>},
     {<<"allow">>, <<>>},
     {<<"authorization">>, <<>>},
     {<<"cache-control">>, <<>>},
     {<<"content-disposition">>, <<>>},
     {<<"content-encoding">>, <<>>},
     {<<"content-language">>, <<>>},
     {<<"content-length">>, <<>>},
     {<<"content-location">>, <<>>},
     {<<"content-range">>, <<>>},
     {<<"content-type">>, <<>>},
     {<<"cookie">>, <<>>},
     {<<"date">>, <<>>},
     {<<"etag">>, <<>>},
     {<<"expect">>, <<>>},
     {<<"expires">>, <<>>},
     {<<"from">>, <<>>},
     {<<"host">>, <<>>},
     {<<"if-match">>, <<>>},
     {<<"if-modified-since">>, <<>>},
     {<<"if-none-match">>, <<>>},
     {<<"if-range">>, <<>>},
     {<<"if-unmodified-since">>, <<>>},
     {<<"last-modified">>, <<>>},
     {<<"link">>, <<>>},
     {<<"location">>, <<>>},
     {<<"max-forwards">>, <<>>},
     {<<"proxy-authenticate">>, <<>>},
     {<<"proxy-authorization">>, <<>>},
     {<<"range">>, <<>>},
     {<<"referer">>, <<>>},
     {<<"refresh">>, <<>>},
     {<<"retry-after">>, <<>>},
     {<<"server">>, <<>>},
     {<<"set-cookie">>, <<>>},
     {<<"strict-transport-security">>, <<>>},
     {<<"transfer-encoding">>, <<>>},
     {<<"user-agent">>, <<>>},
     {<<"vary">>, <<>>},
     {<<"via">>, <<>>},
     {<<"www-authenticate">>, <<>>}}.
