%% @doc HPACK Huffman code (RFC 7541, Appendix B).
%%
%% Encoding looks each octet up in a tuple of {Code, Length}. Decoding walks a
%% binary tree of nested 2-tuples, built once and kept in persistent_term: header
%% strings are short and, after the first response, mostly served from the
%% HPACK dynamic table, so a bit-at-a-time walk is fast enough and obviously
%% correct.
-module(pyexec_huffman).

-export([encode/1, decode/1, encoded_size/1, codes/0]).

-define(TREE_KEY, {?MODULE, tree}).
-define(EOS, 256).

%% @doc Huffman-encodes a binary, padding the last octet with the EOS prefix
%% (all ones) as section 5.2 requires.
-spec encode(binary()) -> binary().
encode(Bin) ->
    Codes = codes(),
    Bits = << <<(element(1, C)):(element(2, C))>> ||
               <<Octet>> <= Bin, C <- [element(Octet + 1, Codes)] >>,
    case bit_size(Bits) rem 8 of
        0 -> Bits;
        R -> Pad = 8 - R, <<Bits/bits, ((1 bsl Pad) - 1):Pad>>
    end.

%% @doc Size in octets of the Huffman encoding of Bin, so the encoder can pick
%% the shorter representation without encoding twice.
-spec encoded_size(binary()) -> non_neg_integer().
encoded_size(Bin) ->
    Codes = codes(),
    Bits = lists:sum([element(2, element(O + 1, Codes)) || <<O>> <= Bin]),
    (Bits + 7) div 8.

%% @doc Decodes a Huffman-encoded string. Fails (section 5.2) on the EOS
%% symbol, on padding longer than 7 bits and on padding that is not all ones.
-spec decode(binary()) -> {ok, binary()} | {error, huffman}.
decode(Bin) ->
    Tree = tree(),
    walk(Bin, Tree, Tree, 0, true, <<>>).

walk(<<B:1, Rest/bits>>, Node, Root, Depth, Ones, Acc) ->
    case element(B + 1, Node) of
        ?EOS -> {error, huffman};
        Sym when is_integer(Sym) -> walk(Rest, Root, Root, 0, true, <<Acc/binary, Sym>>);
        Next -> walk(Rest, Next, Root, Depth + 1, Ones andalso B =:= 1, Acc)
    end;
walk(<<>>, _Node, _Root, Depth, Ones, Acc) when Depth =< 7, Ones ->
    {ok, Acc};
walk(<<>>, _Node, _Root, _Depth, _Ones, _Acc) ->
    {error, huffman}.

tree() ->
    case persistent_term:get(?TREE_KEY, undefined) of
        undefined ->
            T = build_tree(),
            persistent_term:put(?TREE_KEY, T),
            T;
        T -> T
    end.

build_tree() ->
    Codes = tuple_to_list(codes()),
    lists:foldl(fun({{Code, Len}, Sym}, T) -> insert(T, Code, Len, Sym) end,
                empty,
                lists:zip(Codes, lists:seq(0, ?EOS))).

insert(_, _Code, 0, Sym) -> Sym;
insert(empty, Code, Len, Sym) -> insert({empty, empty}, Code, Len, Sym);
insert({L, R}, Code, Len, Sym) ->
    case (Code bsr (Len - 1)) band 1 of
        0 -> {insert(L, Code, Len - 1, Sym), R};
        1 -> {L, insert(R, Code, Len - 1, Sym)}
    end.

%% @doc The code table: element N+1 is {Code, BitLength} of octet N; element
%% 257 is EOS. Exported for the completeness test.
-spec codes() -> tuple().
codes() ->
    {{16#1ff8,13},{16#7fffd8,23},{16#fffffe2,28},{16#fffffe3,28},
     {16#fffffe4,28},{16#fffffe5,28},{16#fffffe6,28},{16#fffffe7,28},
     {16#fffffe8,28},{16#ffffea,24},{16#3ffffffc,30},{16#fffffe9,28},
     {16#fffffea,28},{16#3ffffffd,30},{16#fffffeb,28},{16#fffffec,28},
     {16#fffffed,28},{16#fffffee,28},{16#fffffef,28},{16#ffffff0,28},
     {16#ffffff1,28},{16#ffffff2,28},{16#3ffffffe,30},{16#ffffff3,28},
     {16#ffffff4,28},{16#ffffff5,28},{16#ffffff6,28},{16#ffffff7,28},
     {16#ffffff8,28},{16#ffffff9,28},{16#ffffffa,28},{16#ffffffb,28},
     {16#14,6},{16#3f8,10},{16#3f9,10},{16#ffa,12},
     {16#1ff9,13},{16#15,6},{16#f8,8},{16#7fa,11},
     {16#3fa,10},{16#3fb,10},{16#f9,8},{16#7fb,11},
     {16#fa,8},{16#16,6},{16#17,6},{16#18,6},
     {16#0,5},{16#1,5},{16#2,5},{16#19,6},
     {16#1a,6},{16#1b,6},{16#1c,6},{16#1d,6},
     {16#1e,6},{16#1f,6},{16#5c,7},{16#fb,8},
     {16#7ffc,15},{16#20,6},{16#ffb,12},{16#3fc,10},
     {16#1ffa,13},{16#21,6},{16#5d,7},{16#5e,7},
     {16#5f,7},{16#60,7},{16#61,7},{16#62,7},
     {16#63,7},{16#64,7},{16#65,7},{16#66,7},
     {16#67,7},{16#68,7},{16#69,7},{16#6a,7},
     {16#6b,7},{16#6c,7},{16#6d,7},{16#6e,7},
     {16#6f,7},{16#70,7},{16#71,7},{16#72,7},
     {16#fc,8},{16#73,7},{16#fd,8},{16#1ffb,13},
     {16#7fff0,19},{16#1ffc,13},{16#3ffc,14},{16#22,6},
     {16#7ffd,15},{16#3,5},{16#23,6},{16#4,5},
     {16#24,6},{16#5,5},{16#25,6},{16#26,6},
     {16#27,6},{16#6,5},{16#74,7},{16#75,7},
     {16#28,6},{16#29,6},{16#2a,6},{16#7,5},
     {16#2b,6},{16#76,7},{16#2c,6},{16#8,5},
     {16#9,5},{16#2d,6},{16#77,7},{16#78,7},
     {16#79,7},{16#7a,7},{16#7b,7},{16#7ffe,15},
     {16#7fc,11},{16#3ffd,14},{16#1ffd,13},{16#ffffffc,28},
     {16#fffe6,20},{16#3fffd2,22},{16#fffe7,20},{16#fffe8,20},
     {16#3fffd3,22},{16#3fffd4,22},{16#3fffd5,22},{16#7fffd9,23},
     {16#3fffd6,22},{16#7fffda,23},{16#7fffdb,23},{16#7fffdc,23},
     {16#7fffdd,23},{16#7fffde,23},{16#ffffeb,24},{16#7fffdf,23},
     {16#ffffec,24},{16#ffffed,24},{16#3fffd7,22},{16#7fffe0,23},
     {16#ffffee,24},{16#7fffe1,23},{16#7fffe2,23},{16#7fffe3,23},
     {16#7fffe4,23},{16#1fffdc,21},{16#3fffd8,22},{16#7fffe5,23},
     {16#3fffd9,22},{16#7fffe6,23},{16#7fffe7,23},{16#ffffef,24},
     {16#3fffda,22},{16#1fffdd,21},{16#fffe9,20},{16#3fffdb,22},
     {16#3fffdc,22},{16#7fffe8,23},{16#7fffe9,23},{16#1fffde,21},
     {16#7fffea,23},{16#3fffdd,22},{16#3fffde,22},{16#fffff0,24},
     {16#1fffdf,21},{16#3fffdf,22},{16#7fffeb,23},{16#7fffec,23},
     {16#1fffe0,21},{16#1fffe1,21},{16#3fffe0,22},{16#1fffe2,21},
     {16#7fffed,23},{16#3fffe1,22},{16#7fffee,23},{16#7fffef,23},
     {16#fffea,20},{16#3fffe2,22},{16#3fffe3,22},{16#3fffe4,22},
     {16#7ffff0,23},{16#3fffe5,22},{16#3fffe6,22},{16#7ffff1,23},
     {16#3ffffe0,26},{16#3ffffe1,26},{16#fffeb,20},{16#7fff1,19},
     {16#3fffe7,22},{16#7ffff2,23},{16#3fffe8,22},{16#1ffffec,25},
     {16#3ffffe2,26},{16#3ffffe3,26},{16#3ffffe4,26},{16#7ffffde,27},
     {16#7ffffdf,27},{16#3ffffe5,26},{16#fffff1,24},{16#1ffffed,25},
     {16#7fff2,19},{16#1fffe3,21},{16#3ffffe6,26},{16#7ffffe0,27},
     {16#7ffffe1,27},{16#3ffffe7,26},{16#7ffffe2,27},{16#fffff2,24},
     {16#1fffe4,21},{16#1fffe5,21},{16#3ffffe8,26},{16#3ffffe9,26},
     {16#ffffffd,28},{16#7ffffe3,27},{16#7ffffe4,27},{16#7ffffe5,27},
     {16#fffec,20},{16#fffff3,24},{16#fffed,20},{16#1fffe6,21},
     {16#3fffe9,22},{16#1fffe7,21},{16#1fffe8,21},{16#7ffff3,23},
     {16#3fffea,22},{16#3fffeb,22},{16#1ffffee,25},{16#1ffffef,25},
     {16#fffff4,24},{16#fffff5,24},{16#3ffffea,26},{16#7ffff4,23},
     {16#3ffffeb,26},{16#7ffffe6,27},{16#3ffffec,26},{16#3ffffed,26},
     {16#7ffffe7,27},{16#7ffffe8,27},{16#7ffffe9,27},{16#7ffffea,27},
     {16#7ffffeb,27},{16#ffffffe,28},{16#7ffffec,27},{16#7ffffed,27},
     {16#7ffffee,27},{16#7ffffef,27},{16#7fffff0,27},{16#3ffffee,26},
     {16#3fffffff,30}}.
