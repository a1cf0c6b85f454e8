// The client's public API against a real pyexecd (started here, port 0):
// value mapping in the default mode, sessions, contexts, errors, deadlines,
// cancel and stats.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as net from 'net';

import {
  CancelledError,
  Client,
  DeadlineExceededError,
  Float,
  InvalidArgumentError,
  Opaque,
  PoolExhaustedError,
  PyExecError,
  PyInput,
  PythonError,
  SessionNotFoundError,
  Tuple,
  UnavailableError,
  WorkerDiedError,
  status,
  tuple,
} from '../src';
import { RunningServer, startPyexecd } from './server';

let server: RunningServer;
let client: Client;

before(async () => {
  server = await startPyexecd();
  client = new Client(server.address, { defaultTimeoutMs: 20_000 });
});

after(async () => {
  await client?.close();
  await server?.stop();
});

/** Another client's view of the session count (contexts of `client` stay out of it). */
async function sessions(): Promise<number> {
  return (await client.getStats()).sessions;
}

describe('stateless calls', () => {
  test('eval, exec and call', async () => {
    assert.equal(await client.eval('6*7'), 42);
    assert.deepEqual(await client.exec('x = 1\nprint("hi")'), { stdout: 'hi\n', stderr: '' });
    assert.equal(await client.call('math', 'gcd', [12, 18]), 6);
    assert.equal(await client.call('builtins', 'int', ['ff'], { kwargs: { base: 16 } }), 255);
    assert.equal(await client.call('builtins', 'str.upper', ['abc']), 'ABC');
    const n: number = await client.eval<number>('1+1'); // typed without a cast
    const up: string = await client.call<string>('builtins', 'str.upper', ['x']);
    assert.deepEqual([n, up], [2, 'X']);
  });

  test('evalResult and callResult carry output', async () => {
    const r = await client.evalResult('(print("out"), __import__("sys").stderr.write("err"))[1]');
    assert.deepEqual(r, { value: 3, stdout: 'out\n', stderr: 'err' });
    const c = await client.callResult('builtins', 'print', ['a', 'b'], { kwargs: { sep: '-' } });
    assert.deepEqual(c, { value: null, stdout: 'a-b\n', stderr: '' });
  });

  test('locals are visible to one call', async () => {
    assert.equal(await client.eval('a + b', { locals: { a: 40, b: 2 } }), 42);
    assert.equal(await client.eval('a * 2', { locals: new Map([['a', 'xy']]) }), 'xyxy');
  });
});

describe('value mapping (default mode)', () => {
  const roundtrip = (v: PyInput) => client.eval('x', { locals: { x: v } });
  const pyType = (v: PyInput) => client.eval('type(x).__name__', { locals: { x: v } });

  test('ints: number when safe, bigint beyond', async () => {
    assert.equal(await client.eval('2**53 - 1'), Number.MAX_SAFE_INTEGER);
    assert.equal(await client.eval('2**53'), 2n ** 53n);
    assert.equal(await client.eval('-(2**63)'), -(2n ** 63n));
    assert.equal(await client.eval('2**200'), 2n ** 200n);
    assert.equal(await roundtrip(-(2n ** 100n)), -(2n ** 100n));
    assert.equal(await pyType(5n), 'int');
    assert.equal(await pyType(5), 'int');
  });

  test('floats, Float and the non-finite ones', async () => {
    assert.equal(await client.eval('1.5'), 1.5);
    assert.equal(await pyType(1.5), 'float');
    assert.equal(await pyType(new Float(3)), 'float');
    assert.equal(await pyType(-0), 'float');
    assert.equal(await pyType(2 ** 60), 'float'); // beyond safe: a float, not an int
    assert.ok(Number.isNaN(await client.eval('float("nan")')));
    assert.equal(await roundtrip(-Infinity), -Infinity);
    assert.equal(await client.eval('3.0'), 3); // the documented 'auto' loss
  });

  test('exact ints mode keeps int and float apart', async () => {
    const exact = new Client(server.address, { values: { ints: 'bigint' } });
    try {
      assert.equal(await exact.eval('3'), 3n);
      assert.equal(await exact.eval('3.0'), 3);
      assert.equal(await exact.eval('type(x).__name__', { locals: { x: 3 } }), 'float');
      assert.equal(await exact.eval('type(x).__name__', { locals: { x: 3n } }), 'int');
    } finally {
      await exact.close();
    }
  });

  test('str, bytes, Uint8Array', async () => {
    assert.equal(await roundtrip('héllo 世界 😀'), 'héllo 世界 😀');
    const b = await client.eval("b'\\x00\\xff'");
    assert.ok(Buffer.isBuffer(b));
    assert.deepEqual(b, Buffer.from([0, 255]));
    assert.equal(await pyType(new Uint8Array([1, 2])), 'bytes');
    assert.equal(await pyType('ab'), 'str');
  });

  test('list, tuple and set stay distinct', async () => {
    const t = await client.eval('(1, [2], {3})');
    assert.ok(t instanceof Tuple);
    assert.deepEqual(Array.from(t as Tuple), [1, [2], new Set([3])]);
    assert.ok(!((await client.eval('[1]')) instanceof Tuple));
    assert.equal(await pyType(tuple(1, 2)), 'tuple');
    assert.equal(await pyType(Tuple.of(7)), 'tuple');
    assert.equal(await pyType([1, 2]), 'list');
    assert.equal(await pyType(new Set([1])), 'set');
    assert.ok((await client.eval('frozenset({1})')) instanceof Set);
    // Array methods on a tuple give plain arrays.
    assert.ok(!(tuple(1, 2).map((x) => x) instanceof Tuple));
  });

  test('dicts: object for str keys, Map otherwise, exact both ways', async () => {
    assert.deepEqual(await client.eval('{"a": 1, "b": [2]}'), { a: 1, b: [2] });
    const m = await client.eval('{1: "one", "1": "str one", (1, 2): "pair"}');
    assert.ok(m instanceof Map);
    const keys = Array.from((m as Map<unknown, unknown>).keys());
    assert.equal(keys[0], 1);
    assert.equal(keys[1], '1');
    assert.ok(keys[2] instanceof Tuple);
    assert.equal(await client.eval('len(x) == 3 and x[(1, 2)] == "pair" and x[1] == "one"', { locals: { x: m as PyInput } }), true);
    // A "__proto__" key is data, not the prototype, both ways.
    const p = (await client.eval('{"__proto__": 1}')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(p), ['__proto__']);
    assert.equal(await client.eval('x["__proto__"]', { locals: { x: p as PyInput } }), 1);
    assert.deepEqual(await client.eval('{}'), {});
    const mapped = new Client(server.address, { values: { dicts: 'map' } });
    try {
      assert.deepEqual(await mapped.eval('{"b": 1, "2": 2}'), new Map<unknown, unknown>([['b', 1], ['2', 2]]));
    } finally {
      await mapped.close();
    }
  });

  test('opaque results, and what cannot be sent', async () => {
    const o = await client.eval('object()');
    assert.ok(o instanceof Opaque);
    assert.equal((o as Opaque).type, 'object');
    await assert.rejects(client.eval('x', { locals: { x: o as unknown as PyInput } }), TypeError);
    await assert.rejects(client.eval('x', { locals: { x: (() => 1) as unknown as PyInput } }), TypeError);
    await assert.rejects(client.eval('x', { locals: { x: new Date() as unknown as PyInput } }), TypeError);
    const cyclic: PyInput[] = [];
    cyclic.push(cyclic);
    await assert.rejects(client.eval('x', { locals: { x: cyclic } }), InvalidArgumentError);
  });

  test('nesting past the server limit is INVALID_ARGUMENT from the server', async () => {
    let v: PyInput = [];
    for (let i = 1; i < 70; i++) v = [v];
    const err = await client.eval('x', { locals: { x: v } }).catch((e) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.details, /deep/);
  });
});

describe('errors', () => {
  test('PythonError carries type, message, traceback and output', async () => {
    const err = await client.exec('print("before")\nraise KeyError("k")').catch((e) => e);
    assert.ok(err instanceof PythonError);
    assert.equal(err.type, 'KeyError');
    assert.equal(err.pythonMessage, "'k'");
    assert.match(err.traceback, /raise KeyError/);
    assert.equal(err.stdout, 'before\n');
    assert.equal(err.message, "KeyError: 'k'");
    assert.equal(err.name, 'PythonError');
  });

  test('empty code is INVALID_ARGUMENT', async () => {
    await assert.rejects(client.eval(''), InvalidArgumentError);
  });

  test('an unreachable server is UnavailableError', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const dead = new Client(`127.0.0.1:${port}`);
    try {
      await assert.rejects(dead.eval('1', { timeoutMs: 5000 }), UnavailableError);
    } finally {
      await dead.close();
    }
  });
});

describe('sessions', () => {
  test('withSession keeps state and unbinds', async () => {
    let token = '';
    const r = await client.withSession(async (s) => {
      token = s.token;
      await s.exec('import math\nx = 41');
      assert.ok(s.idleTimeoutSeconds > 0);
      return s.eval('x + 1');
    });
    assert.equal(r, 42);
    await assert.rejects(client.session(token).eval('x'), SessionNotFoundError);
  });

  test('withSession unbinds when the callback throws', async () => {
    let token = '';
    const boom = new Error('boom');
    await assert.rejects(
      client.withSession(async (s) => {
        token = s.token;
        throw boom;
      }),
      (e) => e === boom,
    );
    await assert.rejects(client.session(token).eval('1'), SessionNotFoundError);
  });

  test('await using unbinds at scope exit', async () => {
    let token = '';
    {
      await using s = await client.bind({ idleTimeoutSeconds: 60 });
      token = s.token;
      assert.equal(s.idleTimeoutSeconds, 60);
      await s.exec('y = 2');
      assert.equal(await s.eval('y'), 2);
    }
    await assert.rejects(client.session(token).eval('y'), SessionNotFoundError);
  });

  test('unbind is idempotent', async () => {
    const s = await client.bind();
    await s.unbind();
    await s.unbind();
    await client.session(s.token).unbind(); // unknown token: OK
  });

  test('session call reaches __main__ functions', async () => {
    await client.withSession(async (s) => {
      await s.exec('def add(a, b=0):\n    return a + b');
      assert.equal(await s.call('__main__', 'add', [40], { kwargs: { b: 2 } }), 42);
    });
  });
});

describe('deadlines and cancel', () => {
  test('timeout is DeadlineExceededError and the session keeps its state', async () => {
    await client.withSession(async (s) => {
      await s.exec('import time\nx = 1');
      const t0 = Date.now();
      await assert.rejects(s.eval('time.sleep(30)', { timeoutMs: 300 }), DeadlineExceededError);
      assert.ok(Date.now() - t0 < 10_000);
      assert.equal(await s.eval('x'), 1);
    });
  });

  test('AbortSignal cancels a running call; state kept', async () => {
    await client.withSession(async (s) => {
      await s.exec('import time\nx = 2');
      const ac = new AbortController();
      const p = s.exec('time.sleep(30)', { signal: ac.signal });
      // Running once a worker is busy (this file's pyexecd runs nothing else).
      for (let i = 0; i < 1000 && (await client.getStats()).busyWorkers < 1; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok((await client.getStats()).busyWorkers >= 1, 'the call never started');
      const t0 = Date.now();
      ac.abort();
      const err = await p.catch((e) => e);
      assert.ok(err instanceof CancelledError, String(err));
      assert.ok(Date.now() - t0 < 5000);
      assert.equal(await s.eval('x'), 2);
    });
  });

  test('an already aborted signal rejects without a call', async () => {
    const before = (await client.getStats()).callsTotal;
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    const err = await client.eval('1', { signal: ac.signal }).catch((e) => e);
    assert.ok(err instanceof CancelledError);
    assert.equal((err.cause as Error).message, 'stop');
    // Nothing reached the server (GetStats is not counted in callsTotal).
    assert.equal((await client.getStats()).callsTotal, before);
  });
});

describe('shared contexts', () => {
  test('context(n) is one lazily bound session, shared', async () => {
    const c = new Client(server.address, { numContexts: 2 });
    try {
      const s0 = await sessions();
      await Promise.all([1, 2, 3, 4, 5].map((i) => c.context(1).exec(`v${i} = ${i}`)));
      assert.equal(await sessions(), s0 + 1); // concurrent first calls bound once
      assert.equal(await c.context(1).eval('v1 + v5'), 6);
      await assert.rejects(c.context(2).eval('v1'), PythonError); // a different interpreter
      assert.equal(await sessions(), s0 + 2);
      assert.equal(c.context(), c.context(1));
      assert.equal(c.context(), c.context(2));
      assert.equal(c.context(), c.context(1));
      assert.throws(() => c.context(0), RangeError);
      assert.throws(() => c.context(3), RangeError);
      await c.close();
      assert.equal(await sessions(), s0);
      await assert.rejects(c.eval('1'), PyExecError); // the channel is closed
    } finally {
      await c.close();
    }
  });

  test('a context whose worker died rebinds on the next call', async () => {
    const c = new Client(server.address, { numContexts: 1 });
    try {
      await c.context(1).exec('z = 1');
      await assert.rejects(c.context(1).exec('import os\nos._exit(3)'), WorkerDiedError);
      // The session is gone; the next call binds a fresh one, without z.
      const err = await c.context(1).eval('z').catch((e) => e);
      assert.ok(err instanceof PythonError && err.type === 'NameError', String(err));
      await c.context(1).exec('z = 2');
      assert.equal(await c.context(1).eval('z'), 2);
    } finally {
      await c.close();
    }
  });
});

describe('stats and limits', () => {
  test('getStats', async () => {
    const a = await client.getStats();
    await client.eval('1');
    const b = await client.getStats();
    assert.equal(b.callsTotal, a.callsTotal + 1); // Eval counts, GetStats does not
    assert.equal(b.maxWorkers, 16);
    assert.ok(b.numWorkers >= 1);
    assert.equal(typeof b.workersSpawned, 'number');
  });

  test('Bind past --max_workers is PoolExhaustedError', async () => {
    const small = await startPyexecd(['--max_workers=1']);
    const c = new Client(small.address);
    try {
      await c.withSession(async () => {
        const err = await c.bind().catch((e) => e);
        assert.ok(err instanceof PoolExhaustedError, String(err));
        assert.match(err.details, /no_workers_available/);
      });
    } finally {
      await c.close();
      await small.stop();
    }
  });
});
