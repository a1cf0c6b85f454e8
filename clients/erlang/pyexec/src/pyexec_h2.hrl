%% HTTP/2 constants (RFC 9113).

%% Frame types.
-define(DATA, 16#0).
-define(HEADERS, 16#1).
-define(PRIORITY, 16#2).
-define(RST_STREAM, 16#3).
-define(SETTINGS, 16#4).
-define(PUSH_PROMISE, 16#5).
-define(PING, 16#6).
-define(GOAWAY, 16#7).
-define(WINDOW_UPDATE, 16#8).
-define(CONTINUATION, 16#9).

%% Flags.
-define(END_STREAM, 16#1).
-define(ACK, 16#1).
-define(END_HEADERS, 16#4).
-define(PADDED, 16#8).
-define(PRIORITY_FLAG, 16#20).

%% Settings identifiers.
-define(SETTINGS_HEADER_TABLE_SIZE, 16#1).
-define(SETTINGS_ENABLE_PUSH, 16#2).
-define(SETTINGS_MAX_CONCURRENT_STREAMS, 16#3).
-define(SETTINGS_INITIAL_WINDOW_SIZE, 16#4).
-define(SETTINGS_MAX_FRAME_SIZE, 16#5).
-define(SETTINGS_MAX_HEADER_LIST_SIZE, 16#6).

-define(DEFAULT_WINDOW, 65535).
-define(DEFAULT_MAX_FRAME, 16384).
-define(MAX_WINDOW, 16#7fffffff).
-define(MAX_STREAM_ID, 16#7fffffff).
