// The pyexec client: stateless calls, scoped and leased sessions, numbered
// shared contexts, callbacks from Python and stats, over one grpc-js channel
// (plus one per session owner when routing to owners is on).
//
// Every RPC goes through Core.unary, Core.stream or Core.run, the places
// that apply the per-call deadline, the AbortSignal, the metadata (bearer,
// x-pyexec-call-id, x-pyexec-callback), owner routing, the one retry of a
// session call on UNAVAILABLE and the error mapping, so every call behaves
// the same.

import { AsyncLocalStorage } from 'async_hooks';
import { randomBytes } from 'crypto';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import {
  CancelledError,
  PyExecError,
  PythonError,
  SessionNotFoundError,
  UnavailableError,
  WorkerDiedError,
  callError,
  fromGrpcError,
} from './errors';
import {
  AttachCodec,
  AttachTransport,
  GrpcAttachTransport,
  H2AttachTransport,
  Lease,
  LeaseHost,
  SessionRoute,
  TlsSettings,
  h2Target,
} from './lease';
import { PyInput, PyValue, Ref, ValueOptions, fromWire, toWire, toWireMap } from './values';
import type {
  WireAttachEvent,
  WireBindRequest,
  WireBindResponse,
  WireCallbackRequest,
  WireCallbackResult,
  WireCallRequest,
  WireEvalRequest,
  WireEvalResponse,
  WireExecRequest,
  WireExecResponse,
  WireGetStatsResponse,
  WireInterruptResponse,
  WireLostName,
  WirePythonError,
  WireReleaseResponse,
  WireRunEvent,
  WireRunRequest,
  WireSnapshotResponse,
  WireStreamEvent,
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
  /**
   * Lease the sessions this client binds (bind, withSession, contexts);
   * default true. A leased session ends when the client closes or the
   * process exits (after the server's --lease_grace). `false`: sessions
   * live until unbound or idle for their idle timeout.
   */
  lease?: boolean | undefined;
  /**
   * Send a session's calls straight to the replica that holds it (its
   * `owner`, from Bind or the x-pyexec-owner metadata of a forwarded call),
   * on a channel of its own with the same credentials, instead of through
   * `address` (a balancer). When the owner cannot be reached (connect
   * failure or UNAVAILABLE) the call goes through `address` again. Default
   * false: enable it where the client can reach the replicas (inside the
   * cluster).
   */
  routeToOwner?: boolean | undefined;
  /** How long a first connection to an owner may take before `address` is used instead; default 1000 ms. */
  ownerConnectTimeoutMs?: number | undefined;
}

/**
 * A function Python can call with `pyexec.call(name, *args, **kwargs)`. It
 * gets the positional arguments; keyword arguments, if Python passed any,
 * come as one more argument, a plain object. It returns a value (or a
 * Promise of one) with a Python mapping, or throws: Python then raises
 * `pyexec.CallbackError` with the error's message (`${err.name}: ${err.message}`).
 */
export type CallbackFunction = (...args: PyValue[]) => CallbackReturn | Promise<CallbackReturn>;

/**
 * What a callback function returns: any value with a Python mapping, or
 * its arguments as they came (an `Opaque` among them fails when sent back,
 * and Python sees a CallbackError); `undefined` is None.
 */
export type CallbackReturn = PyInput | PyValue | void;

/** Per-call options. */
export interface CallOptions {
  /** Timeout in milliseconds, sent as the gRPC deadline. */
  timeoutMs?: number | undefined;
  /** Cancels the call; the server interrupts the Python code. */
  signal?: AbortSignal | undefined;
}

/** Options of the calls whose Python code may call back (eval, exec, call and their forms). */
export interface CallbackOptions extends CallOptions {
  /**
   * Functions Python may call during this call only, in addition to the
   * client's registered ones (these win on a name clash). Given at all (even
   * `{}`), the call travels as a Run, so that Python's `pyexec.call` of a
   * name nobody registered raises `CallbackError` (not the RuntimeError of
   * a call that takes no callbacks).
   */
  functions?: Record<string, CallbackFunction> | Map<string, CallbackFunction> | undefined;
}

/** Options of exec and execStream. */
export interface ExecOptions extends CallbackOptions {
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
export interface CallFnOptions extends CallbackOptions {
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

/** A session's state as Snapshot returns it; `client.bind({ restore })` restores it. */
export interface Snapshot {
  /** Opaque and authenticated; restorable by the same principal only. */
  blob: Buffer;
  /** What could not be carried (sockets, threads, ...): missing after a restore. */
  lost: LostName[];
  /** Modules re-imported by name on restore. */
  modules: string[];
  /** Live refs carried, under the same ids. */
  refs: number;
}

/** A name a snapshot left out, and why. */
export interface LostName {
  name: string;
  type: string;
  reason: string;
}

/** Options of bind and withSession. */
export interface BindOptions extends CallOptions {
  /** Idle timeout of the session; 0 or absent = the server default. */
  idleTimeoutSeconds?: number | undefined;
  /** Lease the session (default: the client's `lease` option, true). */
  lease?: boolean | undefined;
  /** Start from this state: a Snapshot (or its blob) of `session.snapshot()`. */
  restore?: Snapshot | Uint8Array | undefined;
}

/** Options of `client.session(token, options)`. */
export interface SessionOptions {
  /** Lease the session from this handle too; default false. */
  lease?: boolean | undefined;
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
  /** This replica's advertised address ('' when it runs alone). */
  replica: string;
  /** How many more sessions can be bound now (0: every Bind is refused). */
  bindableWorkers: number;
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
let loaded: { ctor: ServiceCtor; attach: AttachCodec } | undefined;

function loadService(): { ctor: ServiceCtor; attach: AttachCodec } {
  if (loaded === undefined) {
    // dist/src/client.js -> dist/proto/... (copied there by scripts/build.js).
    const file = path.join(__dirname, '..', 'proto', 'pyexec', 'v1', 'pyexec.proto');
    const def = protoLoader.loadSync(file, LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as { pyexec: { v1: { PyExec: ServiceCtor } } };
    const ctor = pkg.pyexec.v1.PyExec;
    const attach = ctor.service.Attach;
    loaded = {
      ctor,
      attach: {
        serialize: (req) => attach.requestSerialize(req),
        deserialize: (buf) => attach.responseDeserialize(buf) as WireAttachEvent,
      },
    };
  }
  return loaded;
}

function pem(v: Buffer | string | undefined): Buffer | null {
  if (v === undefined) return null;
  return typeof v === 'string' ? Buffer.from(v) : v;
}

function tlsSettings(tls: ClientOptions['tls']): TlsSettings | undefined {
  if (!tls) return undefined;
  const t: TlsOptions = tls === true ? {} : tls;
  if ((t.certChain === undefined) !== (t.privateKey === undefined)) {
    throw new TypeError('pyexec: tls.certChain and tls.privateKey go together');
  }
  return {
    rootCerts: pem(t.rootCerts),
    certChain: pem(t.certChain),
    privateKey: pem(t.privateKey),
    serverNameOverride: t.serverNameOverride,
  };
}

function channelCredentials(tls: TlsSettings | undefined): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.rootCerts, tls.privateKey, tls.certChain);
}

function pythonError(e: WirePythonError, out: Partial<Output>): PythonError {
  return new PythonError(e.type ?? '', e.message ?? '', e.traceback ?? '', out.stdout ?? '', out.stderr ?? '');
}

function lostNames(l: WireLostName[] | undefined): LostName[] {
  return (l ?? []).map((n) => ({ name: n.name ?? '', type: n.type ?? '', reason: n.reason ?? '' }));
}

function abortedError(signal: AbortSignal): CancelledError {
  return new CancelledError(grpc.status.CANCELLED, 'aborted before the call was sent', undefined, { cause: signal.reason });
}

function headerValue(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * The callback whose function is running, if any: calls made from inside a
 * callback function carry its id (x-pyexec-callback) so that they run on
 * the interpreter waiting for it (re-entry) instead of queueing behind it.
 */
const callbackScope = new AsyncLocalStorage<string>();

/**
 * The promise of a call that has been started, with the means to interrupt
 * that very call. Await it like any promise (`then`, `catch` and `finally`
 * give plain promises).
 */
export class PendingCall<T> extends Promise<T> {
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  /**
   * The call's name, sent as x-pyexec-call-id; `session.interrupt(id)`
   * interrupts it too.
   */
  declare readonly id: string;

  /** @internal */
  static start<T>(p: Promise<T>, id: string, interrupt: (opts: CallOptions) => Promise<boolean>): PendingCall<T> {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const pc = new PendingCall<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    p.then(resolve, reject);
    Object.defineProperty(pc, 'id', { value: id, enumerable: true });
    interrupters.set(pc, interrupt);
    return pc;
  }

  /**
   * Interrupts this call, whether it runs, waits behind another call or has
   * not reached the server yet (pyexecd holds an Interrupt that comes first
   * for 10 s): it rejects with CancelledError and a session keeps its state.
   * Resolves to false if the call had already ended. A stateless call is
   * cancelled (its RPC), which interrupts its Python code the same way.
   */
  interrupt(opts: CallOptions = {}): Promise<boolean> {
    const f = interrupters.get(this);
    if (f === undefined) return Promise.resolve(false);
    // The call is meant to fail now: its rejection is not an unhandled one
    // while the caller awaits this (it still rejects for whoever awaits it).
    this.then(undefined, () => {});
    return f(opts);
  }
}

const interrupters = new WeakMap<PendingCall<unknown>, (opts: CallOptions) => Promise<boolean>>();

/** Local cancellation of one call (its interrupt, when stateless). */
class CallControl {
  cancelled = false;
  settled = false;
  /** The promise of the call, once made. */
  pending: PendingCall<unknown> | undefined;
  private readonly listeners = new Set<() => void>();

  /** Cancels the call; false if it had already ended. */
  cancel(): boolean {
    if (this.settled) return false;
    if (!this.cancelled) {
      this.cancelled = true;
      for (const f of this.listeners) f();
    }
    return true;
  }

  /** Runs f on cancel; returns the unsubscribe. */
  onCancel(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
}

/** What Core needs to know about one call. */
interface CallCtx {
  /** A session call: owner routing and one retry on UNAVAILABLE. */
  route?: SessionRoute | undefined;
  /** x-pyexec-call-id. */
  callId?: string | undefined;
  control?: CallControl | undefined;
}

/** A channel to one session owner. */
class OwnerChannel {
  badUntil = 0;
  constructor(
    readonly address: string,
    readonly stub: grpc.Client,
  ) {}
  /**
   * The owner did not answer: pass it over for a while, and forget it as
   * the session's owner (the session may have moved; the next forwarded
   * call names the new one).
   */
  markDown(route?: SessionRoute): void {
    this.badUntil = Date.now() + OWNER_RETRY_MS;
    if (route?.owner === this.address) route.owner = undefined;
  }
}

/** How long an owner that could not be reached is passed over. */
const OWNER_RETRY_MS = 10_000;
/** How long a session call is retried while the server says the session is moving. */
const MOVE_RETRY_MS = 5_000;

type RunKind = 'eval' | 'exec' | 'call';
const RUN_METHOD: Record<RunKind, string> = { eval: 'Eval', exec: 'Exec', call: 'Call' };

/** A failure of a Run, and whether the client had answered a callback (then it is not retried). */
class RunFailure {
  constructor(
    readonly error: PyExecError,
    readonly sawCallback: boolean,
  ) {}
}

/**
 * The channel and the per-call plumbing shared by a Client and its handles.
 * Internal: exported only so the declarations type-check; not in index.ts.
 */
export class Core implements LeaseHost {
  readonly stub: grpc.Client;
  readonly metadata: grpc.Metadata;
  /** Functions registered with client.registerFunction. */
  readonly functions = new Map<string, CallbackFunction>();
  private readonly ctor: ServiceCtor;
  private readonly tls: TlsSettings | undefined;
  private readonly chOpts: grpc.ChannelOptions;
  private readonly owners = new Map<string, OwnerChannel>();
  private readonly attachTransports = new Map<string, AttachTransport>();
  private readonly leases = new Set<Lease>();
  private readonly callPrefix = randomBytes(8).toString('hex');
  private seq = 0;
  private closed = false;

  constructor(
    readonly address: string,
    readonly options: ClientOptions,
  ) {
    const svc = loadService();
    this.ctor = svc.ctor;
    const max = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.tls = tlsSettings(options.tls);
    this.chOpts = {
      'grpc.max_receive_message_length': max,
      'grpc.max_send_message_length': max,
      ...(this.tls?.serverNameOverride ? { 'grpc.ssl_target_name_override': this.tls.serverNameOverride } : {}),
      ...options.channelOptions,
    };
    this.stub = new this.ctor(address, channelCredentials(this.tls), this.chOpts);
    this.metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata ?? {})) this.metadata.set(k, v);
    // Sent as plain per-call metadata rather than grpc-js call credentials,
    // which grpc-js refuses to compose with a plaintext channel (a loopback
    // pyexecd with --auth_tokens_file and no TLS is a supported setup).
    if (options.token !== undefined) this.metadata.set('authorization', `Bearer ${options.token}`);
  }

  /** A fresh, unique call name (x-pyexec-call-id). */
  newCallId(): string {
    return `${this.callPrefix}-${(++this.seq).toString(36)}`;
  }

  /** The metadata of one call: the client's, its name, and the callback it runs inside of. */
  private metadataFor(callId: string | undefined): grpc.Metadata {
    const md = this.metadata.clone();
    if (callId !== undefined) md.set('x-pyexec-call-id', callId);
    const cb = callbackScope.getStore();
    if (cb !== undefined) md.set('x-pyexec-callback', cb);
    return md;
  }

  private callOptions(opts: CallOptions): grpc.CallOptions {
    const timeoutMs = opts.timeoutMs ?? this.options.defaultTimeoutMs;
    const callOpts: grpc.CallOptions = {};
    if (timeoutMs !== undefined) callOpts.deadline = new Date(Date.now() + timeoutMs);
    return callOpts;
  }

  private preflight(opts: CallOptions, ctx: CallCtx): PyExecError | undefined {
    if (opts.signal?.aborted) return abortedError(opts.signal);
    if (ctx.control?.cancelled) {
      return new CancelledError(grpc.status.CANCELLED, 'interrupted before the call was sent');
    }
    return undefined;
  }

  // ---- owner routing

  /** The channel to a session's owner, when routing to owners is on and it is reachable. */
  private async ownerFor(route: SessionRoute | undefined): Promise<OwnerChannel | undefined> {
    if (!this.options.routeToOwner || route?.owner === undefined || route.owner === this.address || this.closed) return undefined;
    let oc = this.owners.get(route.owner);
    if (oc === undefined) {
      const opts: grpc.ChannelOptions = { ...this.chOpts };
      // The owner is dialled by its address, but it is the same service:
      // TLS checks the name the client was given, never one a server named.
      if (this.tls && opts['grpc.ssl_target_name_override'] === undefined) {
        const host = /^(?:dns:\/\/\/)?(\[[^\]]+\]|[^:]+)/.exec(this.address)?.[1];
        if (host !== undefined) opts['grpc.ssl_target_name_override'] = host.replace(/^\[|\]$/g, '');
      }
      oc = new OwnerChannel(route.owner, new this.ctor(route.owner, channelCredentials(this.tls), opts));
      this.owners.set(route.owner, oc);
    }
    if (Date.now() < oc.badUntil) return undefined;
    const ch = oc.stub.getChannel();
    const state = ch.getConnectivityState(true);
    if (state === grpc.connectivityState.READY) return oc;
    if (state === grpc.connectivityState.SHUTDOWN) return undefined;
    if (state === grpc.connectivityState.TRANSIENT_FAILURE) {
      oc.markDown(route);
      return undefined;
    }
    // IDLE or CONNECTING: wait a bounded time for the connection.
    const deadline = Date.now() + (this.options.ownerConnectTimeoutMs ?? 1000);
    const ready = await new Promise<boolean>((resolve) => {
      const watch = (s: grpc.connectivityState) => {
        if (s === grpc.connectivityState.READY) return resolve(true);
        if (s === grpc.connectivityState.TRANSIENT_FAILURE || s === grpc.connectivityState.SHUTDOWN) return resolve(false);
        ch.watchConnectivityState(s, deadline, (err) => (err ? resolve(false) : watch(ch.getConnectivityState(false))));
      };
      watch(ch.getConnectivityState(false));
    });
    if (!ready) {
      oc.markDown(route);
      return undefined;
    }
    return oc;
  }

  private learnOwner(route: SessionRoute | undefined, md: grpc.Metadata): void {
    route?.learnOwner(headerValue(md, 'x-pyexec-owner'));
  }

  // ---- calls

  /**
   * One unary RPC with deadline, cancel, owner routing and typed errors. A
   * session call (ctx.route) that fails UNAVAILABLE (the session is moving,
   * the replica drains, the owner is unreachable) is sent once more,
   * through `address`: the server did not run it.
   */
  async unary<Req, Resp>(method: string, req: Req, opts: CallOptions = {}, ctx: CallCtx = {}): Promise<Resp> {
    const early = this.preflight(opts, ctx);
    if (early) throw early;
    const callOpts = this.callOptions(opts);
    const retry = { since: 0 };
    for (let attempt = 0; ; attempt++) {
      const owner = attempt === 0 ? await this.ownerFor(ctx.route) : undefined;
      try {
        return await this.unaryOnce<Req, Resp>(owner?.stub ?? this.stub, method, req, opts, callOpts, ctx);
      } catch (e) {
        if (await this.retryable(retry, attempt, e, callOpts, ctx)) {
          if (attempt === 0) owner?.markDown(ctx.route);
          const again = this.preflight(opts, ctx);
          if (again) throw again;
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Whether a session call that failed with `err` goes again (after a
   * pause). UNAVAILABLE: the server did not run it (draining, its owner
   * out of reach, a drain's bare CANCELLED). The first retry goes at once,
   * through `address`; while the server says the session is moving (it
   * refuses calls until the move is done, a few hundred ms), more follow,
   * 50 ms apart doubling to 500 ms, for at most 5 s and within the deadline.
   */
  private async retryable(
    state: { since: number },
    attempt: number,
    err: unknown,
    callOpts: grpc.CallOptions,
    ctx: CallCtx,
  ): Promise<boolean> {
    if (ctx.route === undefined || !(err instanceof UnavailableError)) return false;
    if (attempt === 0) {
      state.since = Date.now();
      return true;
    }
    if (!/moving/i.test(err.details)) return false;
    const delay = Math.min(50 * 2 ** (attempt - 1), 500);
    const deadline = callOpts.deadline instanceof Date ? callOpts.deadline.getTime() : Infinity;
    if (Date.now() + delay - state.since > MOVE_RETRY_MS || Date.now() + delay >= deadline) return false;
    await new Promise((r) => setTimeout(r, delay));
    return true;
  }

  private unaryOnce<Req, Resp>(
    stub: grpc.Client,
    method: string,
    req: Req,
    opts: CallOptions,
    callOpts: grpc.CallOptions,
    ctx: CallCtx,
  ): Promise<Resp> {
    const signal = opts.signal;
    return new Promise<Resp>((resolve, reject) => {
      const fn = (stub as unknown as Record<string, Function>)[method];
      let cancelledHere = false;
      let onAbort: (() => void) | undefined;
      let unsubscribe: (() => void) | undefined;
      let call: grpc.ClientUnaryCall;
      try {
        call = fn.call(stub, req, this.metadataFor(ctx.callId), callOpts, (err: grpc.ServiceError | null, resp: Resp) => {
          if (onAbort) signal!.removeEventListener('abort', onAbort);
          unsubscribe?.();
          if (err) reject(callError(err, cancelledHere));
          else resolve(resp);
        });
      } catch (e) {
        // grpc-js throws synchronously on a closed channel or a request it
        // cannot serialize; keep the one error hierarchy.
        reject(fromGrpcError(e));
        return;
      }
      call.on('metadata', (md: grpc.Metadata) => this.learnOwner(ctx.route, md));
      const cancel = () => {
        cancelledHere = true;
        call.cancel();
      };
      if (signal) {
        onAbort = cancel;
        signal.addEventListener('abort', onAbort, { once: true });
      }
      if (ctx.control) unsubscribe = ctx.control.onCancel(cancel);
    });
  }

  /**
   * One server-streaming RPC as an async generator, with the same deadline,
   * cancel, routing and typed errors as unary; a session stream that fails
   * UNAVAILABLE before its first message is opened once more. Leaving the
   * iteration early (break, return, a throw in the loop body) cancels the
   * RPC, which interrupts the Python code; a bound session keeps its state.
   * Messages are read on demand, so a slow consumer holds the server back
   * (flow control) instead of buffering the whole stream here.
   */
  async *stream<Req, Resp>(
    method: string,
    req: Req,
    opts: CallOptions = {},
    ctx: CallCtx = {},
  ): AsyncGenerator<Resp, void, undefined> {
    const early = this.preflight(opts, ctx);
    if (early) throw early;
    const signal = opts.signal;
    const callOpts = this.callOptions(opts);
    const retryState = { since: 0 };
    for (let attempt = 0; ; attempt++) {
      const owner = attempt === 0 ? await this.ownerFor(ctx.route) : undefined;
      const stub = owner?.stub ?? this.stub;
      const fn = (stub as unknown as Record<string, Function>)[method];
      let call: grpc.ClientReadableStream<Resp>;
      try {
        call = fn.call(stub, req, this.metadataFor(ctx.callId), callOpts);
      } catch (e) {
        throw fromGrpcError(e);
      }
      // Errors reach the caller through the iterator; this listener only
      // keeps the CANCELLED that follows an early exit from being an
      // unhandled 'error' event.
      call.on('error', () => {});
      call.on('metadata', (md: grpc.Metadata) => this.learnOwner(ctx.route, md));
      let cancelledHere = false;
      const cancel = () => {
        cancelledHere = true;
        call.cancel();
      };
      signal?.addEventListener('abort', cancel, { once: true });
      const unsubscribe = ctx.control?.onCancel(cancel);
      let finished = false;
      let received = false;
      let failure: PyExecError | undefined;
      try {
        for await (const msg of call as AsyncIterable<Resp>) {
          received = true;
          yield msg;
        }
        finished = true;
      } catch (e) {
        finished = true;
        failure = callError(e, cancelledHere);
      } finally {
        signal?.removeEventListener('abort', cancel);
        unsubscribe?.();
        if (!finished) call.cancel();
      }
      if (failure === undefined) return;
      if (received || !(await this.retryable(retryState, attempt, failure, callOpts, ctx))) throw failure;
      if (attempt === 0) owner?.markDown(ctx.route);
      const again = this.preflight(opts, ctx);
      if (again) throw again;
    }
  }

  /**
   * Eval, Exec or Call as a Run stream, answering the callbacks Python makes
   * with `functions`. A session Run that fails UNAVAILABLE before any
   * callback came is sent once more, as unary calls are.
   */
  async run<Resp>(
    kind: RunKind,
    req: object,
    functions: ReadonlyMap<string, CallbackFunction>,
    opts: CallOptions = {},
    ctx: CallCtx = {},
  ): Promise<Resp> {
    const early = this.preflight(opts, ctx);
    if (early) throw early;
    const callOpts = this.callOptions(opts);
    const retry = { since: 0 };
    for (let attempt = 0; ; attempt++) {
      const owner = attempt === 0 ? await this.ownerFor(ctx.route) : undefined;
      try {
        return await this.runOnce<Resp>(owner?.stub ?? this.stub, kind, req, functions, opts, callOpts, ctx);
      } catch (e) {
        if (!(e instanceof RunFailure)) throw e;
        if (!e.sawCallback && (await this.retryable(retry, attempt, e.error, callOpts, ctx))) {
          if (attempt === 0) owner?.markDown(ctx.route);
          const again = this.preflight(opts, ctx);
          if (again) throw again;
          continue;
        }
        throw e.error;
      }
    }
  }

  private runOnce<Resp>(
    stub: grpc.Client,
    kind: RunKind,
    req: object,
    functions: ReadonlyMap<string, CallbackFunction>,
    opts: CallOptions,
    callOpts: grpc.CallOptions,
    ctx: CallCtx,
  ): Promise<Resp> {
    const signal = opts.signal;
    return new Promise<Resp>((resolve, reject) => {
      const fn = (stub as unknown as Record<string, Function>).Run;
      let call: grpc.ClientDuplexStream<WireRunRequest, WireRunEvent>;
      try {
        call = fn.call(stub, this.metadataFor(ctx.callId), callOpts);
      } catch (e) {
        reject(new RunFailure(fromGrpcError(e), false));
        return;
      }
      let cancelledHere = false;
      let sawCallback = false;
      let response: Resp | undefined;
      let okStatus = false;
      let done = false;
      const cancel = () => {
        cancelledHere = true;
        call.cancel();
      };
      signal?.addEventListener('abort', cancel, { once: true });
      const unsubscribe = ctx.control?.onCancel(cancel);
      const settle = (err: PyExecError | undefined) => {
        if (done) return;
        done = true;
        signal?.removeEventListener('abort', cancel);
        unsubscribe?.();
        if (err) reject(new RunFailure(err, sawCallback));
        else resolve(response as Resp);
      };
      call.on('metadata', (md: grpc.Metadata) => this.learnOwner(ctx.route, md));
      call.on('data', (ev: WireRunEvent) => {
        if (ev.event === 'callback') {
          sawCallback = true;
          void this.answer(ev.callback ?? {}, functions).then((result) => {
            if (!done && response === undefined) call.write({ callback_result: result });
          });
        } else if (ev.event === kind) {
          response = (ev[kind] ?? {}) as Resp;
          call.end(); // the response is last: half-close, then the OK status follows
        }
      });
      call.on('error', (e) => settle(callError(e, cancelledHere)));
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code !== grpc.status.OK) return; // 'error' settles it
        okStatus = true;
        if (response !== undefined) settle(undefined);
      });
      call.on('end', () => {
        if (done) return;
        if (response !== undefined && okStatus) settle(undefined);
        else if (response !== undefined) setImmediate(() => settle(undefined));
        else if (okStatus) settle(new PyExecError('pyexec: Run ended without its response'));
      });
      call.write({ [kind]: req } as WireRunRequest);
    });
  }

  /** Runs the function Python asked for, inside its callback scope, and makes the answer. */
  private async answer(cb: WireCallbackRequest, functions: ReadonlyMap<string, CallbackFunction>): Promise<WireCallbackResult> {
    const id = cb.id ?? '';
    const name = cb.name ?? '';
    const f = functions.get(name);
    if (f === undefined) {
      return { id, error: { type: 'LookupError', message: `no function registered as '${name}' in the client` } };
    }
    const vopts = this.options.values ?? {};
    try {
      const args = (cb.args ?? []).map((a) => fromWire(a, vopts));
      const kwEntries = Object.entries(cb.kwargs ?? {});
      if (kwEntries.length > 0) {
        const kwargs: { [k: string]: PyValue } = {};
        for (const [k, v] of kwEntries) {
          Object.defineProperty(kwargs, k, { value: fromWire(v, vopts), enumerable: true, writable: true, configurable: true });
        }
        args.push(kwargs);
      }
      const value = await callbackScope.run(id, () => f(...args));
      return { id, value: toWire(value, vopts) };
    } catch (e) {
      const err = e as { name?: unknown; message?: unknown } | null;
      const type = typeof err?.name === 'string' && err.name !== '' ? err.name : 'Error';
      const message = typeof err?.message === 'string' ? err.message : String(e);
      return { id, error: { type, message } };
    }
  }

  /** Eval, Exec or Call: a Run when there are functions to call back, else the unary RPC. */
  invoke<Resp>(kind: RunKind, req: object, opts: CallbackOptions, ctx: CallCtx): Promise<Resp> {
    let functions: ReadonlyMap<string, CallbackFunction> = this.functions;
    if (opts.functions !== undefined) {
      const extra = opts.functions instanceof Map ? opts.functions : new Map(Object.entries(opts.functions));
      functions = new Map([...this.functions, ...extra]);
    } else if (functions.size === 0) {
      return this.unary<object, Resp>(RUN_METHOD[kind], req, opts, ctx);
    }
    return this.run<Resp>(kind, req, functions, opts, ctx);
  }

  // ---- sessions and leases

  async bind(opts: BindOptions = {}): Promise<WireBindResponse> {
    const req: WireBindRequest = { idle_timeout_seconds: opts.idleTimeoutSeconds ?? 0 };
    if (opts.restore !== undefined) {
      const blob = opts.restore instanceof Uint8Array ? opts.restore : opts.restore.blob;
      req.restore = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    }
    return this.unary<object, WireBindResponse>('Bind', req, opts);
  }

  async unbind(route: SessionRoute, opts: CallOptions = {}): Promise<void> {
    await this.unary('Unbind', { session: route.token }, opts, { route });
  }

  /** Starts leasing a session. */
  lease(route: SessionRoute): Lease {
    const l = new Lease(this, route);
    if (this.closed) l.close();
    else this.leases.add(l);
    return l;
  }

  /** @internal LeaseHost */
  attachVia(route: SessionRoute): { transport: AttachTransport; ownerDown?: () => void } {
    const owner = this.options.routeToOwner && route.owner !== undefined && route.owner !== this.address ? route.owner : undefined;
    const oc = owner === undefined ? undefined : this.owners.get(owner);
    // The owner only once a call has reached it (its channel is up); else
    // through `address`, which forwards the lease to the owner.
    if (
      owner !== undefined &&
      oc !== undefined &&
      Date.now() >= oc.badUntil &&
      oc.stub.getChannel().getConnectivityState(false) === grpc.connectivityState.READY
    ) {
      return { transport: this.attachTransport(owner), ownerDown: () => oc.markDown(route) };
    }
    return { transport: this.attachTransport(this.address) };
  }

  private attachTransport(address: string): AttachTransport {
    let t = this.attachTransports.get(address);
    if (t === undefined) {
      const target = h2Target(address, this.tls);
      if (target !== undefined) {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(this.metadata.getMap())) {
          if (typeof v === 'string') headers[k.toLowerCase()] = v;
        }
        t = new H2AttachTransport(target, headers, loadService().attach);
      } else {
        const stub = address === this.address ? this.stub : new this.ctor(address, channelCredentials(this.tls), this.chOpts);
        t = new GrpcAttachTransport(stub, () => this.metadata.clone());
      }
      this.attachTransports.set(address, t);
    }
    return t;
  }

  /** @internal LeaseHost */
  leaseEnded(lease: Lease): void {
    this.leases.delete(lease);
  }

  /** Ends every lease and closes every channel. */
  close(): void {
    this.closed = true;
    for (const l of [...this.leases]) l.close();
    for (const t of this.attachTransports.values()) t.close();
    this.attachTransports.clear();
    for (const oc of this.owners.values()) oc.stub.close();
    this.owners.clear();
    this.stub.close();
  }
}

/**
 * Eval/exec/call against one target: the pool (stateless) for a Client, a
 * bound interpreter for a Session or a Context.
 */
export abstract class Executor {
  /** The calls this handle has started and not seen end, oldest first (by id). */
  private readonly inflight = new Map<string, CallControl>();
  private readonly streamIds = new WeakMap<object, string>();

  /** @internal */
  protected constructor(protected readonly core: Core) {}

  /** The session to call (undefined: stateless). */
  protected abstract route(opts: CallOptions): Promise<SessionRoute | undefined> | SessionRoute | undefined;

  /** Hook: a call on `route` failed with `err` (contexts forget lost sessions). */
  protected failed(_route: SessionRoute, _err: unknown): void {}

  /** Interrupts the call named `id` (started by this handle, with `control`). */
  protected interruptCall(_id: string, control: CallControl, _opts: CallOptions): Promise<boolean> {
    // A stateless call has no session to name: cancel its RPC.
    return Promise.resolve(control.cancel());
  }

  /** @internal The oldest call this handle has in flight (its rejection is then expected, not unhandled). */
  protected oldestInflight(): string | undefined {
    for (const [id, control] of this.inflight) {
      control.pending?.then(undefined, () => {});
      return id;
    }
    return undefined;
  }

  /** @internal The call `id`, if this handle has it in flight, is about to be interrupted: its rejection is expected, not unhandled. */
  protected expectRejection(id: string): void {
    this.inflight.get(id)?.pending?.then(undefined, () => {});
  }

  /** @internal The call id of a stream this handle made. */
  protected streamId(gen: object): string | undefined {
    return this.streamIds.get(gen);
  }

  /** Starts Eval, Exec or Call; the PendingCall names it. */
  private start<Resp, R>(
    kind: RunKind,
    build: (token: string) => object,
    opts: CallbackOptions,
    finish: (resp: Resp) => R,
  ): PendingCall<R> {
    const id = this.core.newCallId();
    const control = new CallControl();
    this.inflight.set(id, control);
    const p = (async () => {
      try {
        const route = await this.route(opts);
        try {
          const resp = await this.core.invoke<Resp>(kind, build(route?.token ?? ''), opts, { route, callId: id, control });
          return finish(resp);
        } catch (err) {
          if (route !== undefined) this.failed(route, err);
          throw err;
        }
      } finally {
        control.settled = true;
        this.inflight.delete(id);
      }
    })();
    const pc = PendingCall.start(p, id, (o) => this.interruptCall(id, control, o));
    control.pending = pc;
    return pc;
  }

  /**
   * The events of one stream, native. The `end` event is held until the RPC
   * itself has ended OK, so a Python error never races the status.
   */
  private async *events(
    id: string,
    method: string,
    build: (token: string) => object,
    opts: CallOptions,
  ): AsyncGenerator<StreamEvent, void, undefined> {
    const control = new CallControl();
    this.inflight.set(id, control);
    try {
      const route = await this.route(opts);
      let end: WireStreamEvent['end'] | undefined;
      try {
        for await (const ev of this.core.stream<object, WireStreamEvent>(method, build(route?.token ?? ''), opts, {
          route,
          callId: id,
          control,
        })) {
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
      } catch (err) {
        if (route !== undefined) this.failed(route, err);
        throw err;
      }
      if (end === undefined) throw new PyExecError('pyexec: stream ended without its end event');
      // The output was already streamed, so the error carries none.
      if (end.error) throw pythonError(end.error, {});
    } finally {
      control.settled = true;
      this.inflight.delete(id);
    }
  }

  private stream(method: string, build: (token: string) => object, opts: CallOptions): AsyncGenerator<StreamEvent, void, undefined> {
    const id = this.core.newCallId();
    const gen = this.events(id, method, build, opts);
    this.streamIds.set(gen, id);
    return gen;
  }

  private get vopts(): ValueOptions {
    return this.core.options.values ?? {};
  }

  /**
   * Evaluates one expression; resolves to its value, or rejects with
   * PythonError. `T` is an unchecked annotation (`eval<number>('1+1')`).
   * The PendingCall can interrupt this very call.
   */
  eval<T extends PyValue = PyValue>(code: string, opts: EvalOptions = {}): PendingCall<T> {
    return this.evalWith(code, opts, (r) => r.value as T);
  }

  /** Like eval, with the call's stdout and stderr. */
  evalResult(code: string, opts: EvalOptions = {}): PendingCall<Result> {
    return this.evalWith(code, opts, (r) => r);
  }

  private evalWith<R>(code: string, opts: EvalOptions, pick: (r: Result) => R): PendingCall<R> {
    const resultAsRef = opts.resultAsRef === true;
    return this.start<WireEvalResponse, R>(
      'eval',
      (session): WireEvalRequest => ({ session, code, locals: toWireMap(opts.locals, this.vopts), result_as_ref: resultAsRef }),
      opts,
      (resp) => pick(this.result(resp)),
    );
  }

  /** Executes statements; resolves to their output, or rejects with PythonError. */
  exec(code: string, opts: ExecOptions = {}): PendingCall<Output> {
    return this.start<WireExecResponse, Output>(
      'exec',
      (session): WireExecRequest => ({ session, code, locals: toWireMap(opts.locals, this.vopts) }),
      opts,
      (resp) => {
        const out = { stdout: resp.stdout ?? '', stderr: resp.stderr ?? '' };
        if (resp.error) throw pythonError(resp.error, out);
        return out;
      },
    );
  }

  /**
   * Calls module.fn(*args, **kwargs). `module` may be "builtins" or
   * "__main__" (the session's namespace); `fn` may be dotted ("str.upper").
   * `T` is an unchecked annotation, as for eval.
   */
  call<T extends PyValue = PyValue>(
    module: string,
    fn: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): PendingCall<T> {
    return this.callWire(() => this.callRequest(module, fn, args, opts), opts, (r) => r.value as T);
  }

  /** Like call, with the call's stdout and stderr. */
  callResult(module: string, fn: string, args: readonly PyInput[] = [], opts: CallFnOptions = {}): PendingCall<Result> {
    return this.callWire(() => this.callRequest(module, fn, args, opts), opts, (r) => r);
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
    return this.stream(
      'ExecStream',
      (session): WireExecRequest => ({ session, code, locals }),
      opts,
    ) as AsyncGenerator<OutputEvent, void, undefined>;
  }

  /**
   * Calls module.fn(*args, **kwargs) and streams the result: one `value`
   * event per item when it is an iterable (iterator, generator, async
   * generator, range, list, tuple, set; each sent as it is made), else one
   * `value` event (str, bytes, dict and anything else); output chunks
   * interleave in order. Ends as execStream does.
   */
  callStream(
    module: string,
    fn: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): AsyncGenerator<StreamEvent, void, undefined> {
    const req = this.callRequest(module, fn, args, opts);
    return this.stream('CallStream', (session) => ({ ...req, session }), opts);
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
  protected callWire<R>(req: () => WireCallRequest, opts: CallbackOptions, pick: (r: Result) => R): PendingCall<R> {
    return this.start<WireEvalResponse, R>(
      'call',
      (session) => ({ ...req(), session }),
      opts,
      (resp) => pick(this.result(resp)),
    );
  }

  private result(resp: WireEvalResponse): Result {
    const out = { stdout: resp.stdout ?? '', stderr: resp.stderr ?? '' };
    if (resp.error) throw pythonError(resp.error, out);
    return { value: fromWire(resp.value, this.vopts), ...out };
  }
}

/** What `interrupt()` may name: a PendingCall, a stream, or a call id. */
export type CallRef = PendingCall<unknown> | AsyncGenerator<unknown, unknown, unknown> | string;

/**
 * Calls that only make sense on a bound interpreter (a Session or a
 * Context): object references, Interrupt and Snapshot.
 */
export abstract class BoundExecutor extends Executor {
  /** The route if bound; undefined for a Context that has not bound yet (or whose bind failed). */
  protected abstract boundRoute(): Promise<SessionRoute | undefined>;

  /**
   * Calls method `name` (may be dotted: "inner.run") of the object `ref`
   * holds: `ref.name(*args, **kwargs)`.
   */
  callMethod<T extends PyValue = PyValue>(
    ref: Ref,
    name: string,
    args: readonly PyInput[] = [],
    opts: CallFnOptions = {},
  ): PendingCall<T> {
    return this.callWire(() => this.callRequest('', name, args, opts, { target_ref: refId(ref) }), opts, (r) => r.value as T);
  }

  /** Reads attribute `name` (may be dotted) of the object `ref` holds. */
  getattr<T extends PyValue = PyValue>(ref: Ref, name: string, opts: CallFnOptions = {}): PendingCall<T> {
    return this.callWire(
      () => this.callRequest('', name, [], opts, { target_ref: refId(ref), get_attribute: true }),
      opts,
      (r) => r.value as T,
    );
  }

  /**
   * Drops refs (or ref ids) so their objects can be freed; resolves to how
   * many were live. Unknown or already released ids are ignored. Using a
   * released ref afterwards rejects with InvalidArgumentError.
   */
  async release(...refs: Array<Ref | string>): Promise<number> {
    const route = await this.boundRoute();
    if (route === undefined || refs.length === 0) return 0;
    const ids = refs.map(refId);
    const r = await this.core.unary<object, WireReleaseResponse>('Release', { session: route.token, ref_ids: ids }, {}, { route });
    return r.released ?? 0;
  }

  /**
   * Interrupts a call on this session: it rejects with CancelledError and
   * the session keeps its state. Resolves to false when there was nothing
   * to interrupt.
   *
   * - `interrupt(call)`: that call (a PendingCall, a stream of this handle,
   *   or a call id), even if it has not reached the server yet: pyexecd
   *   keeps an Interrupt that arrives first for 10 s. Never lost.
   * - `interrupt()`: the oldest call this handle has in flight, named the
   *   same way (so `const p = s.exec(...); await s.interrupt()` is never
   *   lost either); when it has none, whatever runs on the session (a call
   *   from another handle or client), else the first call waiting.
   */
  async interrupt(call?: CallRef | CallOptions, opts: CallOptions = {}): Promise<boolean> {
    if (call instanceof PendingCall) return call.interrupt(opts);
    let id: string | undefined;
    if (typeof call === 'string') {
      id = call;
      this.expectRejection(id);
    } else if (call !== undefined && typeof (call as AsyncGenerator<unknown>)[Symbol.asyncIterator] === 'function') {
      id = this.streamId(call);
      if (id === undefined) throw new TypeError('pyexec: interrupt() got a stream that this handle did not start');
    } else {
      if (call !== undefined) opts = call as CallOptions;
      id = this.oldestInflight();
    }
    return this.sendInterrupt(id ?? '', opts);
  }

  private async sendInterrupt(callId: string, opts: CallOptions): Promise<boolean> {
    const route = await this.boundRoute();
    if (route === undefined) return false;
    const r = await this.core.unary<object, WireInterruptResponse>(
      'Interrupt',
      { session: route.token, call_id: callId },
      opts,
      { route },
    );
    return r.interrupted === true;
  }

  protected override interruptCall(id: string, control: CallControl, opts: CallOptions): Promise<boolean> {
    if (control.settled) return Promise.resolve(false);
    return this.sendInterrupt(id, opts);
  }

  /**
   * Serializes the session's state (its variables, functions, classes,
   * imported modules and live refs) into a Snapshot that
   * `client.bind({ restore })` turns into a new session with that state, for
   * the same principal. What cannot be carried is listed in `lost`. The
   * session carries on unchanged.
   */
  async snapshot(opts: CallOptions = {}): Promise<Snapshot> {
    const route = await this.boundRoute();
    if (route === undefined) throw new SessionNotFoundError(grpc.status.NOT_FOUND, 'the context has no session to snapshot');
    const r = await this.core.unary<object, WireSnapshotResponse>('Snapshot', { session: route.token }, opts, { route });
    return { blob: r.blob ?? Buffer.alloc(0), lost: lostNames(r.lost), modules: r.modules ?? [], refs: r.refs ?? 0 };
  }
}

function refId(r: Ref | string): string {
  if (typeof r === 'string') return r;
  if (r instanceof Ref) return r.id;
  throw new TypeError('pyexec: expected a Ref or a ref id');
}

/**
 * A bound session: one dedicated interpreter whose state persists across
 * calls until unbind(). Sessions from `client.bind()` are leased (see
 * ClientOptions.lease): if the client closes or the process exits without
 * unbinding, the server unbinds the session after its lease grace. Prefer
 * `client.withSession(fn)` or `await using`, which always unbind.
 */
export class Session extends BoundExecutor {
  private closed = false;

  /** @internal */
  constructor(
    core: Core,
    /** @internal */
    readonly sessionRoute: SessionRoute,
    /** The idle timeout the server granted (0 when unknown). */
    readonly idleTimeoutSeconds: number,
    private lease: Lease | undefined = undefined,
    /** With `bind({ restore })`: the modules that no longer import here. */
    readonly restoreLost: LostName[] = [],
    /** With `bind({ restore })`: the error `__pyexec_restore__()` raised (the state is restored all the same). */
    readonly restoreError: PythonError | undefined = undefined,
  ) {
    super(core);
  }

  /** The session token. */
  get token(): string {
    return this.sessionRoute.token;
  }

  /** The replica that holds the session, when known (replicas run with --peers). */
  get owner(): string | undefined {
    return this.sessionRoute.owner;
  }

  /** Whether this handle holds the session's lease right now (attached). */
  get leased(): boolean {
    return this.lease?.state === 'held';
  }

  /** @internal The lease, for tests and diagnostics. */
  get leaseInfo(): Lease | undefined {
    return this.lease;
  }

  protected route(): SessionRoute {
    return this.sessionRoute;
  }

  protected async boundRoute(): Promise<SessionRoute> {
    return this.sessionRoute;
  }

  /** @internal Ends the lease without unbinding (the session goes after the server's grace). */
  dropLease(): void {
    this.lease?.close();
  }

  /** Releases the interpreter (and ends the lease). Idempotent. */
  async unbind(opts: CallOptions = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.core.unbind(this.sessionRoute, opts);
    } finally {
      this.lease?.close();
    }
  }

  /** `await using s = await client.bind()` unbinds at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unbind();
  }
}

/**
 * Numbered shared context, like erlang_python's py:context(N): a session
 * bound lazily on first use (leased, as the client's other sessions) and
 * shared by every caller that picks the same number. Calls on it run one at
 * a time, in arrival order. If its session is lost (NOT_FOUND or ABORTED),
 * the call rejects and the next call binds a fresh session (the old state is
 * gone). Unbound by client.close().
 */
export class Context extends BoundExecutor {
  private session: Promise<Session> | undefined;

  /** @internal */
  constructor(
    core: Core,
    private readonly client: Client,
    /** The context number, 1-based. */
    readonly number: number,
  ) {
    super(core);
  }

  protected async route(opts: CallOptions): Promise<SessionRoute> {
    if (this.session === undefined) {
      const bound = this.client.bind({ idleTimeoutSeconds: this.core.options.contextIdleTimeoutSeconds, timeoutMs: opts.timeoutMs });
      this.session = bound;
      // A failed bind is not cached: the next call tries again.
      bound.catch(() => {
        if (this.session === bound) this.session = undefined;
      });
    }
    return (await this.session).sessionRoute;
  }

  protected async boundRoute(): Promise<SessionRoute | undefined> {
    try {
      return (await this.session)?.sessionRoute;
    } catch {
      return undefined; // the bind failed: nothing to release or interrupt
    }
  }

  protected override failed(route: SessionRoute, err: unknown): void {
    if (!(err instanceof SessionNotFoundError || err instanceof WorkerDiedError)) return;
    const current = this.session;
    current?.then(
      (s) => {
        if (s.sessionRoute === route && this.session === current) {
          this.session = undefined;
          s.dropLease();
        }
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
 * interpreter, no state kept between calls). Any number of calls may be in
 * flight at once on the one channel.
 */
export class Client extends Executor {
  private readonly contexts: Context[];
  private nextContext = 0;

  /** `address` is host:port, e.g. "127.0.0.1:50051". */
  constructor(address: string, options: ClientOptions = {}) {
    super(new Core(address, options));
    const n = options.numContexts ?? 4;
    if (!Number.isInteger(n) || n < 1) throw new RangeError('pyexec: numContexts must be a positive integer');
    this.contexts = Array.from({ length: n }, (_, i) => new Context(this.core, this, i + 1));
  }

  protected route(): undefined {
    return undefined;
  }

  /**
   * Registers `fn` as `name` for Python's `pyexec.call(name, *args,
   * **kwargs)` (and `erlang.call`), in every call this client makes from
   * now on; it replaces a function of the same name. `fn` may be sync or
   * async. While functions are registered, eval/exec/call (stateless, on
   * sessions and contexts) travel as Run streams that carry the callbacks.
   */
  registerFunction(name: string, fn: CallbackFunction): void {
    if (typeof name !== 'string' || name === '') throw new TypeError('pyexec: registerFunction needs a name');
    if (typeof fn !== 'function') throw new TypeError('pyexec: registerFunction needs a function');
    this.core.functions.set(name, fn);
  }

  /** Unregisters `name`; false if it was not registered. */
  unregisterFunction(name: string): boolean {
    return this.core.functions.delete(name);
  }

  /** The names of the registered functions. */
  get registeredFunctions(): string[] {
    return [...this.core.functions.keys()];
  }

  /**
   * Binds a session, leased by default: unbind it (`await using`,
   * `withSession`, `unbind()`), or it ends when the client closes or the
   * process exits, after the server's lease grace. Resolves once the lease
   * is held.
   */
  async bind(opts: BindOptions = {}): Promise<Session> {
    const r = await this.core.bind(opts);
    const route = new SessionRoute(r.session ?? '', r.owner);
    const leased = opts.lease ?? this.core.options.lease ?? true;
    const lease = leased ? this.core.lease(route) : undefined;
    const restoreError = r.restore_error ? pythonError(r.restore_error, {}) : undefined;
    const s = new Session(this.core, route, r.idle_timeout_seconds ?? 0, lease, lostNames(r.restore_lost), restoreError);
    if (lease !== undefined) {
      // Held once bind() resolves, so that a process that dies right after
      // does not leave the session to its idle timeout. Bounded: a lease
      // that cannot attach yet keeps trying in the background. The timer
      // (ref'd) keeps Node running meanwhile: the lease's connection does not.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        lease.ready,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, opts.timeoutMs ?? 10_000);
        }),
      ]);
      clearTimeout(timer);
    }
    return s;
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

  /**
   * A handle on an existing session token (e.g. one stored elsewhere). It
   * holds no lease unless `{ lease: true }`.
   */
  session(token: string, opts: SessionOptions = {}): Session {
    const route = new SessionRoute(token);
    return new Session(this.core, route, 0, opts.lease ? this.core.lease(route) : undefined);
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
    const r = await this.core.unary<object, WireGetStatsResponse & { replica?: string; bindable_workers?: number }>(
      'GetStats',
      {},
      opts,
    );
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
      replica: r.replica ?? '',
      bindableWorkers: r.bindable_workers ?? 0,
    };
  }

  /** Waits until the channel is connected, or rejects after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.core.stub.waitForReady(new Date(Date.now() + timeoutMs), (err) => (err ? reject(fromGrpcError(err)) : resolve()));
    });
  }

  /**
   * Unbinds the shared contexts (best effort), ends the leases of the
   * sessions it bound (the server unbinds them after its lease grace) and
   * closes the channels.
   */
  async close(): Promise<void> {
    await Promise.allSettled(this.contexts.map((c) => c.reset({ timeoutMs: 5000 })));
    this.core.close();
  }

  /** `await using client = new Client(...)` closes at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
