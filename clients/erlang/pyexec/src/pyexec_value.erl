%% @doc Erlang term <-> pyexec.v1.Value, straight to and from protobuf bytes.
%%
%% There is no intermediate record form: requests are encoded from the terms
%% the user passed and responses decode into the terms the user gets, which
%% halves the allocation on the hot path.
%%
%% Mapping (Erlang -> Python):
%%   integer            int (Value.int when it fits int64, else Value.big_int)
%%   float              float;  nan | infinity | neg_infinity -> float specials
%%   true | false       bool
%%   nil | none | undefined -> None
%%   other atom         str
%%   binary             str (must be UTF-8; use {bytes, B} for raw bytes)
%%   {bytes, Bin}       bytes
%%   {set, List}        set
%%   list               list (a charlist arrives as a list of ints)
%%   tuple              tuple
%%   map                dict (keys may be any supported term)
%%
%% Python -> Erlang: None -> none, bool -> true|false, int -> integer (any
%% size), float -> float | nan | infinity | neg_infinity, str -> binary,
%% bytes -> {bytes, Bin} (or a bare binary with `{decode_bytes, binary}`),
%% list -> list, tuple -> tuple, dict -> map, set -> {set, List},
%% anything else -> {opaque, TypeBinary, ReprBinary} (stateless calls) or,
%% on a bound session, a ref to the live object held by the session.
%%
%% Refs: Value.ref {id, type, repr} decodes to
%% `{py_ref, undefined, Id, Type, Repr}'; the `py' layer fills in the
%% session token (attach_session/2), because the decoder does not know
%% which session answered (with grpcbox it runs in another process). A ref
%% sent back (any position: argument, keyword, local, nested) encodes as
%% Value.ref {id}; the server resolves it only on the session that made it.
-module(pyexec_value).

-export([encode/1, decode/1, decode/2, encode_field/2, builtin_exception_types/0,
         attach_session/2, is_ref/1]).

-export_type([term_in/0, term_out/0, py_ref/0]).

-type term_in() :: py_ref() | integer() | float() | atom() | binary() | {bytes, binary()}
                 | {set, list()} | list() | tuple() | map().
-type py_ref() :: {py_ref, binary() | undefined, binary(), binary(), binary()}.
-type term_out() :: py_ref() | none | boolean() | integer() | float() | nan | infinity
                  | neg_infinity | binary() | {bytes, binary()} | {set, list()}
                  | {opaque, binary(), binary()} | list() | tuple() | map().

-define(INT64_MIN, -16#8000000000000000).
-define(INT64_MAX, 16#7fffffffffffffff).

%% Field tags (field number << 3 | wire type) of pyexec.v1.Value.
-define(T_NONE, 16#0a).
-define(T_BOOL, 16#10).
-define(T_INT, 16#18).
-define(T_BIGINT, 16#22).
-define(T_FLOAT, 16#29).
-define(T_STR, 16#32).
-define(T_BYTES, 16#3a).
-define(T_LIST, 16#40).
-define(T_TUPLE, 16#48).
-define(T_DICT, 16#50).
-define(T_SET, 16#58).
-define(T_OPAQUE, 16#62).
-define(T_ITEMS, 16#6a).
-define(T_KEYS, 16#72).
-define(T_REF, 16#7a).

%%====================================================================
%% Encoding
%%====================================================================

%% @doc Encodes a term as the body of a Value message. Throws
%% `{pyexec_bad_value, Term}' for a term with no Python counterpart.
-spec encode(term_in()) -> iodata().
encode(Term) ->
    {Io, _Size} = enc(Term),
    Io.

%% @doc Encodes Term as a length-delimited Value field with the given tag
%% octet(s), for use inside an enclosing message.
-spec encode_field(binary(), term_in()) -> {iodata(), non_neg_integer()}.
encode_field(Tag, Term) ->
    sub(Tag, enc(Term)).

%% Each clause returns {IoData, ByteSize} so nested lengths are computed once
%% instead of re-walking the iolist at every level.
enc(I) when is_integer(I), I >= ?INT64_MIN, I =< ?INT64_MAX ->
    V = pyexec_pb_wire:varint((I bsl 1) bxor (I bsr 63)),
    {[?T_INT, V], 1 + byte_size(V)};
enc(I) when is_integer(I) ->
    len_field(?T_BIGINT, integer_to_binary(I));
enc(F) when is_float(F) ->
    {<<?T_FLOAT, F:64/float-little>>, 9};
enc(true) -> {<<?T_BOOL, 1>>, 2};
enc(false) -> {<<?T_BOOL, 0>>, 2};
enc(none) -> {<<?T_NONE, 0>>, 2};
enc(nil) -> {<<?T_NONE, 0>>, 2};
enc(undefined) -> {<<?T_NONE, 0>>, 2};
enc(nan) -> {<<?T_FLOAT, 0, 0, 0, 0, 0, 0, 16#f8, 16#7f>>, 9};
enc(infinity) -> {<<?T_FLOAT, 0, 0, 0, 0, 0, 0, 16#f0, 16#7f>>, 9};
enc(neg_infinity) -> {<<?T_FLOAT, 0, 0, 0, 0, 0, 0, 16#f0, 16#ff>>, 9};
enc(A) when is_atom(A) ->
    len_field(?T_STR, atom_to_binary(A, utf8));
enc(B) when is_binary(B) ->
    case unicode:characters_to_binary(B) of
        B2 when is_binary(B2) -> len_field(?T_STR, B);
        _ -> throw({pyexec_bad_value, B})
    end;
enc({bytes, B}) when is_binary(B) ->
    len_field(?T_BYTES, B);
enc({py_ref, _Session, Id, _Type, _Repr}) when is_binary(Id) ->
    %% Only the id matters to the server (Ref.id = field 1).
    sub(<<?T_REF>>, len_field(16#0a, Id));
enc({set, L}) when is_list(L) ->
    container(?T_SET, L);
enc(L) when is_list(L) ->
    container(?T_LIST, L);
enc(T) when is_tuple(T) ->
    container(?T_TUPLE, tuple_to_list(T));
enc(M) when is_map(M) ->
    {Keys, Items} = lists:unzip(maps:to_list(M)),
    {KIo, KSz} = items(?T_KEYS, Keys),
    {VIo, VSz} = items(?T_ITEMS, Items),
    {[<<?T_DICT, 1>>, KIo, VIo], 2 + KSz + VSz};
enc(Other) ->
    throw({pyexec_bad_value, Other}).

len_field(Tag, Bin) ->
    Len = pyexec_pb_wire:varint(byte_size(Bin)),
    {[Tag, Len, Bin], 1 + byte_size(Len) + byte_size(Bin)}.

container(Marker, Elems) ->
    {Io, Sz} = items(?T_ITEMS, Elems),
    {[<<Marker, 1>>, Io], 2 + Sz}.

items(Tag, Elems) ->
    items(Tag, Elems, [], 0).

items(_Tag, [], Acc, Sz) ->
    {lists:reverse(Acc), Sz};
items(Tag, [E | Rest], Acc, Sz) ->
    {Io, S} = sub(<<Tag>>, enc(E)),
    items(Tag, Rest, [Io | Acc], Sz + S);
items(_Tag, Improper, _Acc, _Sz) ->
    throw({pyexec_bad_value, Improper}).

sub(Tag, {Io, Size}) ->
    Len = pyexec_pb_wire:varint(Size),
    {[Tag, Len, Io], byte_size(Tag) + byte_size(Len) + Size}.

%%====================================================================
%% Decoding
%%====================================================================

%% @doc Decodes the body of a Value message, with the application's
%% `decode_bytes' setting.
-spec decode(binary()) -> term_out().
decode(Bin) ->
    decode(Bin, pyexec_config:decode_bytes()).

-spec decode(binary(), tagged | binary) -> term_out().
decode(Bin, BytesAs) ->
    dec(Bin, BytesAs, none, [], []).

%% Kind is the scalar or container marker seen so far; Items/Keys collect the
%% repeated elements (reversed). Fields may come in any order, and a C++
%% serializer writes items (13) before keys (14).
dec(<<>>, _B, Kind, Items, Keys) ->
    finish(Kind, Items, Keys);
dec(Bin, B, Kind, Items, Keys) ->
    case pyexec_pb_wire:read_field(Bin) of
        {1, _NoneValue, Rest} -> dec(Rest, B, none, Items, Keys);
        {2, V, Rest} -> dec(Rest, B, V =/= 0, Items, Keys);
        {3, V, Rest} -> dec(Rest, B, {int, (V bsr 1) bxor -(V band 1)}, Items, Keys);
        {4, S, Rest} -> dec(Rest, B, {int, binary_to_integer(S)}, Items, Keys);
        {5, F, Rest} -> dec(Rest, B, {float, F}, Items, Keys);
        {6, S, Rest} -> dec(Rest, B, {str, S}, Items, Keys);
        {7, S, Rest} when B =:= tagged -> dec(Rest, B, {str, {bytes, S}}, Items, Keys);
        {7, S, Rest} -> dec(Rest, B, {str, S}, Items, Keys);
        {8, _, Rest} -> dec(Rest, B, list, Items, Keys);
        {9, _, Rest} -> dec(Rest, B, tuple, Items, Keys);
        {10, _, Rest} -> dec(Rest, B, dict, Items, Keys);
        {11, _, Rest} -> dec(Rest, B, set, Items, Keys);
        {12, O, Rest} -> dec(Rest, B, {opaque, O}, Items, Keys);
        {15, R, Rest} -> dec(Rest, B, {ref, R}, Items, Keys);
        {13, V, Rest} -> dec(Rest, B, Kind, [dec(V, B, none, [], []) | Items], Keys);
        {14, V, Rest} -> dec(Rest, B, Kind, Items, [dec(V, B, none, [], []) | Keys]);
        {_Unknown, _, Rest} -> dec(Rest, B, Kind, Items, Keys)
    end.

finish(none, _, _) -> none;
finish(Bool, _, _) when is_boolean(Bool) -> Bool;
finish({int, I}, _, _) -> I;
finish({str, S}, _, _) -> S;
finish({float, F}, _, _) -> double(F);
finish(list, Items, _) -> lists:reverse(Items);
finish(tuple, Items, _) -> list_to_tuple(lists:reverse(Items));
finish(set, Items, _) -> {set, lists:reverse(Items)};
finish(dict, Items, Keys) -> maps:from_list(lists:zip(lists:reverse(Keys), lists:reverse(Items)));
finish({opaque, O}, _, _) ->
    #{type := T, repr := R} = pyexec_pb:decode_msg(opaque, O),
    {opaque, T, R};
finish({ref, Ref}, _, _) ->
    #{id := Id, type := T, repr := R} = pyexec_pb:decode_msg(ref, Ref),
    {py_ref, undefined, Id, T, R}.

%% @doc Whether Term is a ref (from a bound session's result).
-spec is_ref(term()) -> boolean().
is_ref({py_ref, S, Id, T, R}) ->
    (is_binary(S) orelse S =:= undefined) andalso is_binary(Id) andalso is_binary(T)
        andalso is_binary(R);
is_ref(_) ->
    false.

%% @doc Stamps the session token into every ref of a decoded result, so that
%% a ref carries its session (py:call_method/3 and friends need no context,
%% and a ref can be told apart from one of another session). Results
%% without refs, the common case, are returned as they are, without a copy.
-spec attach_session(term_out(), binary()) -> term_out().
attach_session(Term, Session) ->
    case has_ref(Term) of
        true -> attach(Term, Session);
        false -> Term
    end.

has_ref({py_ref, undefined, _, _, _}) -> true;
has_ref([H | T]) -> has_ref(H) orelse has_ref(T);
has_ref(T) when is_tuple(T) -> lists:any(fun has_ref/1, tuple_to_list(T));
has_ref(M) when is_map(M) -> lists:any(fun has_ref/1, maps:keys(M) ++ maps:values(M));
has_ref(_) -> false.

attach({py_ref, undefined, Id, T, R}, S) -> {py_ref, S, Id, T, R};
attach([H | T], S) -> [attach(H, S) | attach(T, S)];
attach(T, S) when is_tuple(T) -> list_to_tuple([attach(E, S) || E <- tuple_to_list(T)]);
attach(M, S) when is_map(M) -> maps:from_list([{attach(K, S), attach(V, S)} || {K, V} <- maps:to_list(M)]);
attach(Other, _S) -> Other.

%% IEEE 754 specials have no Erlang float; they become atoms.
double(<<0:48, 16#f0, 16#7f>>) -> infinity;
double(<<0:48, 16#f0, 16#ff>>) -> neg_infinity;
double(<<F:64/float-little>>) -> F;
double(<<_:64>>) -> nan.

%% @doc Python's built-in exception class names (3.11). Listing them here
%% makes them atoms of this module, so that py's `{error, {Type, Msg}}'
%% carries an atom for every built-in exception even though it never
%% creates atoms from exception names (see py:exception_type/1). With
%% pyexec's own CallbackError (a registered function failed).
-spec builtin_exception_types() -> [atom()].
builtin_exception_types() ->
    ['ArithmeticError', 'AssertionError', 'AttributeError', 'BaseException',
     'BaseExceptionGroup', 'BlockingIOError', 'BrokenPipeError', 'BufferError',
     'BytesWarning', 'CallbackError', 'ChildProcessError', 'ConnectionAbortedError', 'ConnectionError',
     'ConnectionRefusedError', 'ConnectionResetError', 'DeprecationWarning', 'EOFError',
     'EncodingWarning', 'EnvironmentError', 'Exception', 'ExceptionGroup',
     'FileExistsError', 'FileNotFoundError', 'FloatingPointError', 'FutureWarning',
     'GeneratorExit', 'IOError', 'ImportError', 'ImportWarning', 'IndentationError',
     'IndexError', 'InterruptedError', 'IsADirectoryError', 'KeyError', 'KeyboardInterrupt',
     'LookupError', 'MemoryError', 'ModuleNotFoundError', 'NameError', 'NotADirectoryError',
     'NotImplementedError', 'OSError', 'OverflowError', 'PendingDeprecationWarning',
     'PermissionError', 'ProcessLookupError', 'RecursionError', 'ReferenceError',
     'ResourceWarning', 'RuntimeError', 'RuntimeWarning', 'StopAsyncIteration',
     'StopIteration', 'SyntaxError', 'SyntaxWarning', 'SystemError', 'SystemExit',
     'TabError', 'TimeoutError', 'TypeError', 'UnboundLocalError', 'UnicodeDecodeError',
     'UnicodeEncodeError', 'UnicodeError', 'UnicodeTranslateError', 'UnicodeWarning',
     'UserWarning', 'ValueError', 'Warning', 'ZeroDivisionError'].
