// Callbacks against a real pyexecd: Python's pyexec.call (and erlang.call)
// runs functions registered with client.registerFunction (sync or async)
// or passed per call: values of every kind both ways, keyword arguments,
// errors both ways, an unknown name, re-entry (Python -> Node -> Python ...
// 8 levels deep), concurrent callbacks (concurrent calls, stateless and on
// sessions), a callback that never answers (TimeoutError in Python,
// the session fine), an interrupt while Python waits for a callback. Then
// it measures a callback's round trip and Run against Eval.

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { performance } from 'perf_hooks';

import { CancelledError, Client, Float, PyValue, PythonError, Session, Tuple, tuple } from '../src';
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

/** A client of its own, with `fns` registered; closed after fn. */
async function withFunctions<T>(
  fns: Record<string, (...args: PyValue[]) => unknown>,
  fn: (c: Client) => Promise<T>,
): Promise<T> {
  const c = new Client(server.address, { defaultTimeoutMs: 20_000 });
  for (const [name, f] of Object.entries(fns)) c.registerFunction(name, f as never);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

describe('callbacks', () => {
  test('values both ways, keyword arguments, sync and async functions', async () => {
    let got: PyValue[] = [];
    await withFunctions(
      {
        record: (...args) => {
          got = args;
          return args.length;
        },
        give: async () => {
          await new Promise((r) => setTimeout(r, 5));
          return [
            null,
            undefined,
            true,
            2n ** 70n,
            -3,
            new Float(2),
            1.5,
            'héllo',
            Buffer.from([0, 255]),
            [1, [2]],
            tuple('a', 1),
            new Set([1]),
            { k: 1 },
            new Map<PyValue, PyValue>([[tuple(1, 2), 'x']]),
          ];
        },
        kw: (...args) => args,
      },
      async (c) => {
        const n = await c.eval(
          "pyexec.call('record', None, True, 2**70, -3, 1.5, 'héllo', b'\\x00\\xff', [1, [2]], (1, 'a'), {2}, {'k': 1}, {1: 'a'})",
        );
        assert.equal(n, 12);
        assert.deepEqual(got, [
          null,
          true,
          2n ** 70n,
          -3,
          1.5,
          'héllo',
          Buffer.from([0, 255]),
          [1, [2]],
          Tuple.of(1, 'a'),
          new Set([2]),
          { k: 1 },
          new Map([[1, 'a']]),
        ]);
        assert.ok(got[8] instanceof Tuple);
        const types = await c.eval(
          "[type(v).__name__ for v in pyexec.call('give')] + [pyexec.call('give')[3] == 2**70, pyexec.call('give')[13]]",
        );
        assert.deepEqual(types, [
          'NoneType',
          'NoneType',
          'bool',
          'int',
          'int',
          'float',
          'float',
          'str',
          'bytes',
          'list',
          'tuple',
          'set',
          'dict',
          'dict',
          true,
          new Map([[Tuple.of(1, 2), 'x']]),
        ]);
        // Keyword arguments: one more argument, a plain object.
        assert.deepEqual(await c.eval("pyexec.call('kw', 1, a=2, b='x')"), [1, { a: 2, b: 'x' }]);
        assert.deepEqual(await c.eval("erlang.call('kw')"), []);
      },
    );
  });

  test('errors both ways', async () => {
    await withFunctions(
      {
        boom: () => {
          throw new TypeError('no such user');
        },
        rejects: async () => {
          throw new RangeError('later');
        },
        unsendable: () => () => 1,
        one: () => 1,
      },
      async (c) => {
        // The client's error reaches Python as pyexec.CallbackError.
        const caught = await c.exec(
          "try:\n    pyexec.call('boom')\nexcept pyexec.CallbackError as e:\n    print(e.type, '|', e.message)",
        );
        assert.equal(caught.stdout, 'TypeError | no such user\n');
        let err = await c.eval("pyexec.call('rejects')").catch((e: unknown) => e);
        assert.ok(err instanceof PythonError && err.type === 'CallbackError', String(err));
        assert.match(err.pythonMessage, /RangeError: later/);
        // A value with no Python mapping is an error of the callback too.
        err = await c.eval("pyexec.call('unsendable')").catch((e: unknown) => e);
        assert.ok(err instanceof PythonError && err.type === 'CallbackError', String(err));
        assert.match(err.pythonMessage, /cannot send a function/);
        // An unknown name.
        err = await c.eval("pyexec.call('nope', 1)").catch((e: unknown) => e);
        assert.ok(err instanceof PythonError && err.type === 'CallbackError', String(err));
        assert.match(err.pythonMessage, /LookupError: .*'nope'/);
        // Python's own error after a callback reaches the client as usual.
        err = await c.eval("pyexec.call('one') / 0").catch((e: unknown) => e);
        assert.ok(err instanceof PythonError && err.type === 'ZeroDivisionError', String(err));
      },
    );
  });

  test('registration: per-call functions, unregister, no functions means plain calls', async () => {
    await withFunctions({ f: () => 'registered' }, async (c) => {
      assert.deepEqual(c.registeredFunctions, ['f']);
      assert.equal(await c.eval("pyexec.call('f')"), 'registered');
      // Per call: added, and winning on a clash.
      assert.equal(await c.eval("pyexec.call('f') + pyexec.call('g')", { functions: { g: () => '+g' } }), 'registered+g');
      assert.equal(await c.eval("pyexec.call('f')", { functions: new Map([['f', () => 'per call']]) }), 'per call');
      assert.equal(c.unregisterFunction('f'), true);
      assert.equal(c.unregisterFunction('f'), false);
      // Nothing registered: a plain Eval, where pyexec.call cannot reach the client.
      const err = await c.eval("pyexec.call('f')").catch((e: unknown) => e);
      assert.ok(err instanceof PythonError && err.type === 'RuntimeError', String(err));
      // `functions: {}` makes it a Run all the same: the name is unknown.
      const err2 = await c.eval("pyexec.call('f')", { functions: {} }).catch((e: unknown) => e);
      assert.ok(err2 instanceof PythonError && err2.type === 'CallbackError', String(err2));
    });
  });

  test('re-entry: Python -> Node -> Python, 8 levels deep, on a session, a context and stateless', async () => {
    let session: Session | undefined;
    await withFunctions(
      {
        down: async (n) => ((await session!.call('__main__', 'down', [n as number])) as number) + 1,
      },
      async (c) => {
        const DOWN = "def down(n):\n    return 0 if n == 0 else pyexec.call('down', n - 1) + 1";
        await c.withSession(async (s) => {
          session = s;
          await s.exec(DOWN);
          assert.equal(await s.eval('down(8)'), 16);
          assert.equal(await s.eval('down(5)'), 10);
        });
        // A context: the nested calls go through the same context.
        c.registerFunction('cdown', async (n) => ((await c.context(2).call('__main__', 'cdown', [n as number])) as number) + 1);
        await c.context(2).exec(DOWN.replace(/down/g, 'cdown'));
        assert.equal(await c.context(2).eval('cdown(5)'), 10);
        // Stateless: the nested stateless call runs on the waiting interpreter.
        c.registerFunction('sdown', async (n) => {
          const m = n as number;
          return m === 0 ? 0 : ((await c.eval(`pyexec.call('sdown', ${m - 1}) + 1`)) as number) + 1;
        });
        assert.equal(await c.eval("pyexec.call('sdown', 5)"), 10);
        // ... on the very interpreter that waits (another worker would have another pid).
        c.registerFunction('pid', () => c.eval("__import__('os').getpid()"));
        assert.equal(await c.eval("pyexec.call('pid') == __import__('os').getpid()"), true);
      },
    );
  });

  test('concurrent callbacks: calls in flight at once, stateless and on sessions, each with its callbacks', async () => {
    // (Several Python threads of ONE call waiting in pyexec.call at once are
    // the server's to sort out: integration_tests/test_callbacks.py.)
    let inFlight = 0;
    let most = 0;
    await withFunctions(
      {
        slow: async (x) => {
          most = Math.max(most, ++inFlight);
          await new Promise((r) => setTimeout(r, 300));
          inFlight--;
          return (x as number) * 2;
        },
      },
      async (c) => {
        const t0 = performance.now();
        const [a, b] = await Promise.all([c.bind(), c.bind()]);
        try {
          const calls = [
            ...[1, 2, 3, 4].map((i) => c.eval(`pyexec.call('slow', ${i}) + ${i}`)),
            a.eval("sum(pyexec.call('slow', i) for i in range(3))"),
            b.eval("sum(pyexec.call('slow', i) for i in range(3))"),
          ];
          assert.deepEqual(await Promise.all(calls), [3, 6, 9, 12, 6, 6]);
        } finally {
          await Promise.all([a.unbind(), b.unbind()]);
        }
        const ms = performance.now() - t0;
        assert.ok(most >= 3, `only ${most} callbacks were in flight at once`);
        console.log(`callbacks: 6 concurrent calls (10 callbacks of 300 ms) in ${ms.toFixed(0)} ms, ${most} callbacks at once`);
      },
    );
  });

  test('a callback that never answers: TimeoutError in Python before the deadline; interrupt while waiting', async () => {
    await withFunctions({ never: () => new Promise(() => {}) }, async (c) => {
      await c.withSession(async (s) => {
        await s.exec('state = 1');
        const t0 = performance.now();
        const out = await s.exec(
          "try:\n    pyexec.call('never')\nexcept TimeoutError as e:\n    print('timed out')",
          { timeoutMs: 1500 },
        );
        assert.equal(out.stdout, 'timed out\n');
        assert.ok(performance.now() - t0 < 1500);
        assert.equal(await s.eval('state'), 1);
        // Interrupted while Python waits for the callback.
        const waiting = s.eval("pyexec.call('never')", { timeoutMs: 30_000 });
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(await waiting.interrupt(), true);
        await assert.rejects(waiting, CancelledError);
        assert.equal(await s.eval('state + 1'), 2);
      });
    });
  });

  test('measure: a callback round trip, and Run against Eval', async () => {
    const N = 300;
    const p50 = async (f: () => Promise<unknown>): Promise<number> => {
      for (let i = 0; i < 20; i++) await f(); // warm up
      const t: number[] = [];
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        await f();
        t.push(performance.now() - t0);
      }
      t.sort((a, b) => a - b);
      return t[Math.floor(N / 2)];
    };
    await client.withSession(async (s) => {
      await withFunctions({ f: () => 1 }, async (c) => {
        const h = c.session(s.token);
        // Interleaved twice, so that the machine's load drifts over all three alike.
        const r = { eval: [] as number[], run: [] as number[], callback: [] as number[] };
        for (let round = 0; round < 2; round++) {
          r.eval.push(await p50(() => s.eval('1'))); // plain Eval: s's client has no functions
          r.run.push(await p50(() => h.eval('1'))); // a Run that makes no callback
          r.callback.push(await p50(() => h.eval("pyexec.call('f')"))); // a Run with one callback
        }
        const [ev, run, cb] = [Math.min(...r.eval), Math.min(...r.run), Math.min(...r.callback)];
        console.log(
          `callbacks: p50 over ${N} calls: Eval ${(ev * 1000).toFixed(0)} us, Run ${(run * 1000).toFixed(0)} us ` +
            `(${(run / ev).toFixed(2)}x Eval), Run with one callback ${(cb * 1000).toFixed(0)} us ` +
            `(${(cb / ev).toFixed(2)}x Eval; the callback round trip adds ${((cb - run) * 1000).toFixed(0)} us)`,
        );
        assert.ok(cb > 0 && run > 0 && ev > 0);
      });
    });
  });
});
