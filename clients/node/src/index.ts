// @pyexec/client: run Python on a pyexecd server from Node/TypeScript.
export { Client, Session, Context, Executor } from './client';
export type { ClientOptions, TlsOptions, CallOptions, EvalOptions, CallFnOptions, BindOptions, Output, Result, Stats } from './client';
export { Tuple, tuple, Float, Opaque, Ref } from './values';
export type { PyInput, PyValue, ValueOptions } from './values';
export {
  PyExecError,
  PythonError,
  RpcError,
  SessionNotFoundError,
  DeadlineExceededError,
  PoolExhaustedError,
  InvalidArgumentError,
  UnavailableError,
  CancelledError,
  WorkerDiedError,
  UnauthenticatedError,
  PermissionDeniedError,
} from './errors';
export { status } from '@grpc/grpc-js';
