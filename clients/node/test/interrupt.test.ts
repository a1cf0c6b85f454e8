// Named interrupts against a real pyexecd: every call carries
// x-pyexec-call-id and an interrupt names the call it means, so the racy
// pattern of issue 19 — start `while True: pass` and interrupt at once,
// before the call may even have left — is never lost. 1000 rounds of the
// README's own pattern, then each other form: PendingCall.interrupt(), by
// id, a stream, a Context that binds on that very call, a stateless call
// (cancelled), and a call that has already ended.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';

import { CancelledError, Client } from '../src';
import { RunningServer, startPyexecd } from './server';

let server: RunningServer;
let client: Client;

before(async () => {
  server = await startPyexecd();
  client = new Client(server.address, { defaultTimeoutMs: 30_000 });
});

after(async () => {
  await client?.close();
  await server?.stop();
});

/** 'cancelled', or what else became of the call. */
function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'completed',
    (e: unknown) => (e instanceof CancelledError ? 'cancelled' : String(e)),
  );
}

describe('interrupts that are never lost', () => {
  test("the README's race, 1000 rounds: `const running = s.exec('while True: pass'); await s.interrupt()`", async () => {
    const ROUNDS = 1000;
    await client.withSession(async (s) => {
      await s.exec('state = "kept"');
      const t0 = Date.now();
      const lost: string[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const running = s.exec('while True: pass');
        const interrupted = await s.interrupt();
        const o = await outcome(running);
        if (!interrupted || o !== 'cancelled') lost.push(`round ${i}: interrupted=${interrupted}, ${o}`);
      }
      const ms = Date.now() - t0;
      console.log(`interrupt race: ${ROUNDS} rounds, ${lost.length} lost, ${ms} ms (${(ms / ROUNDS).toFixed(2)} ms a round)`);
      assert.deepEqual(lost.slice(0, 5), []);
      assert.equal(await s.eval('state'), 'kept');
    });
  });

  test('by PendingCall, by id, and a stream, each before the call can have arrived', async () => {
    await client.withSession(async (s) => {
      for (let i = 0; i < 50; i++) {
        const a = s.exec('while True: pass');
        assert.equal(await a.interrupt(), true);
        assert.equal(await outcome(a), 'cancelled');
        const b = s.eval('[0 for _ in iter(int, 1)]');
        assert.equal(typeof b.id, 'string');
        assert.equal(await s.interrupt(b.id), true);
        assert.equal(await outcome(b), 'cancelled');
        const c = s.call('time', 'sleep', [30]);
        assert.equal(await s.interrupt(c), true);
        assert.equal(await outcome(c), 'cancelled');
      }
      // A stream is named before its RPC starts (at the first next()).
      const it = s.execStream('while True: pass');
      assert.equal(await s.interrupt(it), true);
      assert.equal(await outcome(it.next()), 'cancelled');
      // A call that has ended: nothing to interrupt.
      const done = s.eval('1');
      assert.equal(await done, 1);
      assert.equal(await done.interrupt(), false);
      assert.equal(await s.interrupt(), false);
      await assert.rejects(s.interrupt(client.execStream('1')), TypeError); // not this handle's stream
    });
  });

  test('an interrupted call may be awaited late: its rejection is expected, not unhandled', async () => {
    // Interrupting by PendingCall, by id or the oldest call marks the call's
    // rejection as expected; node:test fails on an unhandled one (and a
    // program run with Node's defaults would stop on it).
    await client.withSession(async (s) => {
      const late = () => new Promise((r) => setTimeout(r, 200));
      const a = s.exec('while True: pass');
      assert.equal(await a.interrupt(), true);
      await late();
      assert.equal(await outcome(a), 'cancelled');
      const b = s.exec('while True: pass');
      assert.equal(await s.interrupt(b.id), true);
      await late();
      assert.equal(await outcome(b), 'cancelled');
      const c = s.exec('while True: pass');
      assert.equal(await s.interrupt(), true);
      await late();
      assert.equal(await outcome(c), 'cancelled');
    });
  });

  test('a Context that binds on the interrupted call itself', async () => {
    const ctx = client.context(3);
    for (let i = 0; i < 10; i++) {
      await ctx.reset();
      const running = ctx.exec('while True: pass');
      assert.equal(await running.interrupt(), true);
      assert.equal(await outcome(running), 'cancelled');
    }
    await ctx.exec('x = 5');
    const running = ctx.exec('while True: pass');
    assert.equal(await ctx.interrupt(), true);
    assert.equal(await outcome(running), 'cancelled');
    assert.equal(await ctx.eval('x'), 5);
  });

  test('a stateless call is cancelled by its interrupt, and the pool carries on', async () => {
    for (let i = 0; i < 20; i++) {
      const running = client.exec('while True: pass');
      assert.equal(await running.interrupt(), true);
      assert.equal(await outcome(running), 'cancelled');
    }
    assert.equal(await client.eval('6*7', { timeoutMs: 10_000 }), 42);
    const done = client.eval('1');
    await done;
    assert.equal(await done.interrupt(), false);
  });
});
