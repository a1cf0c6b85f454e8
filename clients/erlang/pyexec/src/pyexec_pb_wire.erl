%% @doc The generic protobuf codec behind pyexec_pb: encodes and decodes a
%% message by walking its field table (pyexec_pb:schema/1, generated from
%% the .proto by scripts/gen_pyexec_pb.py).
%%
%% Messages are maps with atom keys. Decoding fills proto3 defaults, skips
%% unknown fields (so a newer server can add fields) and leaves an unset
%% message field out of the map. `Value' fields are handled by pyexec_value,
%% which maps them to plain Erlang terms.
-module(pyexec_pb_wire).

-export([encode_msg/2, decode_msg/2, varint/1, read_field/1]).

-export_type([field_type/0]).

%% The field types the generator may emit; it refuses anything else.
-type field_type() :: string | bytes | uint32 | uint64 | bool | value | {repeated, value}
                    | {repeated, string} | {repeated, {message, pyexec_pb:msg_name()}}
                    | {map, value} | {message, pyexec_pb:msg_name()}.

%%====================================================================
%% Encoding
%%====================================================================

%% @doc Encodes a message map. Missing keys take the proto3 default and are
%% not written. Throws `{pyexec_bad_value, Term}' for an unmappable value.
-spec encode_msg(pyexec_pb:msg_name(), map()) -> iodata().
encode_msg(Name, Msg) ->
    [enc_field(N, Type, maps:get(Key, Msg, undefined)) || {N, Key, Type} <- pyexec_pb:schema(Name)].

enc_field(_N, _Type, undefined) -> [];
enc_field(_N, string, <<>>) -> [];
enc_field(N, string, S) -> len(N, S);
enc_field(_N, bytes, <<>>) -> [];
enc_field(N, bytes, B) when is_binary(B) -> len(N, B);
enc_field(_N, uint32, 0) -> [];
enc_field(N, uint32, I) -> [key(N, 0), varint(I)];
enc_field(_N, uint64, 0) -> [];
enc_field(N, uint64, I) -> [key(N, 0), varint(I)];
enc_field(_N, bool, false) -> [];
enc_field(N, bool, true) -> [key(N, 0), 1];
enc_field(N, {repeated, string}, List) -> [len(N, S) || S <- List];
enc_field(N, {repeated, {message, Name}}, List) -> [len(N, encode_msg(Name, M)) || M <- List];
enc_field(N, value, Term) ->
    {Io, _} = pyexec_value:encode_field(key(N, 2), Term),
    Io;
enc_field(N, {repeated, value}, List) ->
    Key = key(N, 2),
    [element(1, pyexec_value:encode_field(Key, T)) || T <- List];
enc_field(N, {map, value}, Map) ->
    %% A map<string, Value> entry is a nested message {1: key, 2: value}.
    Key = key(N, 2),
    [begin
         KeyIo = len(1, map_key(K)),
         {ValIo, _} = pyexec_value:encode_field(<<16#12>>, V),
         Entry = [KeyIo, ValIo],
         [Key, varint(iolist_size(Entry)), Entry]
     end || {K, V} <- maps:to_list(Map)];
enc_field(N, {message, Name}, Msg) ->
    len(N, encode_msg(Name, Msg)).

len(N, Io) ->
    [key(N, 2), varint(iolist_size(Io)), Io].

key(N, WireType) -> varint((N bsl 3) bor WireType).

map_key(K) when is_binary(K) -> K;
map_key(K) when is_atom(K) -> atom_to_binary(K, utf8);
map_key(K) when is_list(K) ->
    case unicode:characters_to_binary(K) of
        B when is_binary(B) -> B;
        _ -> throw({pyexec_bad_value, K})
    end;
map_key(K) -> throw({pyexec_bad_value, K}).

%% @doc Base-128 varint of a non-negative integer.
-spec varint(non_neg_integer()) -> binary().
varint(I) when I < 128 -> <<I>>;
varint(I) -> varint(I, <<>>).

varint(I, Acc) when I < 128 -> <<Acc/binary, I>>;
varint(I, Acc) -> varint(I bsr 7, <<Acc/binary, 1:1, (I band 127):7>>).

%%====================================================================
%% Decoding
%%====================================================================

%% @doc Decodes a message into a map with every scalar field present (proto3
%% defaults) and message fields present only when set. Raises
%% `error({pyexec_pb, bad_message})' on malformed input.
-spec decode_msg(pyexec_pb:msg_name(), binary()) -> map().
decode_msg(Name, Bin) ->
    Schema = pyexec_pb:schema(Name),
    Defaults = maps:from_list([{Key, default(T)} || {_, Key, T} <- Schema, default(T) =/= unset]),
    ByNum = maps:from_list([{N, {Key, T}} || {N, Key, T} <- Schema]),
    dec_fields(Bin, ByNum, Defaults).

default(string) -> <<>>;
default(bytes) -> <<>>;
default(uint32) -> 0;
default(uint64) -> 0;
default(bool) -> false;
default({repeated, _}) -> [];
default({map, _}) -> #{};
default(_) -> unset.

dec_fields(<<>>, _ByNum, Acc) ->
    maps:map(fun(_K, {rev, L}) -> lists:reverse(L); (_K, V) -> V end, Acc);
dec_fields(Bin, ByNum, Acc) ->
    {N, V, Rest} = read_field(Bin),
    case ByNum of
        #{N := {Key, Type}} -> dec_fields(Rest, ByNum, dec_field(Key, Type, V, Acc));
        _ -> dec_fields(Rest, ByNum, Acc)
    end.

dec_field(Key, string, V, Acc) when is_binary(V) -> Acc#{Key => V};
dec_field(Key, bytes, V, Acc) when is_binary(V) -> Acc#{Key => V};
dec_field(Key, uint32, V, Acc) when is_integer(V) -> Acc#{Key => V band 16#ffffffff};
dec_field(Key, uint64, V, Acc) when is_integer(V) -> Acc#{Key => V};
dec_field(Key, bool, V, Acc) when is_integer(V) -> Acc#{Key => V =/= 0};
dec_field(Key, value, V, Acc) when is_binary(V) -> Acc#{Key => pyexec_value:decode(V)};
dec_field(Key, {repeated, string}, V, Acc) when is_binary(V) ->
    Prev = case Acc of
               #{Key := {rev, L}} -> L;
               _ -> []
           end,
    Acc#{Key => {rev, [V | Prev]}};
dec_field(Key, {repeated, {message, Name}}, V, Acc) when is_binary(V) ->
    Prev = case Acc of
               #{Key := {rev, L}} -> L;
               _ -> []
           end,
    Acc#{Key => {rev, [decode_msg(Name, V) | Prev]}};
dec_field(Key, {repeated, value}, V, Acc) when is_binary(V) ->
    Prev = case Acc of
               #{Key := {rev, L}} -> L;
               _ -> []
           end,
    Acc#{Key => {rev, [pyexec_value:decode(V) | Prev]}};
dec_field(Key, {map, value}, V, Acc) when is_binary(V) ->
    #{Key := Map} = Acc,
    {K, Val} = dec_map_entry(V, <<>>, none),
    Acc#{Key => Map#{K => Val}};
dec_field(Key, {message, Name}, V, Acc) when is_binary(V) ->
    Acc#{Key => decode_msg(Name, V)};
dec_field(_Key, _Type, _V, _Acc) ->
    error({pyexec_pb, bad_message}).

dec_map_entry(<<>>, K, V) -> {K, V};
dec_map_entry(Bin, K, V) ->
    case read_field(Bin) of
        {1, K1, Rest} -> dec_map_entry(Rest, K1, V);
        {2, V1, Rest} -> dec_map_entry(Rest, K, pyexec_value:decode(V1));
        {_, _, Rest} -> dec_map_entry(Rest, K, V)
    end.

%% @doc Reads one field: {FieldNumber, Value, Rest}. Value is an integer for
%% varints, a binary for length-delimited fields and the raw 8 or 4 octets
%% for fixed64/fixed32 (the caller knows how to interpret them).
-spec read_field(binary()) -> {pos_integer(), integer() | binary(), binary()}.
read_field(Bin) ->
    {Key, R1} = read_varint(Bin),
    N = Key bsr 3,
    case Key band 7 of
        0 -> {V, R2} = read_varint(R1), {N, V, R2};
        1 -> <<V:8/binary, R2/binary>> = R1, {N, V, R2};
        2 ->
            {Len, R2} = read_varint(R1),
            case R2 of
                <<V:Len/binary, R3/binary>> -> {N, V, R3};
                _ -> error({pyexec_pb, bad_message})
            end;
        5 -> <<V:4/binary, R2/binary>> = R1, {N, V, R2};
        _ -> error({pyexec_pb, bad_message})
    end.

read_varint(Bin) -> read_varint(Bin, 0, 0).

read_varint(<<1:1, B:7, Rest/binary>>, Shift, Acc) when Shift < 63 ->
    read_varint(Rest, Shift + 7, Acc bor (B bsl Shift));
read_varint(<<0:1, B:7, Rest/binary>>, Shift, Acc) ->
    {(Acc bor (B bsl Shift)) band 16#ffffffffffffffff, Rest};
read_varint(_, _, _) ->
    error({pyexec_pb, bad_message}).
