// Leases: an Attach stream held open for each session the client leases.
// While it is open, pyexecd keeps the session; when it ends (the client
// closes it, the process dies, the connection drops) the session is unbound
// after the server's --lease_grace unless the client attaches again first.
//
// The streams go over Node's own http2 module, on one connection per
// address whose socket is unref'd: a lease never keeps a Node process alive.
// When the program is done, Node exits, the connection closes, and the
// server ends the sessions after the grace. (grpc-js refs its connection
// while any call is open, so a lease on it would hang every program that
// does not close its client.) Targets the http2 module cannot dial (grpc-js
// name schemes such as ipv4:, xds:) use a grpc-js stream instead, which does
// keep the process alive until client.close().

import * as http2 from 'http2';
import * as net from 'net';
import * as grpc from '@grpc/grpc-js';

import type { WireAttachEvent } from './wire';

/** What one Attach stream reports. onStatus comes once, last. */
export interface AttachHandlers {
  /** The response headers (x-pyexec-owner when a replica forwarded it). */
  onOwner(owner: string | undefined): void;
  onEvent(ev: WireAttachEvent): void;
  onStatus(code: grpc.status, details: string): void;
}

/** Opens Attach streams to one address; `open` returns the stream's cancel. */
export interface AttachTransport {
  open(token: string, h: AttachHandlers): () => void;
  close(): void;
}

export interface AttachCodec {
  serialize(req: { session: string }): Buffer;
  deserialize(buf: Buffer): WireAttachEvent;
}

export interface TlsSettings {
  rootCerts: Buffer | null;
  certChain: Buffer | null;
  privateKey: Buffer | null;
  serverNameOverride: string | undefined;
}

interface H2Target {
  url: string;
  options: http2.SecureClientSessionOptions;
}

/**
 * How http2.connect reaches a grpc-js target: host:port, [v6]:port, host
 * (port 443), dns:///host:port, unix:path. undefined for other schemes.
 */
export function h2Target(address: string, tls: TlsSettings | undefined): H2Target | undefined {
  let a = address;
  if (a.startsWith('unix:')) {
    if (tls) return undefined;
    const p = a.startsWith('unix://') ? a.slice('unix://'.length) : a.slice('unix:'.length);
    return { url: 'http://localhost', options: { createConnection: () => net.connect(p) } };
  }
  if (a.startsWith('dns:///')) a = a.slice('dns:///'.length);
  else if (a.startsWith('dns:')) a = a.slice('dns:'.length);
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(a) || /^(ipv4|ipv6|xds|unix-abstract|vsock):/i.test(a)) return undefined;
  let host: string;
  let port = '443';
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(a);
  if (v6) {
    host = v6[1];
    if (v6[2]) port = v6[2];
  } else {
    const m = /^([^:/]+)(?::(\d+))?$/.exec(a);
    if (!m) return undefined;
    host = m[1];
    if (m[2]) port = m[2];
  }
  const hostPart = net.isIPv6(host) ? `[${host}]` : host;
  const options: http2.SecureClientSessionOptions = {};
  if (tls) {
    if (tls.rootCerts) options.ca = tls.rootCerts;
    if (tls.certChain) options.cert = tls.certChain;
    if (tls.privateKey) options.key = tls.privateKey;
    const name = tls.serverNameOverride ?? (net.isIP(host) ? undefined : host);
    if (name !== undefined) options.servername = name;
  }
  return { url: `${tls ? 'https' : 'http'}://${hostPart}:${port}`, options };
}

function grpcMessage(v: unknown): string {
  if (typeof v !== 'string') return '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function headerString(v: unknown): string | undefined {
  if (Array.isArray(v)) v = v[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** Attach over one unref'd HTTP/2 connection (reopened when it closes). */
export class H2AttachTransport implements AttachTransport {
  private session: http2.ClientHttp2Session | undefined;
  private closed = false;

  constructor(
    private readonly target: H2Target,
    private readonly headers: Record<string, string>,
    private readonly codec: AttachCodec,
  ) {}

  private connection(): http2.ClientHttp2Session {
    const current = this.session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const s = http2.connect(this.target.url, this.target.options);
    const forget = () => {
      if (this.session === s) this.session = undefined;
    };
    // Errors reach the streams, which retry; this only keeps them from
    // being unhandled 'error' events.
    s.on('error', forget);
    s.on('goaway', forget); // a draining server: new streams go on a new connection
    s.on('close', forget);
    s.unref();
    this.session = s;
    return s;
  }

  open(token: string, h: AttachHandlers): () => void {
    let finished = false;
    const finish = (code: grpc.status, details: string) => {
      if (finished) return;
      finished = true;
      h.onStatus(code, details);
    };
    if (this.closed) {
      queueMicrotask(() => finish(grpc.status.CANCELLED, 'the client is closed'));
      return () => {};
    }
    let req: http2.ClientHttp2Stream;
    try {
      req = this.connection().request({
        ':method': 'POST',
        ':path': '/pyexec.v1.PyExec/Attach',
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-accept-encoding': 'identity',
        'user-agent': 'pyexec-node-lease',
        ...this.headers,
      });
    } catch (e) {
      queueMicrotask(() => finish(grpc.status.UNAVAILABLE, `cannot open the lease stream: ${(e as Error).message}`));
      return () => {};
    }
    let buf: Buffer = Buffer.alloc(0);
    req.on('response', (headers) => {
      const st = Number(headers[':status']);
      if (st !== 200) {
        finish(grpc.status.UNAVAILABLE, `HTTP status ${st} on the lease stream`);
        req.close(http2.constants.NGHTTP2_CANCEL);
        return;
      }
      h.onOwner(headerString(headers['x-pyexec-owner']));
      // Trailers-only: the status comes in the headers.
      if (headers['grpc-status'] !== undefined) finish(Number(headers['grpc-status']), grpcMessage(headers['grpc-message']));
    });
    req.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const msg = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        if (finished) continue;
        let ev: WireAttachEvent;
        try {
          ev = this.codec.deserialize(msg);
        } catch (e) {
          finish(grpc.status.INTERNAL, `bad lease event: ${(e as Error).message}`);
          req.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        h.onEvent(ev);
      }
    });
    req.on('trailers', (t) => {
      finish(t['grpc-status'] === undefined ? grpc.status.UNKNOWN : Number(t['grpc-status']), grpcMessage(t['grpc-message']));
    });
    req.on('error', (e: Error) => finish(grpc.status.UNAVAILABLE, `the lease stream failed: ${e.message}`));
    req.on('close', () => finish(grpc.status.UNAVAILABLE, `the lease stream closed (HTTP/2 code ${req.rstCode})`));
    const msg = this.codec.serialize({ session: token });
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    msg.copy(frame, 5);
    req.end(frame);
    return () => {
      finished = true;
      if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
    };
  }

  close(): void {
    this.closed = true;
    this.session?.close();
    this.session = undefined;
  }
}

/** Attach on a grpc-js channel, for targets http2.connect cannot dial. */
export class GrpcAttachTransport implements AttachTransport {
  constructor(
    private readonly stub: grpc.Client,
    private readonly metadata: () => grpc.Metadata,
  ) {}

  open(token: string, h: AttachHandlers): () => void {
    let finished = false;
    const fn = (this.stub as unknown as Record<string, Function>).Attach;
    let call: grpc.ClientReadableStream<WireAttachEvent>;
    try {
      call = fn.call(this.stub, { session: token }, this.metadata(), {});
    } catch (e) {
      queueMicrotask(() => h.onStatus(grpc.status.UNAVAILABLE, String((e as Error).message)));
      return () => {};
    }
    call.on('metadata', (md: grpc.Metadata) => h.onOwner(headerString(md.get('x-pyexec-owner'))));
    call.on('data', (ev: WireAttachEvent) => {
      if (!finished) h.onEvent(ev);
    });
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => {
      if (finished) return;
      finished = true;
      h.onStatus(s.code, s.details);
    });
    return () => {
      finished = true;
      call.cancel();
    };
  }

  close(): void {}
}

/** The route of a session: its token and, once known, its owner replica. */
export class SessionRoute {
  /** The owner's advertised address (BindResponse.owner, x-pyexec-owner). */
  owner: string | undefined;

  constructor(
    readonly token: string,
    owner?: string,
  ) {
    this.owner = owner || undefined;
  }

  learnOwner(owner: string | undefined): void {
    if (owner) this.owner = owner;
  }
}

/** What a Lease needs from the client. */
export interface LeaseHost {
  /** The transport to attach through (the owner's when routing to it is on and it is up), and a way to report it down. */
  attachVia(route: SessionRoute): { transport: AttachTransport; ownerDown?: () => void };
  leaseEnded(lease: Lease): void;
}

export type LeaseState = 'attaching' | 'held' | 'ended' | 'closed';

// Status codes after which attaching again cannot help.
const FINAL = new Set<grpc.status>([
  grpc.status.NOT_FOUND,
  grpc.status.UNIMPLEMENTED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
]);

/** The longest pause between two attach attempts. */
const MAX_BACKOFF_MS = 1000;

/**
 * One lease: an Attach stream kept open, attached again when it ends while
 * the session lives. UNAVAILABLE (the session moved to another replica, the
 * server drains, the connection dropped) attaches again at once, then with
 * back-off (50 ms doubling up to 1 s) as long as attempts fail; so does any
 * other error. It stops for good on `ended` (the session was unbound or
 * lost), NOT_FOUND, and errors that a retry cannot fix (UNIMPLEMENTED: a
 * server without leases; credentials).
 */
export class Lease {
  private st: LeaseState = 'attaching';
  private cancel: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private resolveReady!: () => void;
  /** Settles when the first attempt has an outcome (held, or failed). */
  readonly ready: Promise<void>;
  /** The server's --lease_grace, from the last `attached` event. */
  graceSeconds: number | undefined;
  /** Why the lease ended (`ended` event reason, or the final status). */
  endReason: string | undefined;
  /** How many times the stream was attached again after the first. */
  reattached = 0;

  constructor(
    private readonly host: LeaseHost,
    readonly route: SessionRoute,
  ) {
    this.ready = new Promise((r) => (this.resolveReady = r));
    this.attach();
  }

  get state(): LeaseState {
    return this.st;
  }

  private attach(): void {
    this.timer = undefined;
    if (this.st === 'closed' || this.st === 'ended') return;
    const via = this.host.attachVia(this.route);
    let attached = false;
    this.cancel = via.transport.open(this.route.token, {
      onOwner: (owner) => this.route.learnOwner(owner),
      onEvent: (ev) => {
        if (ev.event === 'attached') {
          if (this.graceSeconds !== undefined) this.reattached++;
          attached = true;
          this.failures = 0;
          this.graceSeconds = ev.attached?.grace_seconds ?? 0;
          if (this.st === 'attaching') this.st = 'held';
          this.resolveReady();
        } else if (ev.event === 'ended') {
          this.end(`session ended: ${ev.ended?.reason ?? ''}`);
        }
      },
      onStatus: (code, details) => {
        this.cancel = undefined;
        if (this.st === 'closed' || this.st === 'ended') return;
        if (FINAL.has(code)) {
          this.end(`${grpc.status[code]}: ${details}`);
          return;
        }
        if (!attached && code === grpc.status.UNAVAILABLE) via.ownerDown?.();
        this.st = 'attaching';
        const delay =
          this.failures === 0 && (attached || code === grpc.status.UNAVAILABLE)
            ? 0
            : Math.min(50 * 2 ** this.failures, MAX_BACKOFF_MS);
        this.failures++;
        if (this.failures >= 2) this.resolveReady(); // bind() does not wait for a server that is down
        this.timer = setTimeout(() => this.attach(), delay);
        this.timer.unref();
      },
    });
  }

  private end(reason: string): void {
    this.st = 'ended';
    this.endReason = reason;
    this.stop();
  }

  private stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const cancel = this.cancel;
    this.cancel = undefined;
    cancel?.();
    this.resolveReady();
    this.host.leaseEnded(this);
  }

  /** Ends the lease: the server unbinds the session after its grace. */
  close(): void {
    if (this.st === 'closed') return;
    if (this.st !== 'ended') this.st = 'closed';
    this.stop();
  }
}
