// Status mapping and retries against a fake PyExec server (grpc-js) that
// answers each call as the test scripts it, and records the metadata:
// - a bare CANCELLED the client did not cause (gRPC core's answer while a
//   server shuts down, grpc/grpc#41785) is an UnavailableError; a CANCELLED
//   that says why stays a CancelledError, and so does the client's own;
// - a session call that fails UNAVAILABLE (or a bare CANCELLED) goes once
//   more, under the same x-pyexec-call-id; a second UNAVAILABLE surfaces,
//   unless the server says the session is moving (then more retries, with
//   back-off); stateless calls are not retried;
// - a Run is retried the same way before any callback, never after one;
// - every call carries a fresh x-pyexec-call-id, and a server without
//   Attach (UNIMPLEMENTED) leaves bind() working, unleased.

import { after, before, beforeEach, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { CancelledError, Client, UnavailableError } from '../src';

type Step = { code: grpc.status; details: string } | 'ok' | 'hang' | 'callback-then-unavailable';

let server: grpc.Server;
let address: string;
let script: Step[] = [];
let seen: Array<{ method: string; callId: string; session: string }> = [];

function service(): grpc.ServiceDefinition {
  const file = path.join(__dirname, '..', 'proto', 'pyexec', 'v1', 'pyexec.proto');
  const def = protoLoader.loadSync(file, { keepCase: true, longs: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { pyexec: { v1: { PyExec: grpc.ServiceClientConstructor } } };
  return pkg.pyexec.v1.PyExec.service;
}

before(async () => {
  server = new grpc.Server();
  const record = (method: string, md: grpc.Metadata, session: string) =>
    seen.push({ method, callId: String(md.get('x-pyexec-call-id')[0] ?? ''), session });
  server.addService(service(), {
    Bind: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { session: 'fake-session' }),
    Unbind: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
    Eval: (call: grpc.ServerUnaryCall<{ session?: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      record('Eval', call.metadata, call.request.session ?? '');
      const step = script.shift() ?? 'ok';
      if (step === 'ok') cb(null, { value: { int: '7' } });
      else if (step === 'hang') call.on('cancelled', () => cb({ code: grpc.status.CANCELLED, details: 'cancelled' }));
      else if (typeof step === 'object') cb(step);
    },
    Run: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
      call.once('data', (first: { eval?: { session?: string } }) => {
        record('Run', call.metadata, first.eval?.session ?? '');
        const step = script.shift() ?? 'ok';
        if (step === 'ok') {
          call.write({ eval: { value: { int: '8' } } });
          call.on('end', () => call.end());
        } else if (step === 'callback-then-unavailable') {
          call.write({ callback: { id: 'cb1', name: 'f', args: [] } });
          call.once('data', () => call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'draining' }));
        } else if (typeof step === 'object') {
          call.emit('error', step);
        }
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});

after(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

beforeEach(() => {
  script = [];
  seen = [];
});

const BARE = { code: grpc.status.CANCELLED, details: 'CANCELLED' };
const UNAVAILABLE = { code: grpc.status.UNAVAILABLE, details: 'the server is draining' };
const MOVING = { code: grpc.status.UNAVAILABLE, details: 'the session is moving to another replica (this one is draining); retry the call' };

describe('status mapping and retries', () => {
  test('a bare CANCELLED is UNAVAILABLE; a CANCELLED with a reason, or the client\'s own, is not', async () => {
    const c = new Client(address);
    try {
      script = [BARE, { code: grpc.status.CANCELLED, details: 'Call cancelled' }];
      await assert.rejects(c.eval('1'), UnavailableError);
      await assert.rejects(c.eval('1'), UnavailableError);
      script = [{ code: grpc.status.CANCELLED, details: 'interrupted by an Interrupt request' }];
      const err = await c.eval('1').catch((e: unknown) => e);
      assert.ok(err instanceof CancelledError && !(err instanceof UnavailableError), String(err));
      script = ['hang'];
      const ac = new AbortController();
      const p = c.eval('1', { signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      await assert.rejects(p, CancelledError);
      assert.equal(seen.length, 4, 'stateless calls are not retried');
    } finally {
      await c.close();
    }
  });

  test('a session call is retried once on UNAVAILABLE or a bare CANCELLED, under the same call id', async () => {
    const c = new Client(address);
    try {
      const s = c.session('fake-session');
      script = [UNAVAILABLE, 'ok'];
      assert.equal(await s.eval('1'), 7);
      script = [BARE, 'ok'];
      assert.equal(await s.eval('1'), 7);
      assert.equal(seen.length, 4);
      assert.equal(seen[0].callId, seen[1].callId);
      assert.equal(seen[2].callId, seen[3].callId);
      assert.notEqual(seen[0].callId, seen[2].callId);
      assert.match(seen[0].callId, /^[0-9a-f]{16}-[0-9a-z]+$/);
      seen = [];
      script = [UNAVAILABLE, UNAVAILABLE, 'ok'];
      await assert.rejects(s.eval('1'), UnavailableError);
      assert.equal(seen.length, 2, 'once only');
      script = [];
      seen = [];
      // While the session is moving: more retries, with back-off.
      script = [MOVING, MOVING, MOVING, 'ok'];
      const t0 = Date.now();
      assert.equal(await s.eval('1'), 7);
      assert.equal(seen.length, 4);
      assert.ok(Date.now() - t0 >= 150, 'the retries wait');
    } finally {
      await c.close();
    }
  });

  test('a Run is retried before any callback, never after one', async () => {
    const c = new Client(address);
    c.registerFunction('f', () => 1);
    try {
      const s = c.session('fake-session');
      script = [UNAVAILABLE, 'ok'];
      assert.equal(await s.eval('1'), 8);
      assert.deepEqual(
        seen.map((x) => x.method),
        ['Run', 'Run'],
      );
      seen = [];
      script = ['callback-then-unavailable', 'ok'];
      await assert.rejects(s.eval('1'), UnavailableError);
      assert.equal(seen.length, 1);
    } finally {
      await c.close();
    }
  });

  test('bind() against a server without Attach works, unleased', async () => {
    const c = new Client(address);
    try {
      const t0 = Date.now();
      const s = await c.bind();
      assert.ok(Date.now() - t0 < 2000);
      assert.equal(s.leased, false);
      assert.equal(s.leaseInfo?.state, 'ended');
      assert.match(s.leaseInfo?.endReason ?? '', /UNIMPLEMENTED/);
      await s.unbind();
    } finally {
      await c.close();
    }
  });
});
