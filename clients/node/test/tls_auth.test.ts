// TLS, mTLS and bearer tokens against a fake PyExec server written here
// (pyexecd has no auth yet: issue 8). The fake records each call's metadata
// and the client certificate it saw, and checks tokens the way pyexecd will
// (UNAUTHENTICATED without the right `authorization: Bearer TOKEN`).
// Certificates are made per run with openssl (certs.ts).

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { Client, UnauthenticatedError, UnavailableError } from '../src';
import { Certs, makeCerts } from './certs';

interface Seen {
  method: string;
  authorization: string[];
  extra: string[];
  peerCN: string | undefined;
}

interface Fake {
  address: string;
  seen: Seen[];
  stop(): Promise<void>;
}

let certs: Certs;
let pem: Record<string, Buffer>;

function service(): grpc.ServiceDefinition {
  const file = path.join(__dirname, '..', 'proto', 'pyexec', 'v1', 'pyexec.proto');
  const def = protoLoader.loadSync(file, { keepCase: true, longs: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { pyexec: { v1: { PyExec: grpc.ServiceClientConstructor } } };
  return pkg.pyexec.v1.PyExec.service;
}

/** Starts the fake; `token` set means calls without it are UNAUTHENTICATED. */
async function startFake(creds: grpc.ServerCredentials, token?: string): Promise<Fake> {
  const server = new grpc.Server();
  const seen: Seen[] = [];
  const handler = (method: string, reply: object) =>
    (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const auth = call.getAuthContext();
      const cert = auth.sslPeerCertificate as { subject?: { CN?: string } } | undefined;
      seen.push({
        method,
        authorization: call.metadata.get('authorization').map(String),
        extra: call.metadata.get('x-extra').map(String),
        peerCN: cert?.subject?.CN,
      });
      if (token !== undefined && call.metadata.get('authorization')[0] !== `Bearer ${token}`) {
        cb({ code: grpc.status.UNAUTHENTICATED, details: 'missing or invalid credentials' });
        return;
      }
      cb(null, reply);
    };
  server.addService(service(), {
    Bind: handler('Bind', { session: 'fake-session', idle_timeout_seconds: 600 }),
    Unbind: handler('Unbind', {}),
    Eval: handler('Eval', { value: { int: '7' } }),
    Exec: handler('Exec', {}),
    Call: handler('Call', { value: { str: 'called' } }),
    GetStats: handler('GetStats', { sessions: 3 }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    seen,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

before(() => {
  certs = makeCerts();
  pem = certs.pem;
});

after(() => {
  certs.remove();
});

describe('bearer token (plaintext fake server)', () => {
  let fake: Fake;
  before(async () => {
    fake = await startFake(grpc.ServerCredentials.createInsecure(), 's3cret');
  });
  after(async () => {
    await fake.stop();
  });

  test('sent as authorization metadata on every RPC', async () => {
    fake.seen.length = 0;
    const c = new Client(fake.address, { token: 's3cret', metadata: { 'x-extra': 'yes' }, numContexts: 1 });
    try {
      assert.equal(await c.eval('1'), 7);
      await c.exec('x = 1');
      assert.equal(await c.call('m', 'f'), 'called');
      assert.equal((await c.getStats()).sessions, 3);
      await c.withSession(async (s) => {
        assert.equal(s.token, 'fake-session');
        assert.equal(await s.eval('1'), 7);
      });
      await c.context(1).eval('1'); // Bind + Eval; close() unbinds
    } finally {
      await c.close();
    }
    const methods = fake.seen.map((s) => s.method);
    assert.deepEqual(methods, ['Eval', 'Exec', 'Call', 'GetStats', 'Bind', 'Eval', 'Unbind', 'Bind', 'Eval', 'Unbind']);
    for (const s of fake.seen) {
      assert.deepEqual(s.authorization, ['Bearer s3cret'], s.method);
      assert.deepEqual(s.extra, ['yes'], s.method);
    }
  });

  test('no token: nothing sent, UNAUTHENTICATED is UnauthenticatedError', async () => {
    fake.seen.length = 0;
    const c = new Client(fake.address);
    try {
      await assert.rejects(c.eval('1'), UnauthenticatedError);
    } finally {
      await c.close();
    }
    assert.deepEqual(fake.seen[0].authorization, []);
  });

  test('wrong token is UnauthenticatedError', async () => {
    const c = new Client(fake.address, { token: 'wrong' });
    try {
      await assert.rejects(c.eval('1'), UnauthenticatedError);
    } finally {
      await c.close();
    }
  });
});

describe('TLS', () => {
  let fake: Fake;
  before(async () => {
    fake = await startFake(
      grpc.ServerCredentials.createSsl(null, [{ cert_chain: pem['server.pem'], private_key: pem['server.key'] }], false),
      'tok',
    );
  });
  after(async () => {
    await fake.stop();
  });

  test('trusting the test CA, with a bearer token', async () => {
    fake.seen.length = 0;
    const c = new Client(fake.address, { tls: { rootCerts: pem['ca.pem'] }, token: 'tok' });
    try {
      assert.equal(await c.eval('1'), 7);
    } finally {
      await c.close();
    }
    assert.deepEqual(fake.seen[0].authorization, ['Bearer tok']);
    assert.equal(fake.seen[0].peerCN, undefined); // no client certificate sent
  });

  test('serverNameOverride checks the certificate name', async () => {
    const ok = new Client(fake.address, { tls: { rootCerts: pem['ca.pem'], serverNameOverride: 'pyexec.test' }, token: 'tok' });
    const bad = new Client(fake.address, { tls: { rootCerts: pem['ca.pem'], serverNameOverride: 'other.test' }, token: 'tok' });
    try {
      assert.equal(await ok.eval('1'), 7);
      await assert.rejects(bad.eval('1', { timeoutMs: 5000 }), UnavailableError);
    } finally {
      await ok.close();
      await bad.close();
    }
  });

  test('an untrusted server certificate fails; so does plaintext', async () => {
    const system = new Client(fake.address, { tls: true, token: 'tok' });
    const plain = new Client(fake.address, { token: 'tok' });
    try {
      await assert.rejects(system.eval('1', { timeoutMs: 5000 }), UnavailableError);
      await assert.rejects(plain.eval('1', { timeoutMs: 5000 }), UnavailableError);
    } finally {
      await system.close();
      await plain.close();
    }
  });
});

describe('mTLS', () => {
  let fake: Fake;
  before(async () => {
    fake = await startFake(
      grpc.ServerCredentials.createSsl(pem['ca.pem'], [{ cert_chain: pem['server.pem'], private_key: pem['server.key'] }], true),
    );
  });
  after(async () => {
    await fake.stop();
  });

  test('the client certificate is presented and verified', async () => {
    fake.seen.length = 0;
    const c = new Client(fake.address, {
      tls: { rootCerts: pem['ca.pem'], certChain: pem['client.pem'], privateKey: pem['client.key'] },
    });
    try {
      assert.equal(await c.eval('1'), 7);
    } finally {
      await c.close();
    }
    assert.equal(fake.seen[0].peerCN, 'client-1');
  });

  test('without a client certificate, or with an untrusted one, the handshake fails', async () => {
    const none = new Client(fake.address, { tls: { rootCerts: pem['ca.pem'] } });
    const rogue = new Client(fake.address, {
      tls: { rootCerts: pem['ca.pem'], certChain: pem['rogue.pem'], privateKey: pem['rogue.key'] },
    });
    try {
      await assert.rejects(none.eval('1', { timeoutMs: 5000 }), UnavailableError);
      await assert.rejects(rogue.eval('1', { timeoutMs: 5000 }), UnavailableError);
    } finally {
      await none.close();
      await rogue.close();
    }
  });

  test('certChain without privateKey is refused up front', () => {
    assert.throws(() => new Client(fake.address, { tls: { certChain: pem['client.pem'] } }), TypeError);
  });
});
