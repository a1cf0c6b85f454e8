// Streams, object references and Interrupt (issue 10's RPCs) through the
// public API against a real pyexecd (started here, port 0, with a small
// --max_refs_per_session so the limit is reachable).

import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'util';

import {
  CancelledError,
  Client,
  DeadlineExceededError,
  InvalidArgumentError,
  Opaque,
  PoolExhaustedError,
  PythonError,
  Ref,
  RefLimitError,
  Session,
  SessionNotFoundError,
  StreamEvent,
  UnknownRefError,
} from '../src';
import { RunningServer, startPyexecd } from './server';

const MAX_REFS = 3;

let server: RunningServer;
let client: Client;

before(async () => {
  server = await startPyexecd([`--max_refs_per_session=${MAX_REFS}`]);
  client = new Client(server.address, { defaultTimeoutMs: 20_000 });
});

after(async () => {
  await client?.close();
  await server?.stop();
});

/** Runs fn on a fresh session, always unbound afterwards. */
function withSession<T>(fn: (s: Session) => Promise<T>): Promise<T> {
  return client.withSession(fn);
}

/** Collects a stream's events, and the error that ended it (if any). */
async function collect(it: AsyncIterable<StreamEvent>): Promise<{ events: StreamEvent[]; error?: unknown }> {
  const events: StreamEvent[] = [];
  try {
    for await (const ev of it) events.push(ev);
  } catch (error) {
    return { events, error };
  }
  return { events };
}

/**
 * The events with adjacent output chunks of the same stream joined: where
 * a chunk ends (line ends, 50 ms flushes) is not part of the contract, but
 * the order and content of everything written are.
 */
function merged(events: readonly StreamEvent[]): StreamEvent[] {
  const out: StreamEvent[] = [];
  for (const ev of events) {
    const last = out[out.length - 1];
    if (last !== undefined && last.type === ev.type && ev.type !== 'value') {
      out[out.length - 1] = { type: ev.type, data: (last as typeof ev).data + ev.data };
    } else {
      out.push(ev);
    }
  }
  return out;
}

/**
 * Asserts that `actual` is exactly `expected`: every event, once, in order.
 * On a mismatch it reports the first index that differs and both lengths,
 * rather than a diff of thousands of events.
 */
function assertSameEvents(actual: readonly StreamEvent[], expected: readonly StreamEvent[]): void {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (isDeepStrictEqual(actual[i], expected[i])) continue;
    const around = actual.slice(Math.max(0, i - 2), i + 3).map(brief);
    assert.fail(
      `event ${i} of ${expected.length} is ${brief(actual[i])}, want ${brief(expected[i])} ` +
        `(got ${actual.length} events; around it: ${around.join(', ')})`,
    );
  }
  assert.equal(actual.length, expected.length, `got ${actual.length} events, want ${expected.length}`);
}

/** A short description of an event for failure messages. */
function brief(ev: StreamEvent | undefined): string {
  if (ev === undefined) return 'missing';
  if (ev.type !== 'value') return `${ev.type} ${JSON.stringify(ev.data.slice(0, 40))}`;
  const v = ev.value;
  if (Buffer.isBuffer(v)) return `value <${v.length} bytes ${v.subarray(0, 8).toString('hex')}...>`;
  return `value ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once a worker is busy: the call just started runs (each test file has its own pyexecd). */
async function waitBusy(timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await client.getStats()).busyWorkers < 1) {
    if (Date.now() > deadline) throw new Error(`no call was running after ${timeoutMs} ms`);
    await sleep(10);
  }
}

describe('execStream and callStream', () => {
  test('output arrives before the call ends', async () => {
    await withSession(async (s) => {
      for (const [code, first] of [
        ['print("hi")\nimport time\ntime.sleep(1)', 'hi\n'],
        // No line end: the server's 50 ms flush sends it.
        ['import sys, time\nsys.stdout.write("partial")\ntime.sleep(1)', 'partial'],
      ]) {
        const start = performance.now();
        const events: StreamEvent[] = [];
        let firstAt = -1;
        for await (const ev of s.execStream(code)) {
          if (firstAt < 0) firstAt = performance.now() - start;
          events.push(ev);
        }
        const total = performance.now() - start;
        assert.deepEqual(events, [{ type: 'stdout', data: first }]);
        assert.ok(firstAt >= 0 && firstAt < 900, `first chunk after ${firstAt} ms, not before the call ended`);
        assert.ok(total >= 1000, `the call took ${total} ms, less than its sleep`);
      }
    });
  });

  test('stdout and stderr keep their order; a Python error ends the iteration', async () => {
    const code = 'import sys\nprint("a")\nprint("b", file=sys.stderr)\nprint("c")\nraise ValueError("bad")';
    const { events, error } = await collect(client.execStream(code));
    assert.deepEqual(events, [
      { type: 'stdout', data: 'a\n' },
      { type: 'stderr', data: 'b\n' },
      { type: 'stdout', data: 'c\n' },
    ]);
    assert.ok(error instanceof PythonError, String(error));
    assert.equal(error.type, 'ValueError');
    assert.equal(error.pythonMessage, 'bad');
    assert.match(error.traceback, /ValueError: bad/);
  });

  test('a generator is streamed item by item', async () => {
    await withSession(async (s) => {
      await s.exec(
        'import time\n' +
          'def gen(n):\n    for i in range(n):\n        print("making", i)\n        yield i * i\n' +
          '    raise KeyError("done")\n' +
          'def slow():\n    yield 1\n    time.sleep(1)\n    yield 2\n',
      );
      const { events, error } = await collect(s.callStream('__main__', 'gen', [3]));
      assert.deepEqual(events, [
        { type: 'stdout', data: 'making 0\n' },
        { type: 'value', value: 0 },
        { type: 'stdout', data: 'making 1\n' },
        { type: 'value', value: 1 },
        { type: 'stdout', data: 'making 2\n' },
        { type: 'value', value: 4 },
      ]);
      assert.ok(error instanceof PythonError && error.type === 'KeyError', String(error));

      // The first item arrives while the generator is still running.
      const start = performance.now();
      const at: Array<[StreamEvent, number]> = [];
      for await (const ev of s.callStream('__main__', 'slow')) at.push([ev, performance.now() - start]);
      assert.deepEqual(
        at.map(([ev]) => ev),
        [
          { type: 'value', value: 1 },
          { type: 'value', value: 2 },
        ],
      );
      assert.ok(at[0][1] < 900, `first item after ${at[0][1]} ms`);
      assert.ok(at[1][1] >= 1000, `second item after ${at[1][1]} ms`);
    });
    // A list is iterated too; a str, a dict or a scalar is one value. Stateless works too.
    assert.deepEqual((await collect(client.callStream('builtins', 'sorted', [[3, 1, 2]]))).events, [
      { type: 'value', value: 1 },
      { type: 'value', value: 2 },
      { type: 'value', value: 3 },
    ]);
    assert.deepEqual((await collect(client.callStream('builtins', 'str', ['abc']))).events, [{ type: 'value', value: 'abc' }]);
    assert.deepEqual((await collect(client.callStream('builtins', 'dict', [], { kwargs: { a: 1 } }))).events, [
      { type: 'value', value: { a: 1 } },
    ]);
    assert.deepEqual((await collect(client.callStream('builtins', 'iter', [[1, 2]]))).events, [
      { type: 'value', value: 1 },
      { type: 'value', value: 2 },
    ]);
  });

  test('breaking out of the loop cancels the call; the session keeps its state', async () => {
    await withSession(async (s) => {
      await s.exec('n = 0');
      const code = 'while True:\n    n += 1\n    if n == 1: print("go", flush=True)';
      let first: StreamEvent | undefined;
      for await (const ev of s.execStream(code, { timeoutMs: 30_000 })) {
        first = ev;
        break;
      }
      assert.deepEqual(first, { type: 'stdout', data: 'go\n' });
      // Were the loop still running, this would queue behind it and time out.
      const n = await s.eval<number>('n', { timeoutMs: 10_000 });
      assert.ok(n > 0, `n = ${n}`);
      assert.equal(await s.eval('n', { timeoutMs: 10_000 }), n); // stopped, not still counting

      // A generator left after its first item is interrupted too.
      await s.exec('def forever():\n    i = 0\n    while True:\n        yield i\n        i += 1');
      const got: StreamEvent[] = [];
      for await (const ev of s.callStream('__main__', 'forever')) {
        got.push(ev);
        if (got.length === 3) break;
      }
      assert.deepEqual(
        got.map((e) => (e.type === 'value' ? e.value : e)),
        [0, 1, 2],
      );
      assert.equal(await s.eval('n', { timeoutMs: 10_000 }), n);
    });
  });

  test('AbortSignal, deadline and status errors end the iteration typed', async () => {
    await withSession(async (s) => {
      await s.exec('x = 5');
      const ac = new AbortController();
      const { events, error } = await collect(
        (async function* () {
          for await (const ev of s.execStream('print("go", flush=True)\nwhile True: pass', { signal: ac.signal })) {
            ac.abort();
            yield ev;
          }
        })(),
      );
      assert.deepEqual(events, [{ type: 'stdout', data: 'go\n' }]);
      assert.ok(error instanceof CancelledError, String(error));

      const start = performance.now();
      const dl = await collect(s.execStream('while True: pass', { timeoutMs: 1000 }));
      assert.ok(dl.error instanceof DeadlineExceededError, String(dl.error));
      assert.ok(performance.now() - start < 5000);
      assert.equal(await s.eval('x'), 5);
    });
    const nf = await collect(client.session('no-such-token').execStream('1'));
    assert.ok(nf.error instanceof SessionNotFoundError, String(nf.error));
    const empty = await collect(client.execStream(''));
    assert.ok(empty.error instanceof InvalidArgumentError, String(empty.error));
  });
});

// pyexecd holds at most 8 unconsumed events of a call (backpressure, the
// pool's max_buffered_events): a worker that writes faster than gRPC sends
// is paused and resumed many times, and a consumer that stops reading fills
// the HTTP/2 window, so the server's writes stall as well. Whatever the
// pauses, every event arrives once, in the order the code made it, before
// the end of the stream.
describe('long streams arrive complete and in order', () => {
  const N = 10_000;

  test(`${N} generator items with output between them, read fast, then slowly`, async () => {
    await withSession(async (s) => {
      await s.exec(
        'def items(n):\n    for i in range(n):\n        if i % 100 == 0:\n            print("at", i)\n' +
          '        yield i\n    print("done")\n',
      );
      const expected: StreamEvent[] = [];
      for (let i = 0; i < N; i++) {
        if (i % 100 === 0) expected.push({ type: 'stdout', data: `at ${i}\n` });
        expected.push({ type: 'value', value: i });
      }
      expected.push({ type: 'stdout', data: 'done\n' });

      const got: StreamEvent[] = [];
      for await (const ev of s.callStream('__main__', 'items', [N], { timeoutMs: 60_000 })) {
        got.push(ev);
        // A consumer that stops for a while, then reads in small steps.
        if (got.length === N / 2) await sleep(300);
        else if (got.length > N / 2 && got.length % 500 === 0) await sleep(20);
      }
      assertSameEvents(merged(got), expected);
    });
  });

  test(`${N} lines on stdout and stderr keep their interleaving`, async () => {
    const code = 'import sys\nfor i in range(' + N + '):\n    print(i, file=sys.stderr if i % 7 == 0 else sys.stdout)\n';
    const expected: StreamEvent[] = [];
    for (let i = 0; i < N; i++) expected.push({ type: i % 7 === 0 ? 'stderr' : 'stdout', data: `${i}\n` });
    const got: StreamEvent[] = [];
    for await (const ev of client.execStream(code, { timeoutMs: 60_000 })) {
      got.push(ev);
      if (got.length === 1000) await sleep(300);
    }
    assertSameEvents(merged(got), merged(expected));
  });

  test('items larger than the HTTP/2 window, read slowly', async () => {
    const COUNT = 48;
    const SIZE = 256 * 1024;
    await withSession(async (s) => {
      await s.exec(
        'def big(n, size):\n    for i in range(n):\n        print("item", i)\n' +
          '        yield i.to_bytes(4, "big") * (size // 4)\n',
      );
      const got: StreamEvent[] = [];
      for await (const ev of s.callStream('__main__', 'big', [COUNT, SIZE], { timeoutMs: 60_000 })) {
        got.push(ev);
        await sleep(10);
      }
      const expected: StreamEvent[] = [];
      for (let i = 0; i < COUNT; i++) {
        const item = Buffer.alloc(SIZE);
        for (let off = 0; off < SIZE; off += 4) item.writeUInt32BE(i, off);
        expected.push({ type: 'stdout', data: `item ${i}\n` }, { type: 'value', value: item });
      }
      assertSameEvents(merged(got), expected);
    });
  });
});

describe('refs', () => {
  const MODEL =
    'class Model:\n    def __init__(self):\n        self.w = 3\n' +
    '        self.inner = type("Inner", (), {"name": "in"})()\n' +
    '    def predict(self, x, bias=0):\n        return x * self.w + bias\n';

  test('a ref round trips as arg, kwarg and local', async () => {
    await withSession(async (s) => {
      await s.exec(MODEL);
      const m = await s.eval('Model()');
      assert.ok(m instanceof Ref, String(m));
      assert.equal(m.id.length, 24);
      assert.match(m.type, /Model$/);
      assert.match(m.repr, /Model object at/);
      assert.equal(await s.eval('m.predict(2)', { locals: { m } }), 6);
      assert.equal(await s.call('builtins', 'getattr', [m, 'w']), 3);
      assert.equal(await s.call('__main__', 'Model.predict', [m], { kwargs: { x: 10 } }), 30);
      assert.equal(await s.eval('a is b', { locals: { a: m, b: m } }), true);
      // Nested: an unconvertible object inside a container is a ref.
      const [one, inner] = (await s.eval('[1, object()]')) as [number, Ref];
      assert.equal(one, 1);
      assert.ok(inner instanceof Ref);
      // Stateless calls still give Opaque.
      assert.ok((await client.eval('object()')) instanceof Opaque);
    });
  });

  test('resultAsRef keeps a convertible result in Python', async () => {
    await withSession(async (s) => {
      const big = await s.eval('list(range(100000))', { resultAsRef: true });
      assert.ok(big instanceof Ref);
      assert.equal(big.type, 'list');
      assert.equal(await s.call('builtins', 'len', [big]), 100000);
      const sum = await s.call('builtins', 'sum', [big], { resultAsRef: true });
      assert.ok(sum instanceof Ref);
      assert.equal(await s.eval('r == 4999950000', { locals: { r: sum } }), true);
      await assert.rejects(client.eval('1', { resultAsRef: true }), InvalidArgumentError);
    });
  });

  test('callMethod and getattr', async () => {
    await withSession(async (s) => {
      await s.exec(MODEL);
      const m = (await s.eval('Model()')) as Ref;
      assert.equal(await s.callMethod(m, 'predict', [5], { kwargs: { bias: 1 } }), 16);
      assert.equal(await s.getattr(m, 'w'), 3);
      assert.equal(await s.getattr(m, 'inner.name'), 'in');
      const inner = await s.getattr(m, 'inner', { resultAsRef: true });
      assert.ok(inner instanceof Ref);
      assert.equal(await s.getattr(inner, 'name'), 'in');
      await assert.rejects(s.getattr(m, 'missing'), (e) => e instanceof PythonError && e.type === 'AttributeError');
    });
  });

  test('release, then use: UnknownRefError; refs are per session', async () => {
    await withSession(async (a) => {
      await withSession(async (b) => {
        const r = (await a.eval('object()')) as Ref;
        await assert.rejects(b.call('builtins', 'id', [r]), UnknownRefError);
        await assert.rejects(b.getattr(r, '__class__'), UnknownRefError);
        await assert.rejects(client.call('builtins', 'id', [r]), UnknownRefError);
        assert.equal(await b.release(r), 0); // the wrong session drops nothing
        assert.ok(((await a.call('builtins', 'id', [r])) as number) > 0);
        assert.equal(await a.release(r, 'made-up'), 1);
        assert.equal(await a.release(r.id), 0);
        const err = await a.call('builtins', 'id', [r]).catch((e: unknown) => e);
        assert.ok(err instanceof UnknownRefError && err instanceof InvalidArgumentError, String(err));
        assert.match(err.details, /unknown ref/);
        assert.equal(await a.eval('1 + 1'), 2); // the session is fine
      });
    });
    await assert.rejects(client.session('no-such-token').release('x'), SessionNotFoundError);
  });

  test('the ref limit is RefLimitError and release makes room', async () => {
    await withSession(async (s) => {
      const refs: Ref[] = [];
      for (let i = 0; i < MAX_REFS - 1; i++) refs.push((await s.eval('object()')) as Ref);
      const err = await s.eval('[object(), object()]').catch((e: unknown) => e);
      assert.ok(err instanceof RefLimitError && err instanceof PoolExhaustedError, String(err));
      assert.match(err.details, /max_refs_per_session/);
      refs.push((await s.eval('object()')) as Ref);
      await assert.rejects(s.eval('object()'), RefLimitError);
      assert.equal(await s.release(refs[0]), 1);
      assert.ok((await s.eval('object()')) instanceof Ref);
    });
  });
});

describe('interrupt', () => {
  test('interrupts `while True: pass` from another task; the session keeps its state', async () => {
    await withSession(async (s) => {
      await s.exec('state = "kept"');
      assert.equal(await s.interrupt(), false); // nothing running
      const running = s.exec('while True: pass', { timeoutMs: 30_000 });
      const outcome = running.then(
        () => undefined,
        (e: unknown) => e,
      );
      await waitBusy();
      const start = performance.now();
      // Another handle on the same token, as another task or process would have.
      assert.equal(await client.session(s.token).interrupt({ timeoutMs: 5000 }), true);
      const err = await outcome;
      assert.ok(err instanceof CancelledError, String(err));
      assert.match(err.details, /Interrupt/);
      assert.ok(performance.now() - start < 2000);
      assert.equal(await s.eval('state'), 'kept');
    });
  });

  test('interrupts a stream; contexts; unknown sessions', async () => {
    await withSession(async (s) => {
      await s.exec('n = 0');
      const it = s.execStream('while True:\n    n += 1\n    if n == 1: print("go", flush=True)', { timeoutMs: 30_000 });
      const first = await it.next();
      assert.deepEqual(first.value, { type: 'stdout', data: 'go\n' });
      assert.equal(await s.interrupt(), true);
      const rest = await collect(it);
      assert.deepEqual(rest.events, []); // the code printed once only
      assert.ok(rest.error instanceof CancelledError, String(rest.error));
      assert.ok(((await s.eval('n')) as number) > 0);
    });
    const ctx = client.context(1);
    await ctx.reset();
    assert.equal(await ctx.interrupt(), false); // never bound: nothing to interrupt
    assert.equal(await ctx.release('x'), 0);
    await assert.rejects(client.session('no-such-token').interrupt(), SessionNotFoundError);
  });
});
