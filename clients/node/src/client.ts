// The pyexec client: stateless calls, scoped sessions, numbered shared
// contexts and stats, over one grpc-js channel.
//
// Every RPC goes through Core.unary or Core.stream, the two places that
// apply the per-call deadline, the AbortSignal, the bearer metadata and the
// error mapping, so unary calls and streams behave the same.

import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { CancelledError, PyExecError, PythonError, SessionNotFoundError, WorkerDiedError, fromGrpcError } from './errors';
import { PyInput, PyValue, Ref, ValueOptions, fromWire, toWire, toWireMap } from './values';
import type {
  WireBindResponse,
  WireInterruptResponse,
  WireReleaseResponse,
  WireStreamEvent,
  WireCallRequest,
  WireEvalRequest,
  WireEvalResponse,
  WireExecRequest,
  WireExecResponse,
  WireGetStatsResponse,
  WirePythonError,
} from './wire';

/** TLS settings. PEM contents (not paths): use fs.readFileSync. */
export interface TlsOptions {
  /** CA certificates to trust; default: the system roots. */
  rootCerts?: Buffer | string | undefined;
  /** Client certificate chain, for mTLS (with privateKey). */
  certChain?: Buffer | string | undefined;
  /** Client private key, for mTLS (with certChain). */
  privateKey?: Buffer | string | undefined;
  /** Expected server name when it differs from the address host (tests, IPs). */
  serverNameOverride?: string | undefined;
}

/** Options of `new Client(address, options)`. */
export interface ClientOptions {
  /** TLS: `true` for system roots, or TlsOptions. Default: plaintext. */
  tls?: boolean | TlsOptions | undefined;
  /** Bearer token, sent as `authorization: Bearer TOKEN` on every call. */
  token?: string | undefined;
  /** Extra metadata sent on every call. */
  metadata?: Record<string, string> | undefined;
  /** Timeout of calls that pass none; default: none (the server's --default_timeout applies). */
  defaultTimeoutMs?: number | undefined;
  /** Number of shared contexts that `context(n)` picks from; default 4. */
  numContexts?: number | undefined;
  /** Idle timeout asked for context sessions; 0 = server default. */
  contextIdleTimeoutSeconds?: number | undefined;
  /** Value mapping (ints, dicts); see values.ts. */
  values?: ValueOptions | undefined;
  /** Largest message received or sent; default 64 MiB, pyexecd's default. */
  maxMessageBytes?: number | undefined;
  /** Raw grpc-js channel options, applied last. */
  channelOptions?: grpc.ChannelOptions | undefined;
}

/** Per-call options. */
export interface CallOptions {
  /** Timeout in milliseconds, sent as the gRPC deadline. */
  timeoutMs?: number | undefined;
  /** Cancels the call; the server interrupts the Python code. */
  signal?: AbortSignal | undefined;
}

/** Options of exec and execStream. */
export interface ExecOptions extends CallOptions {
  /** Names visible to this call only. */
  locals?: Record<string, PyInput> | Map<string, PyInput> | undefined;
}

/** Options of eval. */
export interface EvalOptions extends ExecOptions {
  /**
   * Return the result as a `Ref` even when it has a value mapping (bound
   * sessions only; a stateless call rejects with InvalidArgumentError).
   */
  resultAsRef?: boolean | undefined;
}

/** Options of call, callStream, callMethod and getattr. */
export interface CallFnOptions extends CallOptions {
  /** Keyword arguments. */
  kwargs?: Record<string, PyInput> | Map<string, PyInput> | undefined;
  /** As for eval: a `Ref` even for a convertible result (bound sessions). */
  resultAsRef?: boolean | undefined;
}

/** One event of execStream / callStream: an output chunk or a value. */
export type StreamEvent =
  | { type: 'stdout'; data: string }
  | { type: 'stderr'; data: string }
  /** callStream only: an item of an iterator result, or the one result. */
  | { type: 'value'; value: PyValue };

/** The events of execStream: output chunks only. */
export type OutputEvent = Extract<StreamEvent, { type: 'stdout' | 'stderr' }>;

/** Options of bind and withSession. */
export interface BindOptions extends CallOptions {
  /** Idle timeout of the session; 0 or absent = the server default. */
  idleTimeoutSeconds?: number | undefined;
}

/** Output the Python code wrote during one call (bounded by the server). */
export interface Output {
  stdout: string;
  stderr: string;
}

/** A value with the output written while computing it. */
export interface Result extends Output {
  value: PyValue;
}

/** Pool figures from GetStats. */
export interface Stats {
  numWorkers: number;
  availableWorkers: number;
  checkedOut: number;
  pendingRequests: number;
  maxWorkers: number;
  startingWorkers: number;
  busyWorkers: number;
  workersSpawned: number;
  workersDied: number;
  callsTotal: number;
  sessions: number;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
};

type ServiceCtor = grpc.ServiceClientConstructor;
let serviceCtor: ServiceCtor | undefined;

function loadService(): ServiceCtor {
  if (serviceCtor === undefined) {
    // dist/src/client.js -> dist/proto/... (copied there by scripts/build.js).
    const file = path.join(__dirname, '..', 'proto', 'pyexec', 'v1', 'pyexec.proto');
    const def = protoLoader.loadSync(file, LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as { pyexec: { v1: { PyExec: ServiceCtor } } };
    serviceCtor = pkg.pyexec.v1.PyExec;
  }
  return serviceCtor;
}

function pem(v: Buffer | string | undefined): Buffer | null {
  if (v === undefined) return null;
  return typeof v === 'string' ? Buffer.from(v) : v;
}

function channelCredentials(tls: ClientOptions['tls']): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const t: TlsOptions = tls === true ? {} : tls;
  if ((t.certChain === undefined) !== (t.privateKey === undefined)) {
    throw new TypeError('pyexec: tls.certChain and tls.privateKey go together');
  }
  return grpc.credentials.createSsl(pem(t.rootCerts), pem(t.privateKey), pem(t.certChain));
}

function pythonError(e: WirePythonError, out: Partial<Output>): PythonError {
  return new PythonError(e.type ?? '', e.message ?? '', e.traceback ?? '', out.stdout ?? '', out.stderr ?? '');
}

/**
 * The channel and the per-call plumbing shared by a Client and its handles.
 * Internal: exported only so the declarations type-check; not in index.ts.
 */
export class Core {
  readonly stub: grpc.Client;
  readonly metadata: grpc.Metadata;

  constructor(
    address: string,
    readonly options: ClientOptions,
  ) {
    const Ctor = loadService();
    const max = options.maxMessageBytes ?? 64 * 1024 * 1024;
    const tls = options.tls && options.tls !== true ? options.tls : undefined;
    const chOpts: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': max,
      'grpc.max_send_message_length': max,
      ...(tls?.serverNameOverride ? { 'grpc.ssl_target_name_override': tls.serverNameOverride } : {}),
      ...options.channelOptions,
    };
    this.stub = new Ctor(address, channelCredentials(options.tls), chOpts);
    this.metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata ?? {})) this.metadata.set(k, v);
    // Sent as plain per-call metadata rather than grpc-js call credentials,
    // which grpc-js refuses to compose with a plaintext channel (a loopback
    // pyexecd with --auth_tokens_file and no TLS is a supported setup).
    if (options.token !== undefined) this.metadata.set('authorization', `Bearer ${options.token}`);
  }

  /** One unary RPC with deadline, cancel and typed errors. */
  unary<Req, Resp>(method: string, req: Req, opts: CallOptions = {}): Promise<Resp> {
    const signal = opts.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new CancelledError(grpc.status.CANCELLED, 'aborted before the call was sent', undefined, { cause: signal.reason }),
      );
    }
    const timeoutMs = opts.timeoutMs ?? this.options.defaultTimeoutMs;
    const callOpts: grpc.CallOptions = {};
    if (timeoutMs !== undefined) callOpts.deadline = new Date(Date.now() + timeoutMs);
    return new Promise<Resp>((resolve, reject) => {
      const fn = (this.stub as unknown as Record<string, Function>)[method];
      let onAbort: (() => void) | undefined;
      let call: grpc.ClientUnaryCall;
      try {
        call = fn.call(this.stub, req, this.metadata, callOpts, (err: grpc.ServiceError | null, resp: Resp) => {
          if (onAbort) signal!.removeEventListener('abort', onAbort);
          if (err) reject(fromGrpcError(err));
          else resolve(resp);
        });
      } catch (e) {
        // grpc-js throws synchronously on a closed channel or a request it
        // cannot serialize; keep the one error hierarchy.
        reject(fromGrpcError(e));
        return;
      }
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /**
   * One server-streaming RPC as an async generator, with the same deadline,
   * cancel and typed errors as unary. Leaving the iteration early (break,
   * return, a throw in the loop body) cancels the RPC, which interrupts the
   * Python code; a bound session keeps its state. Messages are read on
   * demand, so a slow consumer holds the server back (flow control) instead
   * of buffering the whole stream here.
   */
  async *stream<Req, Resp>(method: string, req: Req, opts: CallOptions = {}): AsyncGenerator<Resp, void, undefined> {
    const signal = opts.signal;
    if (signal?.aborted) {
      throw new CancelledError(grpc.status.CANCELLED, 'aborted before the call was sent', undefined, {
        cause: signal.reason,
      });
    }
    const timeoutMs = opts.timeoutMs ?? this.options.defaultTimeoutMs;
    const callOpts: grpc.CallOptions = {};
    if (timeoutMs !== undefined) callOpts.deadline = new Date(Date.now() + timeoutMs);
    const fn = (this.stub as unknown as Record<string, Function>)[method];
    let call: grpc.ClientReadableStream<Resp>;
    try {
      call = fn.call(this.stub, req, this.metadata, callOpts);
    } catch (e) {
      throw fromGrpcError(e);
    }
    // Errors reach the caller through the iterator; this listener only keeps
    // the CANCELLED that follows an early exit from being an unhandled
    // 'error' event.
    call.on('error', () => {});
    const onAbort = () => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    let finished = false;
    try {
      for await (const msg of call as AsyncIterable<Resp>) yield msg;
      finished = true;
    } catch (e) {
      finished = true;
      throw fromGrpcError(e);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished) call.cancel();
    }
  }

  async bind(opts: BindOptions = {}): Promise<WireBindResponse> {
    return this.unary<object, WireBindResponse>('Bind', { idle_timeout_seconds: opts.idleTimeoutSeconds ?? 0 }, opts);
  }

  async unbind(token: string, opts: CallOptions = {}): Promise<void> {
    await this.unary('Unbind', { session: token }, opts);
  }
}

/**
 * Eval/exec/call against one target: the pool (stateless) for a Client, a
 * bound interpreter for a Session or a Context.
 */
export abstract class Executor {
  /** @internal */
  protected constructor(protected readonly core: Core) {}

  /** The session token to send; '' for stateless. */
  protected abstract target(opts: CallOptions): Promise<string> | string;

  /** Hook: a call on `token` failed with `err` (contexts forget lost sessions). */
  protected failed(_token: string, _err: unknown): void {}

  private async run<Resp>(method: string, build: (token: string) => object, opts: CallOptions): Promise<Resp> {
    const token = await this.target(opts);
    try {
      return await this.core.unary<object, Resp>(method, build(token), opts);
    } catch (err) {
      this.failed(token, err);
      throw err;
    }
  }

  private async *runStream(
    method: string,
    build: (token: string) => object,
    opts: CallOptions,
  ): AsyncGenerator<WireStreamEvent, void, undefined> {
    const token = await this.target(opts);
    try {
      yield* this.core.stream<object, WireStreamEvent>(method, build(token), opts);
    } catch (err) {
      this.failed(token, err);
      throw err;
    }
  }

  /**
   * The events of one stream, native. The `end` event is held until the RPC
   * itself has ended OK, so a Python error never races the status.
   */
  private async *events(
    method: string,
    build: (token: string) => object,
    opts: CallOptions,
  ): AsyncGenerator<StreamEvent, void, undefined> {
    let end: WireStreamEvent['end'] | undefined;
    for await (const ev of this.runStream(method, build, opts)) {
      switch (ev.event) {
        case 'stdout':
          yield { type: 'stdout', data: ev.stdout ?? '' };
          break;
        case 'stderr':
          yield { type: 'stderr', data: ev.stderr ?? '' };
          break;
        case 'value':
          yield { type: 'value', value: fromWire(ev.value, this.vopts) };
          break;
        case 'end':
          end = ev.end ?? {};
          break;
        default:
          // An event kind added to the API after this client was built.
          break;
      }
    }
    if (end === undefined) throw new PyExecError('pyexec: stream ended without its end event');
    // The output was already streamed, so the error carries none.
    if (end.error) throw pythonError(end.error, {});
  }

  private get vopts(): ValueOptions {
    return this.core.options.values ?? {};
  }

  /**
   * Evaluates one expression; resolves to its value, or rejects with
   * PythonError. `T` is an unchecked annotation (`eval<number>('1+1')`).
   */
  async eval<T extends PyValue = PyValue>(code: string, opts: EvalOptions = {}): Promise<T> {
    return (await this.evalResult(code, opts)).value as T;
  }

  /** Like eval, with the call's stdout and stderr. */
  async evalResult(code: string, opts: EvalOptions = {}): Promise<Result> {
    const locals = toWireMap(opts.locals, this.vopts);
    const resultAsRef = opts.resultAsRef === true;
    const resp = await this.run<WireEvalResponse>(
      'Eval',
      (session): WireEvalRequest => ({ session, code, locals, result_as_ref: resultAsRef }),
      opts,
    );
    return this.result(resp);
  }

  /** Executes statements; resolves to their output, or rejects with PythonError. */
  async exec(code: string, opts: ExecOptions = {}): Promise<Output> {
    const locals = toWireMap(opts.locals, this.vopts);
    const resp = await this.run<WireExecResponse>(
      'Exec',
      (session): WireExecRequest => ({ session, code, locals }),
      opts,
    );
    const out = { stdout: resp.stdout ?? '', stderr: resp.stderr ?? '' };
    if (resp.error) throw pythonError(resp.error, out);
    return out;
  }

  /**
   * Calls module.fn(*args, **kwargs). `module` may be "builtins" or
   * "__main__" (the session's namespace); `fn` may be dotted ("str.upper").
   * `T` is an unchecked annotation, as for eval.
   */
  async call<T extends PyValue = PyValue>(
    module: string,
    fn: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): Promise<T> {
    return (await this.callResult(module, fn, args, opts)).value as T;
  }

  /** Like call, with the call's stdout and stderr. */
  async callResult(module: string, fn: string, args: readonly PyInput[] = [], opts: CallFnOptions = {}): Promise<Result> {
    return this.callWire(this.callRequest(module, fn, args, opts), opts);
  }

  /**
   * Executes statements, streaming their output as it is written (chunks at
   * line ends or every 50 ms). Iterate with `for await`; the iteration ends
   * when the code returns, or throws its PythonError or a typed status
   * error. Leaving the loop early cancels the call (Python is interrupted; a
   * bound session keeps its state).
   */
  execStream(code: string, opts: ExecOptions = {}): AsyncGenerator<OutputEvent, void, undefined> {
    // Converted now, so a value with no mapping throws here, not on first next().
    const locals = toWireMap(opts.locals, this.vopts);
    return this.events(
      'ExecStream',
      (session): WireExecRequest => ({ session, code, locals }),
      opts,
    ) as AsyncGenerator<OutputEvent, void, undefined>;
  }

  /**
   * Calls module.fn(*args, **kwargs) and streams the result: one `value`
   * event per item when it is an iterator or generator (each sent as it is
   * made), else one `value` event; output chunks interleave in order. Ends
   * as execStream does.
   */
  callStream(
    module: string,
    fn: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): AsyncGenerator<StreamEvent, void, undefined> {
    const req = this.callRequest(module, fn, args, opts);
    return this.events('CallStream', (session) => ({ ...req, session }), opts);
  }

  /** @internal The CallRequest without its session. */
  protected callRequest(
    module: string,
    fn: string,
    args: readonly PyInput[],
    opts: CallFnOptions,
    extra: Partial<WireCallRequest> = {},
  ): WireCallRequest {
    return {
      module,
      function: fn,
      args: args.map((a) => toWire(a, this.vopts)),
      kwargs: toWireMap(opts.kwargs, this.vopts),
      result_as_ref: opts.resultAsRef === true,
      ...extra,
    };
  }

  /** @internal */
  protected async callWire(req: WireCallRequest, opts: CallOptions): Promise<Result> {
    const resp = await this.run<WireEvalResponse>('Call', (session) => ({ ...req, session }), opts);
    return this.result(resp);
  }

  private result(resp: WireEvalResponse): Result {
    const out = { stdout: resp.stdout ?? '', stderr: resp.stderr ?? '' };
    if (resp.error) throw pythonError(resp.error, out);
    return { value: fromWire(resp.value, this.vopts), ...out };
  }
}

/**
 * Calls that only make sense on a bound interpreter (a Session or a
 * Context): object references and Interrupt.
 */
export abstract class BoundExecutor extends Executor {
  /** The token if bound; undefined for a Context that has not bound yet. */
  protected abstract boundToken(): Promise<string | undefined>;

  /**
   * Calls method `name` (may be dotted: "inner.run") of the object `ref`
   * holds: `ref.name(*args, **kwargs)`.
   */
  async callMethod<T extends PyValue = PyValue>(
    ref: Ref,
    name: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): Promise<T> {
    const req = this.callRequest('', name, args, opts, { target_ref: refId(ref) });
    return (await this.callWire(req, opts)).value as T;
  }

  /** Reads attribute `name` (may be dotted) of the object `ref` holds. */
  async getattr<T extends PyValue = PyValue>(ref: Ref, name: string, opts: CallFnOptions = {}): Promise<T> {
    const req = this.callRequest('', name, [], opts, { target_ref: refId(ref), get_attribute: true });
    return (await this.callWire(req, opts)).value as T;
  }

  /**
   * Drops refs (or ref ids) so their objects can be freed; resolves to how
   * many were live. Unknown or already released ids are ignored. Using a
   * released ref afterwards rejects with InvalidArgumentError.
   */
  async release(...refs: Array<Ref | string>): Promise<number> {
    const token = await this.boundToken();
    if (token === undefined || refs.length === 0) return 0;
    const ids = refs.map(refId);
    const r = await this.core.unary<object, WireReleaseResponse>('Release', { session: token, ref_ids: ids });
    return r.released ?? 0;
  }

  /**
   * Interrupts the call running on this session (from any caller): it
   * rejects with CancelledError and the session keeps its state. Resolves
   * to false when nothing was running.
   */
  async interrupt(opts: CallOptions = {}): Promise<boolean> {
    const token = await this.boundToken();
    if (token === undefined) return false;
    const r = await this.core.unary<object, WireInterruptResponse>('Interrupt', { session: token }, opts);
    return r.interrupted === true;
  }
}

function refId(r: Ref | string): string {
  if (typeof r === 'string') return r;
  if (r instanceof Ref) return r.id;
  throw new TypeError('pyexec: expected a Ref or a ref id');
}

/**
 * A bound session: one dedicated interpreter whose state persists across
 * calls until unbind(). Prefer `client.withSession(fn)` or `await using`,
 * which always unbind.
 */
export class Session extends BoundExecutor {
  private closed = false;

  /** @internal */
  constructor(
    core: Core,
    /** The session token. */
    readonly token: string,
    /** The idle timeout the server granted (0 when unknown). */
    readonly idleTimeoutSeconds: number,
  ) {
    super(core);
  }

  protected target(): string {
    return this.token;
  }

  protected async boundToken(): Promise<string> {
    return this.token;
  }

  /** Releases the interpreter. Idempotent. */
  async unbind(opts: CallOptions = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.core.unbind(this.token, opts);
  }

  /** `await using s = await client.bind()` unbinds at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unbind();
  }
}

/**
 * Numbered shared context, like erlang_python's py:context(N): a session
 * bound lazily on first use and shared by every caller that picks the same
 * number. Calls on it run one at a time, in arrival order. If its session is
 * lost (NOT_FOUND or ABORTED), the call rejects and the next call binds a
 * fresh session (the old state is gone). Unbound by client.close().
 */
export class Context extends BoundExecutor {
  private session: Promise<Session> | undefined;

  /** @internal */
  constructor(
    core: Core,
    /** The context number, 1-based. */
    readonly number: number,
  ) {
    super(core);
  }

  protected async target(opts: CallOptions): Promise<string> {
    if (this.session === undefined) {
      const bound = this.core
        .bind({ idleTimeoutSeconds: this.core.options.contextIdleTimeoutSeconds, timeoutMs: opts.timeoutMs })
        .then((r) => new Session(this.core, r.session ?? '', r.idle_timeout_seconds ?? 0));
      this.session = bound;
      // A failed bind is not cached: the next call tries again.
      bound.catch(() => {
        if (this.session === bound) this.session = undefined;
      });
    }
    return (await this.session).token;
  }

  protected async boundToken(): Promise<string | undefined> {
    try {
      return (await this.session)?.token;
    } catch {
      return undefined; // the bind failed: nothing to release or interrupt
    }
  }

  protected override failed(token: string, err: unknown): void {
    if (!(err instanceof SessionNotFoundError || err instanceof WorkerDiedError)) return;
    const current = this.session;
    current?.then(
      (s) => {
        if (s.token === token && this.session === current) this.session = undefined;
      },
      () => {},
    );
  }

  /** Unbinds the context's session now; the next call binds a fresh one. */
  async reset(opts: CallOptions = {}): Promise<void> {
    const s = this.session;
    this.session = undefined;
    if (s === undefined) return;
    let session: Session;
    try {
      session = await s;
    } catch {
      return; // never bound
    }
    await session.unbind(opts);
  }
}

/**
 * A connection to pyexecd. Its eval/exec/call are stateless (a pooled
 * interpreter, no state kept between calls). Thread-safe in the Node sense:
 * any number of calls may be in flight at once on the one channel.
 */
export class Client extends Executor {
  private readonly contexts: Context[];
  private nextContext = 0;

  /** `address` is host:port, e.g. "127.0.0.1:50051". */
  constructor(address: string, options: ClientOptions = {}) {
    super(new Core(address, options));
    const n = options.numContexts ?? 4;
    if (!Number.isInteger(n) || n < 1) throw new RangeError('pyexec: numContexts must be a positive integer');
    this.contexts = Array.from({ length: n }, (_, i) => new Context(this.core, i + 1));
  }

  protected target(): string {
    return '';
  }

  /** Binds a session. The caller must unbind it; prefer withSession or `await using`. */
  async bind(opts: BindOptions = {}): Promise<Session> {
    const r = await this.core.bind(opts);
    return new Session(this.core, r.session ?? '', r.idle_timeout_seconds ?? 0);
  }

  /**
   * Binds a session, runs fn with it, and unbinds it whether fn resolves or
   * rejects. Resolves to fn's result. An unbind failure after fn rejected is
   * dropped in favour of fn's error.
   */
  async withSession<T>(fn: (s: Session) => Promise<T> | T, opts: BindOptions = {}): Promise<T> {
    const s = await this.bind(opts);
    let ok = false;
    try {
      const r = await fn(s);
      ok = true;
      return r;
    } finally {
      // Not under the caller's signal: cleanup must run even after an abort.
      const unbinding = s.unbind({ timeoutMs: opts.timeoutMs });
      if (ok) await unbinding;
      else await unbinding.catch(() => {});
    }
  }

  /** A handle on an existing session token (e.g. one stored elsewhere). */
  session(token: string): Session {
    return new Session(this.core, token, 0);
  }

  /**
   * Shared context number n (1..numContexts). Without n, contexts are handed
   * out round-robin, spreading callers over the interpreters.
   */
  context(n?: number): Context {
    if (n === undefined) {
      n = (this.nextContext % this.contexts.length) + 1;
      this.nextContext = n;
    }
    if (!Number.isInteger(n) || n < 1 || n > this.contexts.length) {
      throw new RangeError(`pyexec: context number must be 1..${this.contexts.length}, got ${n}`);
    }
    return this.contexts[n - 1];
  }

  /** The number of shared contexts. */
  get numContexts(): number {
    return this.contexts.length;
  }

  /** Pool figures. */
  async getStats(opts: CallOptions = {}): Promise<Stats> {
    const r = await this.core.unary<object, WireGetStatsResponse>('GetStats', {}, opts);
    return {
      numWorkers: r.num_workers ?? 0,
      availableWorkers: r.available_workers ?? 0,
      checkedOut: r.checked_out ?? 0,
      pendingRequests: r.pending_requests ?? 0,
      maxWorkers: r.max_workers ?? 0,
      startingWorkers: r.starting_workers ?? 0,
      busyWorkers: r.busy_workers ?? 0,
      workersSpawned: Number(r.workers_spawned ?? 0),
      workersDied: Number(r.workers_died ?? 0),
      callsTotal: Number(r.calls_total ?? 0),
      sessions: r.sessions ?? 0,
    };
  }

  /** Waits until the channel is connected, or rejects after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.core.stub.waitForReady(new Date(Date.now() + timeoutMs), (err) => (err ? reject(fromGrpcError(err)) : resolve()));
    });
  }

  /** Unbinds the shared contexts (best effort) and closes the channel. */
  async close(): Promise<void> {
    await Promise.allSettled(this.contexts.map((c) => c.reset({ timeoutMs: 5000 })));
    this.core.stub.close();
  }

  /** `await using client = new Client(...)` closes at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
