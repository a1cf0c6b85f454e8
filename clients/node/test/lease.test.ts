// Leases against a real pyexecd with --lease_grace=1s: a session bound by
// default is leased by its client and ends, without Unbind, soon after the
// client closes, its process is SIGKILLed or simply ends; a session bound
// without a lease stays; a lease survives a dropped connection (the client
// attaches again) and reports a session that ended.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';

import { Client, SessionNotFoundError } from '../src';
import { startProxy } from './proxy';
import { RunningServer, startPyexecd } from './server';

const GRACE_S = 1;
let server: RunningServer;
let observer: Client; // holds no lease: only looks at sessions

before(async () => {
  server = await startPyexecd([`--lease_grace=${GRACE_S}s`]);
  observer = new Client(server.address, { defaultTimeoutMs: 10_000, lease: false });
});

after(async () => {
  await observer?.close();
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether `token` still answers eval("1") (false: NOT_FOUND; other errors throw). */
async function alive(token: string): Promise<boolean> {
  try {
    await observer.session(token).eval('1');
    return true;
  } catch (e) {
    if (e instanceof SessionNotFoundError) return false;
    throw e;
  }
}

/** Milliseconds from `since` until `token` is NOT_FOUND; fails past grace + 2 s. */
async function goneAfter(token: string, since: number): Promise<number> {
  const limit = since + (GRACE_S + 2) * 1000;
  while (await alive(token)) {
    if (Date.now() > limit) assert.fail(`session still alive ${Date.now() - since} ms after its lease ended`);
    await sleep(50);
  }
  return Date.now() - since;
}

/** Runs test/lease_child.js; resolves to its token once it has printed it. */
function child(mode: 'stay' | 'end'): Promise<{ proc: ChildProcess; token: string; leased: string; exited: Promise<number | null> }> {
  const proc = spawn(process.execPath, [path.join(__dirname, 'lease_child.js'), server.address, mode], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error('the child printed no token in 20 s'));
    }, 20_000);
    proc.once('exit', (code) => reject(new Error(`the child exited (${code}) before printing its token`)));
    readline.createInterface({ input: proc.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      const [token, leased] = line.trim().split(' ');
      resolve({ proc, token, leased, exited });
    });
  });
}

describe('leases', () => {
  test('bind() leases by default; closing the client ends the session after the grace, without Unbind', async () => {
    const c = new Client(server.address);
    const s = await c.bind();
    assert.equal(s.leased, true);
    assert.equal(s.leaseInfo?.graceSeconds, GRACE_S);
    await s.exec('x = 1');
    // Held: the session outlives the grace while its client is open.
    await sleep(GRACE_S * 1000 + 500);
    assert.equal(await alive(s.token), true);
    const t0 = Date.now();
    await c.close();
    const ms = await goneAfter(s.token, t0);
    console.log(`lease: session gone ${ms} ms after client.close() (grace ${GRACE_S} s)`);
  });

  test('a process that binds and is SIGKILLed: its session is gone within grace + 2 s', async () => {
    const { proc, token, leased, exited } = await child('stay');
    assert.equal(leased, 'true');
    await sleep(GRACE_S * 1000 + 300);
    assert.equal(await alive(token), true, 'the session must live while its process does');
    const t0 = Date.now();
    proc.kill('SIGKILL');
    await exited;
    const ms = await goneAfter(token, t0);
    console.log(`lease: session gone ${ms} ms after its process was SIGKILLed (grace ${GRACE_S} s)`);
    assert.ok(ms <= (GRACE_S + 2) * 1000);
  });

  test('a program that ends without closing its client exits, and its session goes', async () => {
    const t0 = Date.now();
    const { token, exited } = await child('end');
    const code = await Promise.race([exited, sleep(15_000).then(() => 'still running')]);
    assert.equal(code, 0, 'the lease must not keep Node running');
    const ms = await goneAfter(token, Date.now());
    console.log(`lease: a program that did not close its client exited ${Date.now() - t0} ms after start; session gone ${ms} ms after`);
  });

  test('without a lease (per bind, or per client) the session stays until unbound', async () => {
    const c = new Client(server.address);
    const s = await c.bind({ lease: false });
    assert.equal(s.leased, false);
    const c2 = new Client(server.address, { lease: false });
    const s2 = await c2.bind();
    assert.equal(s2.leased, false);
    await c.close();
    await c2.close();
    await sleep(GRACE_S * 1000 + 1500);
    assert.equal(await alive(s.token), true);
    assert.equal(await alive(s2.token), true);
    await observer.session(s.token).unbind();
    await observer.session(s2.token).unbind();
    assert.equal(await alive(s.token), false);
  });

  test('a token handle leases on request, and its lease ends with its client', async () => {
    const c = new Client(server.address);
    // Bound without a lease, then leased through a handle of another client.
    const s = await observer.bind({ lease: false });
    const h = c.session(s.token, { lease: true });
    assert.equal(await h.eval('1'), 1);
    for (let i = 0; i < 100 && !h.leased; i++) await sleep(10);
    assert.equal(h.leased, true);
    assert.equal(c.session(s.token).leased, false); // a plain handle holds none
    const t0 = Date.now();
    await c.close();
    const ms = await goneAfter(s.token, t0);
    assert.ok(ms >= 500, `gone after ${ms} ms: the grace must apply`);
  });

  test('a dropped connection: the lease attaches again within the grace and the session stays', async () => {
    const proxy = await startProxy(server.address);
    const c = new Client(proxy.address);
    try {
      const s = await c.bind();
      await s.exec('kept = "yes"');
      assert.equal(s.leased, true);
      for (let round = 1; round <= 3; round++) {
        proxy.dropAll(); // the lease stream and the call channel break
        await sleep(GRACE_S * 1000 + 800);
        assert.equal(await alive(s.token), true, `round ${round}: the session ended with the connection`);
        assert.equal(s.leased, true);
        assert.ok((s.leaseInfo?.reattached ?? 0) >= round, `attached again ${s.leaseInfo?.reattached} times`);
      }
      assert.equal(await s.eval('kept'), 'yes');
      console.log(`lease: attached again ${s.leaseInfo?.reattached} times after 3 dropped connections; proxy saw ${proxy.accepted()} connections`);
    } finally {
      await c.close();
      await proxy.close();
    }
  });

  test('a session unbound elsewhere ends the lease (ended event), and unbind() ends its own', async () => {
    const c = new Client(server.address);
    try {
      const s = await c.bind();
      await observer.session(s.token).unbind();
      for (let i = 0; i < 200 && s.leaseInfo?.state !== 'ended'; i++) await sleep(10);
      assert.equal(s.leaseInfo?.state, 'ended');
      assert.match(s.leaseInfo?.endReason ?? '', /ended/);
      assert.equal(s.leased, false);
      const s2 = await c.bind();
      await s2.unbind();
      // Closed by unbind(), or ended first by the server's `ended` event.
      assert.ok(['closed', 'ended'].includes(s2.leaseInfo?.state ?? ''), s2.leaseInfo?.state);
      assert.equal(await alive(s2.token), false);
    } finally {
      await c.close();
    }
  });
});
