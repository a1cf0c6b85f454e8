// The wire messages of pyexec.v1 as @grpc/proto-loader hands them over with
// the options in client.ts (keepCase, longs as decimal strings, bytes as
// Buffer, oneofs naming the set member in `kind`). Internal: the public API
// speaks native values (values.ts) and camelCase results (client.ts).

export interface WireOpaque {
  type?: string;
  repr?: string;
}

export interface WireRef {
  id?: string;
  type?: string;
  repr?: string;
}

export interface WireValue {
  kind?: string;
  none?: Record<string, never>;
  bool?: boolean;
  int?: string; // sint64 as a decimal string
  big_int?: string;
  float?: number;
  str?: string;
  bytes?: Buffer;
  list?: boolean;
  tuple?: boolean;
  dict?: boolean;
  set?: boolean;
  opaque?: WireOpaque;
  ref?: WireRef;
  items?: WireValue[];
  keys?: WireValue[];
}

export interface WirePythonError {
  type?: string;
  message?: string;
  traceback?: string;
}

export interface WireLostName {
  name?: string;
  type?: string;
  reason?: string;
}

export interface WireBindRequest {
  idle_timeout_seconds?: number;
  restore?: Buffer;
}
export interface WireBindResponse {
  session?: string;
  idle_timeout_seconds?: number;
  owner?: string;
  restore_lost?: WireLostName[];
  restore_error?: WirePythonError;
}
export interface WireUnbindRequest {
  session: string;
}
export interface WireEvalRequest {
  session?: string;
  code: string;
  locals?: Record<string, WireValue>;
  result_as_ref?: boolean;
}
export interface WireEvalResponse {
  value?: WireValue;
  error?: WirePythonError;
  stdout?: string;
  stderr?: string;
}
export interface WireExecRequest {
  session?: string;
  code: string;
  locals?: Record<string, WireValue>;
}
export interface WireExecResponse {
  error?: WirePythonError;
  stdout?: string;
  stderr?: string;
}
export interface WireCallRequest {
  session?: string;
  module: string;
  function: string;
  args?: WireValue[];
  kwargs?: Record<string, WireValue>;
  result_as_ref?: boolean;
  target_ref?: string;
  get_attribute?: boolean;
}
export type WireCallResponse = WireEvalResponse;

export interface WireGetStatsResponse {
  num_workers?: number;
  available_workers?: number;
  checked_out?: number;
  pending_requests?: number;
  max_workers?: number;
  starting_workers?: number;
  busy_workers?: number;
  workers_spawned?: string; // uint64 as a decimal string
  workers_died?: string;
  calls_total?: string;
  sessions?: number;
}

export interface WireStreamEnd {
  error?: WirePythonError;
}
/** ExecEvent and CallEvent; `event` names the oneof member that is set. */
export interface WireStreamEvent {
  event?: 'stdout' | 'stderr' | 'value' | 'end';
  stdout?: string;
  stderr?: string;
  value?: WireValue;
  end?: WireStreamEnd;
}

export interface WireReleaseResponse {
  released?: number;
}
export interface WireInterruptResponse {
  interrupted?: boolean;
}

export interface WireSnapshotResponse {
  blob?: Buffer;
  lost?: WireLostName[];
  modules?: string[];
  refs?: number;
}

/** AttachEvent; `event` names the oneof member that is set. */
export interface WireAttachEvent {
  event?: 'attached' | 'ended';
  attached?: { grace_seconds?: number };
  ended?: { reason?: string };
}

export interface WireCallbackRequest {
  id?: string;
  name?: string;
  args?: WireValue[];
  kwargs?: Record<string, WireValue>;
}
export interface WireCallbackResult {
  id: string;
  value?: WireValue;
  error?: WirePythonError;
}
/** RunRequest: exactly one member set. */
export interface WireRunRequest {
  eval?: WireEvalRequest;
  exec?: WireExecRequest;
  call?: WireCallRequest;
  callback_result?: WireCallbackResult;
}
/** RunEvent; `event` names the oneof member that is set. */
export interface WireRunEvent {
  event?: 'callback' | 'eval' | 'exec' | 'call';
  callback?: WireCallbackRequest;
  eval?: WireEvalResponse;
  exec?: WireExecResponse;
  call?: WireCallResponse;
}
