// @pyexec/client: run Python on a pyexecd server from Node/TypeScript.
export { Client, Session, Context, Executor, BoundExecutor, PendingCall } from './client';
export type {
  ClientOptions,
  TlsOptions,
  CallOptions,
  ExecOptions,
  EvalOptions,
  CallFnOptions,
  BindOptions,
  SessionOptions,
  CallbackOptions,
  CallbackFunction,
  CallbackReturn,
  CallRef,
  Snapshot,
  LostName,
  Output,
  Result,
  Stats,
  StreamEvent,
  OutputEvent,
} from './client';
export { Tuple, tuple, Float, Opaque, Ref } from './values';
export type { PyInput, PyValue, TupleOf, ValueOptions } from './values';
export {
  PyExecError,
  PythonError,
  RpcError,
  SessionNotFoundError,
  DeadlineExceededError,
  PoolExhaustedError,
  InvalidArgumentError,
  UnknownRefError,
  RefLimitError,
  UnavailableError,
  CancelledError,
  WorkerDiedError,
  UnauthenticatedError,
  PermissionDeniedError,
} from './errors';
export { status } from '@grpc/grpc-js';
