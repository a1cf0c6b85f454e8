%% @doc HTTP/2 frame layer (RFC 9113 section 4 and 6): building frames and
%% cutting a byte stream into frames. No connection state lives here.
-module(pyexec_h2_frame).

-export([preface/0, parse/2,
         data/3, headers/4, rst_stream/2, settings/1, settings_ack/0,
         ping/1, ping_ack/1, goaway/3, window_update/2,
         strip_padding/2, strip_priority/2, parse_settings/1,
         error_code/1, error_name/1]).

-include("pyexec_h2.hrl").

-type frame() :: {Type :: byte(), Flags :: byte(), StreamId :: non_neg_integer(),
                  Payload :: binary()}.
-export_type([frame/0]).

-spec preface() -> binary().
preface() -> <<"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n">>.

%% @doc Cuts one frame off the front of Buf. MaxSize is our
%% SETTINGS_MAX_FRAME_SIZE; a larger frame is a connection error.
-spec parse(binary(), pos_integer()) ->
          {ok, frame(), binary()} | more | {error, frame_size_error}.
parse(<<Len:24, _:8, _:8, _:1, _:31, _/binary>>, MaxSize) when Len > MaxSize ->
    {error, frame_size_error};
parse(<<Len:24, Type:8, Flags:8, _:1, Id:31, Payload:Len/binary, Rest/binary>>, _) ->
    {ok, {Type, Flags, Id, Payload}, Rest};
parse(_, _) ->
    more.

frame(Type, Flags, Id, Payload) ->
    [<<(iolist_size(Payload)):24, Type:8, Flags:8, 0:1, Id:31>> | Payload].

-spec data(non_neg_integer(), iodata(), boolean()) -> iodata().
data(Id, Payload, EndStream) ->
    frame(?DATA, flag(EndStream, ?END_STREAM), Id, Payload).

%% @doc A header block as HEADERS plus as many CONTINUATION frames as
%% MaxFrame requires.
-spec headers(non_neg_integer(), binary(), boolean(), pos_integer()) -> iodata().
headers(Id, Block, EndStream, MaxFrame) when byte_size(Block) =< MaxFrame ->
    frame(?HEADERS, ?END_HEADERS bor flag(EndStream, ?END_STREAM), Id, Block);
headers(Id, Block, EndStream, MaxFrame) ->
    <<First:MaxFrame/binary, Rest/binary>> = Block,
    [frame(?HEADERS, flag(EndStream, ?END_STREAM), Id, First) | continuation(Id, Rest, MaxFrame)].

continuation(Id, Block, MaxFrame) when byte_size(Block) =< MaxFrame ->
    [frame(?CONTINUATION, ?END_HEADERS, Id, Block)];
continuation(Id, Block, MaxFrame) ->
    <<Chunk:MaxFrame/binary, Rest/binary>> = Block,
    [frame(?CONTINUATION, 0, Id, Chunk) | continuation(Id, Rest, MaxFrame)].

-spec rst_stream(non_neg_integer(), non_neg_integer()) -> iodata().
rst_stream(Id, Code) -> frame(?RST_STREAM, 0, Id, <<Code:32>>).

-spec settings([{non_neg_integer(), non_neg_integer()}]) -> iodata().
settings(Pairs) -> frame(?SETTINGS, 0, 0, << <<K:16, V:32>> || {K, V} <- Pairs >>).

-spec settings_ack() -> iodata().
settings_ack() -> frame(?SETTINGS, ?ACK, 0, <<>>).

-spec ping(<<_:64>>) -> iodata().
ping(Opaque) -> frame(?PING, 0, 0, Opaque).

-spec ping_ack(<<_:64>>) -> iodata().
ping_ack(Opaque) -> frame(?PING, ?ACK, 0, Opaque).

-spec goaway(non_neg_integer(), non_neg_integer(), binary()) -> iodata().
goaway(LastId, Code, Debug) -> frame(?GOAWAY, 0, 0, <<0:1, LastId:31, Code:32, Debug/binary>>).

%% The increment has 31 bits: anything outside 1..2^31-1 is a bug in the
%% caller's window accounting, so it fails here instead of being truncated.
-spec window_update(non_neg_integer(), 1..16#7fffffff) -> iodata().
window_update(Id, Inc) when is_integer(Inc), Inc >= 1, Inc =< ?MAX_WINDOW ->
    frame(?WINDOW_UPDATE, 0, Id, <<0:1, Inc:31>>).

flag(true, F) -> F;
flag(false, _) -> 0.

%% @doc Removes the padding of a DATA or HEADERS payload (PADDED flag).
-spec strip_padding(byte(), binary()) -> {ok, binary()} | {error, protocol_error}.
strip_padding(Flags, <<PadLen:8, Rest/binary>>) when Flags band ?PADDED =/= 0 ->
    case byte_size(Rest) - PadLen of
        N when N >= 0 -> {ok, binary:part(Rest, 0, N)};
        _ -> {error, protocol_error}
    end;
strip_padding(Flags, _) when Flags band ?PADDED =/= 0 ->
    {error, protocol_error};
strip_padding(_, Payload) ->
    {ok, Payload}.

%% @doc Drops the stream dependency and weight of a HEADERS payload.
-spec strip_priority(byte(), binary()) -> {ok, binary()} | {error, protocol_error}.
strip_priority(Flags, <<_:40, Rest/binary>>) when Flags band ?PRIORITY_FLAG =/= 0 -> {ok, Rest};
strip_priority(Flags, _) when Flags band ?PRIORITY_FLAG =/= 0 -> {error, protocol_error};
strip_priority(_, Payload) -> {ok, Payload}.

-spec parse_settings(binary()) -> {ok, [{non_neg_integer(), non_neg_integer()}]} | {error, frame_size_error}.
parse_settings(Payload) when byte_size(Payload) rem 6 =:= 0 ->
    {ok, [{K, V} || <<K:16, V:32>> <= Payload]};
parse_settings(_) ->
    {error, frame_size_error}.

-spec error_code(atom()) -> non_neg_integer().
error_code(no_error) -> 16#0;
error_code(protocol_error) -> 16#1;
error_code(internal_error) -> 16#2;
error_code(flow_control_error) -> 16#3;
error_code(settings_timeout) -> 16#4;
error_code(stream_closed) -> 16#5;
error_code(frame_size_error) -> 16#6;
error_code(refused_stream) -> 16#7;
error_code(cancel) -> 16#8;
error_code(compression_error) -> 16#9;
error_code(connect_error) -> 16#a;
error_code(enhance_your_calm) -> 16#b;
error_code(inadequate_security) -> 16#c;
error_code(http_1_1_required) -> 16#d.

-spec error_name(non_neg_integer()) -> atom().
error_name(Code) ->
    Names = [no_error, protocol_error, internal_error, flow_control_error,
             settings_timeout, stream_closed, frame_size_error, refused_stream,
             cancel, compression_error, connect_error, enhance_your_calm,
             inadequate_security, http_1_1_required],
    case Code < length(Names) of
        true -> lists:nth(Code + 1, Names);
        false -> {unknown_error, Code}
    end.
