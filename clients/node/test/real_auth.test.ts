// TLS, mTLS and bearer tokens against the real pyexecd (issue 8). Runs when
// the pyexecd under test has --auth_tokens_file (`--helpfull` lists it);
// against an older pyexecd the tests are reported as skipped with the reason,
// and tls_auth.test.ts still covers the client side on a fake server.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';

import { Client, InvalidArgumentError, SessionNotFoundError, UnauthenticatedError, UnavailableError } from '../src';
import { Certs, makeCerts } from './certs';
import { RunningServer, pyexecdPath, startPyexecd } from './server';

function serverHasAuth(): boolean {
  const r = spawnSync(pyexecdPath(), ['--helpfull'], { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout}${r.stderr}`.includes('auth_tokens_file');
}

const skip = serverHasAuth() ? false : 'this pyexecd has no --auth_tokens_file (issue 8 not merged)';

describe('real pyexecd with TLS and bearer tokens', { skip }, () => {
  let certs: Certs;
  let server: RunningServer;
  const tls = () => ({ rootCerts: certs.pem['ca.pem'] });

  before(async () => {
    certs = makeCerts();
    fs.writeFileSync(certs.file('tokens'), '# principal token\nalice tok-alice\nbob tok-bob\n');
    server = await startPyexecd([
      `--auth_tokens_file=${certs.file('tokens')}`,
      `--tls_cert_file=${certs.file('server.pem')}`,
      `--tls_key_file=${certs.file('server.key')}`,
      '--lease_grace=1s',
    ]);
  });
  after(async () => {
    await server?.stop();
    certs?.remove();
  });

  test('leases over TLS with a token: held, ended with the client; another principal cannot lease', async () => {
    // By IP (the certificate names 127.0.0.1), and by name (SNI pyexec.test).
    for (const t of [tls(), { ...tls(), serverNameOverride: 'pyexec.test' }]) {
      const c = new Client(server.address, { tls: t, token: 'tok-alice' });
      const other = new Client(server.address, { tls: tls(), token: 'tok-alice', lease: false });
      const bob = new Client(server.address, { tls: tls(), token: 'tok-bob' });
      try {
        const s = await c.bind();
        assert.equal(s.leased, true);
        await s.exec('x = 1');
        const h = bob.session(s.token, { lease: true });
        for (let i = 0; i < 200 && h.leaseInfo?.state !== 'ended'; i++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(h.leaseInfo?.state, 'ended');
        assert.match(h.leaseInfo?.endReason ?? '', /NOT_FOUND/);
        await c.close();
        const limit = Date.now() + 4000;
        while (await other.session(s.token).eval('x').then(() => true, (e) => !(e instanceof SessionNotFoundError))) {
          assert.ok(Date.now() < limit, 'the session outlived its lease');
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await Promise.all([c.close(), other.close(), bob.close()]);
      }
    }
  });

  test("a snapshot restores for its principal only: another's bind({ restore }) is InvalidArgumentError", async () => {
    const alice = new Client(server.address, { tls: tls(), token: 'tok-alice' });
    const bob = new Client(server.address, { tls: tls(), token: 'tok-bob' });
    try {
      const snap = await alice.withSession(async (s) => (await s.exec("x = 'alice data'"), s.snapshot()));
      await assert.rejects(bob.bind({ restore: snap }), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.match(e.message, /another principal/);
        return true;
      });
      assert.equal(await alice.withSession((r) => r.eval('x'), { restore: snap }), 'alice data');
    } finally {
      await Promise.all([alice.close(), bob.close()]);
    }
  });

  test('a valid token over TLS works', async () => {
    const c = new Client(server.address, { tls: tls(), token: 'tok-alice' });
    try {
      assert.equal(await c.eval('6*7'), 42);
      assert.equal(await c.withSession(async (s) => (await s.exec('x = 1'), s.eval('x'))), 1);
    } finally {
      await c.close();
    }
  });

  test('no token or a wrong one is UnauthenticatedError', async () => {
    const none = new Client(server.address, { tls: tls() });
    const wrong = new Client(server.address, { tls: tls(), token: 'tok-mallory' });
    try {
      await assert.rejects(none.eval('1'), UnauthenticatedError);
      await assert.rejects(wrong.eval('1'), UnauthenticatedError);
    } finally {
      await none.close();
      await wrong.close();
    }
  });

  test("another principal's session is NOT_FOUND", async () => {
    const alice = new Client(server.address, { tls: tls(), token: 'tok-alice' });
    const bob = new Client(server.address, { tls: tls(), token: 'tok-bob' });
    try {
      await alice.withSession(async (s) => {
        await s.exec('secret = 1');
        await assert.rejects(bob.session(s.token).eval('secret'), SessionNotFoundError);
        assert.equal(await s.eval('secret'), 1);
      });
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('plaintext to the TLS port fails', async () => {
    const plain = new Client(server.address, { token: 'tok-alice' });
    try {
      await assert.rejects(plain.eval('1', { timeoutMs: 5000 }), UnavailableError);
    } finally {
      await plain.close();
    }
  });
});

describe('real pyexecd with mTLS', { skip }, () => {
  let certs: Certs;
  let server: RunningServer;

  before(async () => {
    certs = makeCerts();
    server = await startPyexecd([
      `--tls_cert_file=${certs.file('server.pem')}`,
      `--tls_key_file=${certs.file('server.key')}`,
      `--tls_client_ca_file=${certs.file('ca.pem')}`,
    ]);
  });
  after(async () => {
    await server?.stop();
    certs?.remove();
  });

  test('a trusted client certificate is the credential', async () => {
    const c = new Client(server.address, {
      tls: { rootCerts: certs.pem['ca.pem'], certChain: certs.pem['client.pem'], privateKey: certs.pem['client.key'] },
    });
    try {
      assert.equal(await c.eval('6*7'), 42);
      const s = await c.bind(); // its lease over mTLS too
      assert.equal(s.leased, true);
      await s.unbind();
    } finally {
      await c.close();
    }
  });

  test('no client certificate, or an untrusted one, is refused', async () => {
    const none = new Client(server.address, { tls: { rootCerts: certs.pem['ca.pem'] } });
    const rogue = new Client(server.address, {
      tls: { rootCerts: certs.pem['ca.pem'], certChain: certs.pem['rogue.pem'], privateKey: certs.pem['rogue.key'] },
    });
    try {
      // The handshake fails (UNAVAILABLE), or the server answers UNAUTHENTICATED.
      for (const c of [none, rogue]) {
        const err = await c.eval('1', { timeoutMs: 5000 }).catch((e) => e);
        assert.ok(err instanceof UnavailableError || err instanceof UnauthenticatedError, String(err));
      }
    } finally {
      await none.close();
      await rogue.close();
    }
  });
});
