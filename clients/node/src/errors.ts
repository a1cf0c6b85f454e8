// Typed errors. Every error the client rejects with is a PyExecError; catch
// the subclass for the case you handle (`err instanceof SessionNotFoundError`)
// and keep a default, since new status codes may appear.
//
// A Python exception is a result on the wire (the RPC succeeded); the client
// turns it into a PythonError so `await` reads like a local call.

import { Metadata, status } from '@grpc/grpc-js';

/** Base class of every error this client raises. */
export class PyExecError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Python code raised an exception. */
export class PythonError extends PyExecError {
  /** The exception class name, e.g. "ZeroDivisionError". */
  readonly type: string;
  /** str(exception). (`message`, from Error, reads "Type: str(exception)".) */
  readonly pythonMessage: string;
  /** The formatted Python traceback. */
  readonly traceback: string;
  /** Output the call wrote before it raised. */
  readonly stdout: string;
  readonly stderr: string;

  constructor(type: string, message: string, traceback: string, stdout = '', stderr = '') {
    super(message ? `${type}: ${message}` : type);
    this.type = type;
    this.pythonMessage = message;
    this.traceback = traceback;
    this.stdout = stdout;
    this.stderr = stderr;
  }
}

/** A gRPC call failed with a non-OK status. */
export class RpcError extends PyExecError {
  /** The gRPC status code (`status` from @grpc/grpc-js). */
  readonly code: status;
  /** The server's status message. */
  readonly details: string;
  /** Trailing metadata, when the server sent any. */
  readonly metadata: Metadata | undefined;

  constructor(code: status, details: string, metadata?: Metadata, options?: { cause?: unknown }) {
    super(`${status[code] ?? code}: ${details}`, options);
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

/** NOT_FOUND: the session is unknown, expired, unbound, lost or foreign. Its state is gone. */
export class SessionNotFoundError extends RpcError {}

/** DEADLINE_EXCEEDED: the per-call timeout passed; the Python code was interrupted. */
export class DeadlineExceededError extends RpcError {}

/**
 * RESOURCE_EXHAUSTED: no worker for a Bind (`no_workers_available`), the wait
 * queue is full, or a message was over the size limit.
 */
export class PoolExhaustedError extends RpcError {}

/** INVALID_ARGUMENT: empty code, a value nested too deep, invalid UTF-8, ... */
export class InvalidArgumentError extends RpcError {}

/**
 * INVALID_ARGUMENT `unknown ref`: a ref this session does not hold (released,
 * made up, from another session, or sent on a stateless call). The session
 * itself is fine.
 */
export class UnknownRefError extends InvalidArgumentError {}

/**
 * RESOURCE_EXHAUSTED from `--max_refs_per_session`: the result would pass the
 * session's live-ref limit and was refused whole. Release refs, then retry.
 */
export class RefLimitError extends PoolExhaustedError {}

/** UNAVAILABLE: the server is unreachable, draining or shutting down. Retry. */
export class UnavailableError extends RpcError {}

/** CANCELLED: the call was cancelled (AbortSignal); the Python code was interrupted. */
export class CancelledError extends RpcError {}

/** ABORTED: the worker died during the call (crash, kill, limit); its session is gone. */
export class WorkerDiedError extends RpcError {}

/** UNAUTHENTICATED: missing or wrong credentials (bearer token or client certificate). */
export class UnauthenticatedError extends RpcError {}

/** PERMISSION_DENIED: the principal may not do this. */
export class PermissionDeniedError extends RpcError {}

const BY_CODE: Partial<Record<status, typeof RpcError>> = {
  [status.NOT_FOUND]: SessionNotFoundError,
  [status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [status.RESOURCE_EXHAUSTED]: PoolExhaustedError,
  [status.INVALID_ARGUMENT]: InvalidArgumentError,
  [status.UNAVAILABLE]: UnavailableError,
  [status.CANCELLED]: CancelledError,
  [status.ABORTED]: WorkerDiedError,
  [status.UNAUTHENTICATED]: UnauthenticatedError,
  [status.PERMISSION_DENIED]: PermissionDeniedError,
};

/** Maps a grpc-js ServiceError (or anything thrown by a call) to a typed error. */
export function fromGrpcError(err: unknown): PyExecError {
  if (err instanceof PyExecError) return err;
  const e = err as { code?: unknown; details?: unknown; metadata?: unknown; message?: unknown };
  if (e && typeof e.code === 'number') {
    const details = typeof e.details === 'string' ? e.details : String(e.message ?? '');
    let Cls = BY_CODE[e.code as status] ?? RpcError;
    // The two ref conditions share their codes with older ones; pyexecd's
    // messages (documented in its README) tell them apart.
    if (e.code === status.INVALID_ARGUMENT && details.includes('unknown ref')) Cls = UnknownRefError;
    if (e.code === status.RESOURCE_EXHAUSTED && details.includes('max_refs_per_session')) Cls = RefLimitError;
    const md = e.metadata instanceof Metadata ? e.metadata : undefined;
    return new Cls(e.code as status, details, md, { cause: err });
  }
  return new PyExecError(String((err as Error)?.message ?? err), { cause: err });
}

/**
 * A CANCELLED status that carries no reason of the server's own: gRPC core
 * ends calls this way when the server shuts down (grpc/grpc#41785: bare
 * "CANCELLED"), and grpc-js reports a server's RST_STREAM(CANCEL) as "Call
 * cancelled". pyexecd's own CANCELLED statuses always say why (an Interrupt,
 * the client's cancel).
 */
function bareCancel(details: string): boolean {
  return /^\s*((call )?cancell?ed\.?)?\s*$/i.test(details);
}

/**
 * Maps the failure of a call: as fromGrpcError, except that a bare CANCELLED
 * the client did not cause itself (no AbortSignal, no interrupt of its own,
 * no early exit from a stream) is an UnavailableError, retryable like the
 * drain it comes from.
 */
export function callError(err: unknown, cancelledHere: boolean): PyExecError {
  const e = fromGrpcError(err);
  if (!cancelledHere && e instanceof CancelledError && bareCancel(e.details)) {
    return new UnavailableError(
      status.UNAVAILABLE,
      `the server ended the call with a bare CANCELLED (${JSON.stringify(e.details)}): it is shutting down; retry`,
      e.metadata,
      { cause: err },
    );
  }
  return e;
}
