// Snapshots against a real pyexecd: session.snapshot() carries variables,
// functions, classes, imported modules and live refs, and
// client.bind({ restore }) starts a new session with them; what cannot be
// carried (a socket, a generator) is listed; __pyexec_restore__'s error is
// reported on the restored session; an altered or made-up blob is refused
// with InvalidArgumentError before anything runs, and the genuine blob still
// restores afterwards.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';

import { Client, InvalidArgumentError, PythonError, Ref, SessionNotFoundError } from '../src';
import { RunningServer, startPyexecd } from './server';

let server: RunningServer;
let client: Client;

before(async () => {
  server = await startPyexecd(['--lease_grace=1s']);
  client = new Client(server.address, { defaultTimeoutMs: 30_000 });
});

after(async () => {
  await client?.close();
  await server?.stop();
});

const STATE = `
import json, socket
def double(x):
    return 2 * x
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm1(self):
        return abs(self.x) + abs(self.y)
p = Point(3, -4)
counter = 0
def bump():
    global counter
    counter += 1
    return counter
sock = socket.socket()
gen = (i for i in range(3))
`;

describe('snapshot and restore', () => {
  test('state, functions, classes and refs travel; sockets and generators are listed as lost', async () => {
    await using s = await client.bind();
    await s.exec(STATE);
    const ref = await s.eval('Point(5, 6)');
    assert.ok(ref instanceof Ref);
    const snap = await s.snapshot();
    assert.ok(Buffer.isBuffer(snap.blob) && snap.blob.length > 0);
    assert.deepEqual(snap.lost.map((l) => l.name).sort(), ['gen', 'sock']);
    const sock = snap.lost.find((l) => l.name === 'sock')!;
    assert.equal(sock.type, 'socket.socket');
    assert.ok(sock.reason.length > 0);
    assert.ok(snap.modules.includes('json'), `modules: ${snap.modules.join(',')}`);
    assert.equal(snap.refs, 1);

    await using r = await client.bind({ restore: snap });
    assert.notEqual(r.token, s.token);
    assert.equal(r.leased, true); // a restored session is leased like any other
    assert.deepEqual(r.restoreLost, []);
    assert.equal(r.restoreError, undefined);
    assert.deepEqual(
      await r.eval('[double(21), p.norm1(), type(p).__name__, json.dumps([1])]'),
      [42, 7, 'Point', '[1]'],
    );
    // Restored functions use the restored namespace as their globals.
    assert.deepEqual(await r.eval('[bump(), bump(), counter]'), [1, 2, 2]);
    assert.equal(await r.eval("'sock' in globals() or 'gen' in globals()"), false);
    // The live ref comes back under the same id, usable from the new session.
    assert.equal(await r.eval('q.norm1()', { locals: { q: ref } }), 11);
    // The original session carries on unchanged.
    assert.deepEqual(await s.eval('[counter, next(gen)]'), [0, 0]);
  });

  test('the blob alone restores, and withSession takes restore', async () => {
    const blob = await client.withSession(async (s) => {
      await s.exec('xs = [1, 2, 3]\nclass Box:\n    def __init__(self, v):\n        self.v = v\nb = Box("kept")');
      return (await s.snapshot()).blob;
    });
    const bytes = new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength); // not a Buffer
    assert.deepEqual(await client.withSession((r) => r.eval('[sum(xs), b.v, Box(2).v]'), { restore: bytes }), [6, 'kept', 2]);
  });

  test('__pyexec_restore__ runs on restore and its error is reported, the state restored all the same', async () => {
    await using s = await client.bind();
    await s.exec('reopened = False\ndef __pyexec_restore__():\n    global reopened\n    reopened = True\n');
    await using ok = await client.bind({ restore: await s.snapshot() });
    assert.equal(ok.restoreError, undefined);
    assert.equal(await ok.eval('reopened'), true);

    await using t = await client.bind();
    await t.exec("x = 1\ndef __pyexec_restore__():\n    raise RuntimeError('cannot reconnect')\n");
    await using bad = await client.bind({ restore: await t.snapshot() });
    assert.ok(bad.restoreError instanceof PythonError);
    assert.equal(bad.restoreError.type, 'RuntimeError');
    assert.match(bad.restoreError.message, /cannot reconnect/);
    assert.equal(await bad.eval('x'), 1);
  });

  test('an altered or forged blob is refused with InvalidArgumentError; the genuine one still restores', async () => {
    await using s = await client.bind();
    await s.exec('x = 41');
    const snap = await s.snapshot();
    const before = (await client.getStats()).sessions;
    for (const i of [0, snap.blob.length >> 1, snap.blob.length - 1]) {
      const altered = Buffer.from(snap.blob);
      altered[i] ^= 0x40;
      await assert.rejects(client.bind({ restore: altered }), InvalidArgumentError);
      await assert.rejects(client.bind({ restore: { ...snap, blob: altered } }), InvalidArgumentError);
    }
    for (const junk of [Buffer.from('x'), Buffer.from('\x0a\x03abc\x12\x01z', 'latin1'), snap.blob.subarray(0, -5)]) {
      await assert.rejects(client.bind({ restore: junk }), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, `${String(e)}`);
        assert.ok(!(e instanceof SessionNotFoundError));
        return true;
      });
    }
    assert.equal((await client.getStats()).sessions, before, 'a refused restore left a session bound');
    await using r = await client.bind({ restore: snap });
    assert.equal(await r.eval('x'), 41);
  });

  test('a context snapshots its session; stateless calls have no session to snapshot', async () => {
    const ctx = client.context(1);
    try {
      await ctx.exec('y = 5');
      const snap = await ctx.snapshot();
      await using r = await client.bind({ restore: snap });
      assert.equal(await r.eval('y'), 5);
    } finally {
      await ctx.reset();
    }
    // Context 2 was never used: it has no session yet.
    await assert.rejects(client.context(2).snapshot(), SessionNotFoundError);
  });
});
