// The `conformance` runner (clients/conformance/README.md): every case of
// vectors.json through the public API against a real pyexecd.
//
// The client runs in its exact value mode (`values: { ints: 'bigint' }`):
// the default 'auto' mode maps Python int 3 and float 3.0 to the same JS
// number, which the vectors would rightly fail. Dicts use the default
// mapping (plain object for all-str keys, Map otherwise), which is lossless.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';

import {
  CallbackFunction,
  CancelledError,
  Client,
  DeadlineExceededError,
  InvalidArgumentError,
  Opaque,
  PoolExhaustedError,
  PyInput,
  PyValue,
  PythonError,
  Ref,
  Session,
  SessionNotFoundError,
  StreamEvent,
  Tuple,
} from '../src';
import { REPO_ROOT, startPyexecd } from './server';

type Tagged = { [tag: string]: unknown };

interface Case {
  name: string;
  kind: string;
  [field: string]: unknown;
}

function vectorsPath(): string {
  return process.env.PYEXEC_CONFORMANCE ?? path.join(REPO_ROOT, 'clients', 'conformance', 'vectors.json');
}

function tagOf(t: Tagged): [string, unknown] {
  const keys = Object.keys(t);
  if (keys.length !== 1) throw new Error(`tagged value needs exactly one key: ${JSON.stringify(t)}`);
  return [keys[0], t[keys[0]]];
}

function floatOf(x: unknown): number {
  if (x === 'nan') return NaN;
  if (x === 'inf') return Infinity;
  if (x === '-inf') return -Infinity;
  if (typeof x !== 'number') throw new Error(`bad float ${JSON.stringify(x)}`);
  return x;
}

/** Tagged JSON -> the client's native input value. */
export function toNative(t: Tagged): PyInput {
  const [tag, v] = tagOf(t);
  switch (tag) {
    case 'none':
      return null;
    case 'bool':
      return v as boolean;
    case 'int':
      return BigInt(v as string);
    case 'float':
      return floatOf(v);
    case 'str':
      return v as string;
    case 'bytes':
      return Buffer.from(v as string, 'base64');
    case 'list':
      return (v as Tagged[]).map(toNative);
    case 'tuple':
      return Tuple.from((v as Tagged[]).map(toNative)) as Tuple<PyInput>;
    case 'set':
      return new Set((v as Tagged[]).map(toNative));
    case 'dict': {
      const pairs = (v as [Tagged, Tagged][]).map(([k, x]) => [toNative(k), toNative(x)] as const);
      if (pairs.every(([k]) => typeof k === 'string')) {
        const o: { [k: string]: PyInput } = {};
        for (const [k, x] of pairs) Object.defineProperty(o, k as string, { value: x, enumerable: true });
        return o;
      }
      return new Map(pairs);
    }
    default:
      throw new Error(`unknown value tag ${tag}`);
  }
}

/** The client's native result -> tagged JSON, failing on anything unmapped. */
export function toTagged(v: PyValue): Tagged {
  if (v === null) return { none: null };
  switch (typeof v) {
    case 'boolean':
      return { bool: v };
    case 'bigint':
      return { int: v.toString() };
    case 'number':
      return { float: Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : v };
    case 'string':
      return { str: v };
  }
  if (Buffer.isBuffer(v)) return { bytes: v.toString('base64') };
  if (v instanceof Tuple) return { tuple: Array.from(v, toTagged) };
  if (Array.isArray(v)) return { list: v.map(toTagged) };
  if (v instanceof Set) return { set: Array.from(v, toTagged) };
  if (v instanceof Map) return { dict: Array.from(v, ([k, x]) => [toTagged(k), toTagged(x)]) };
  if (v instanceof Opaque) return { opaque: { type: v.type, repr: v.repr } };
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    return { dict: Object.keys(v).map((k) => [{ str: k }, toTagged((v as { [k: string]: PyValue })[k])]) };
  }
  throw new Error(`result has no tagged form: ${String(v)}`);
}

function unorderedEqual<T>(a: T[], b: T[], eq: (x: T, y: T) => boolean): boolean {
  if (a.length !== b.length) return false;
  const used = new Array<boolean>(b.length).fill(false);
  return a.every((x) => {
    const i = b.findIndex((y, j) => !used[j] && eq(x, y));
    if (i < 0) return false;
    used[i] = true;
    return true;
  });
}

/** Comparison per the README: kinds exact, sets and dicts unordered, nan == nan. */
export function taggedEqual(expected: Tagged, actual: Tagged): boolean {
  const [te, ve] = tagOf(expected);
  const [ta, va] = tagOf(actual);
  if (te !== ta) return false;
  switch (te) {
    case 'none':
      return true;
    case 'bool':
    case 'str':
      return ve === va;
    case 'int':
      return BigInt(ve as string) === BigInt(va as string);
    case 'float': {
      const a = floatOf(ve);
      const b = floatOf(va);
      return Number.isNaN(a) ? Number.isNaN(b) : a === b;
    }
    case 'bytes':
      return Buffer.from(ve as string, 'base64').equals(Buffer.from(va as string, 'base64'));
    case 'list':
    case 'tuple': {
      const a = ve as Tagged[];
      const b = va as Tagged[];
      return a.length === b.length && a.every((x, i) => taggedEqual(x, b[i]));
    }
    case 'set':
      return unorderedEqual(ve as Tagged[], va as Tagged[], taggedEqual);
    case 'dict':
      return unorderedEqual(
        ve as [Tagged, Tagged][],
        va as [Tagged, Tagged][],
        (x, y) => taggedEqual(x[0], y[0]) && taggedEqual(x[1], y[1]),
      );
    case 'opaque': {
      const e = ve as { type: string; repr?: string };
      const a = va as { type: string; repr: string };
      return e.type === a.type && (e.repr === undefined || e.repr === a.repr);
    }
    default:
      throw new Error(`unknown value tag ${te}`);
  }
}

function expectValue(c: Case, actual: PyValue): void {
  const got = toTagged(actual);
  if (!taggedEqual(c.expect as Tagged, got)) {
    throw new Error(`expected ${JSON.stringify(c.expect)}, got ${JSON.stringify(got)}`);
  }
}

const ERROR_CLASSES: Record<string, Function> = {
  session_not_found: SessionNotFoundError,
  timeout: DeadlineExceededError,
  invalid_argument: InvalidArgumentError,
  resource_exhausted: PoolExhaustedError,
};

async function expectError(expect: string, p: Promise<unknown>): Promise<void> {
  const cls = ERROR_CLASSES[expect];
  if (cls === undefined) throw new Error(`unknown error class ${expect}`);
  try {
    await p;
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`expected ${cls.name}, got ${(e as Error).name}: ${(e as Error).message}`);
    return;
  }
  throw new Error(`expected ${cls.name}, the call succeeded`);
}

function nested(depth: number): PyInput {
  let v: PyInput = [];
  for (let i = 1; i < depth; i++) v = [v];
  return v;
}

async function runStatus(client: Client, c: Case): Promise<void> {
  const expect = c.expect as string;
  switch (c.scenario) {
    case 'unbind_then_eval': {
      const s = await client.bind();
      await s.unbind();
      await expectError(expect, client.session(s.token).eval('1'));
      return;
    }
    case 'unknown_token':
      await expectError(expect, client.session('0000000000000000deadbeefdeadbeef').eval('1'));
      return;
    case 'deadline_interrupts':
      await client.withSession(async (s) => {
        await s.exec('import time\nx = 1');
        await expectError(expect, s.eval('time.sleep(30)', { timeoutMs: (c.timeout_seconds as number) * 1000 }));
        const x = await s.eval('x', { timeoutMs: 10_000 });
        if (x !== 1n) throw new Error(`state lost after the deadline: x = ${String(x)}`);
      });
      return;
    case 'empty_code':
      await expectError(expect, client.eval(''));
      return;
    case 'too_deep':
      await expectError(expect, client.eval('x', { locals: { x: nested(c.depth as number) } }));
      return;
    default:
      throw new Error(`unknown status scenario ${String(c.scenario)}`);
  }
}

/** Binds, runs fn, unbinds (the runner's sessions are not left to their lease). */
async function onSession<T>(client: Client, fn: (s: Session) => Promise<T>): Promise<T> {
  return client.withSession(fn);
}

function kwargsOf(c: Case): Record<string, PyInput> {
  const kwargs: Record<string, PyInput> = {};
  for (const [k, v] of Object.entries((c.kwargs ?? {}) as Record<string, Tagged>)) kwargs[k] = toNative(v);
  return kwargs;
}

async function runStream(client: Client, c: Case): Promise<void> {
  const args = (c.args as Tagged[]).map(toNative);
  const mod = c.module as string;
  const fn = c.function as string;
  const collect = async (gen: AsyncGenerator<StreamEvent, void, undefined>): Promise<Tagged[]> => {
    const items: Tagged[] = [];
    for await (const ev of gen) if (ev.type === 'value') items.push(toTagged(ev.value));
    return items;
  };
  const items =
    c.setup === undefined
      ? await collect(client.callStream(mod, fn, args, { kwargs: kwargsOf(c) }))
      : await onSession(client, async (s) => {
          await s.exec(c.setup as string);
          return collect(s.callStream(mod, fn, args, { kwargs: kwargsOf(c) }));
        });
  const want = c.expect_items as Tagged[];
  if (items.length !== want.length || !want.every((w, i) => taggedEqual(w, items[i]))) {
    throw new Error(`expected items ${JSON.stringify(want)}, got ${JSON.stringify(items)}`);
  }
}

async function runRef(client: Client, c: Case): Promise<void> {
  await onSession(client, async (s) => {
    await s.exec(c.setup as string);
    const r = await s.eval(c.code as string);
    if (!(r instanceof Ref)) throw new Error(`expected a Ref, got ${String(r)}`);
    if (r.type !== c.type) throw new Error(`ref type ${r.type}, want ${String(c.type)}`);
    expectValue(c, await s.eval(c.use as string, { locals: { r } }));
    const released = await s.release(r);
    if (released !== 1) throw new Error(`release gave ${released}, want 1`);
    await expectError(c.after_release as string, s.eval(c.use as string, { locals: { r } }));
  });
}

/** The client-side function of a callback behaviour; `session` is the case's (for re-entry). */
function behaviour(b: unknown, session: () => Session | undefined): CallbackFunction {
  if (b === 'return_args') return (...args) => args;
  if (b === 'never') return () => new Promise<never>(() => {});
  if (b === 'reenter') {
    return async (n) => {
      const s = session();
      if (s === undefined) throw new Error('reenter needs a session');
      const down = await s.call('__main__', 'down', [n as PyInput]);
      return (down as bigint) + 1n;
    };
  }
  if (b !== null && typeof b === 'object') {
    const o = b as { return?: Tagged; raise?: string };
    if ('return' in o) return () => toNative(o.return as Tagged);
    if ('raise' in o) {
      return () => {
        throw new Error(o.raise);
      };
    }
  }
  throw new Error(`unknown callback behaviour ${JSON.stringify(b)}`);
}

async function runCallback(address: string, c: Case): Promise<void> {
  // A client of its own, whose registry holds this case's functions only.
  const client = new Client(address, { values: { ints: 'bigint' }, defaultTimeoutMs: 30_000 });
  let session: Session | undefined;
  const functions = Object.entries((c.functions ?? {}) as Record<string, unknown>);
  for (const [name, b] of functions) client.registerFunction(name, behaviour(b, () => session));
  const timeoutMs = ((c.timeout_seconds as number | undefined) ?? 10) * 1000;
  // With no functions registered, the call says it takes callbacks all the
  // same (`functions: {}`), so that an unknown name is a CallbackError.
  const opts = { timeoutMs, ...(functions.length === 0 ? { functions: {} } : {}) };
  const op = (c.op as string | undefined) ?? 'eval';
  try {
    const check = async (run: () => Promise<PyValue>) => {
      if (c.error === undefined) {
        expectValue(c, await run());
        return;
      }
      const want = c.error as { type: string; message_contains: string };
      let err: unknown;
      try {
        await run();
      } catch (e) {
        err = e;
      }
      if (!(err instanceof PythonError)) throw new Error(`expected PythonError ${want.type}, got ${String(err)}`);
      if (err.type !== want.type) throw new Error(`type ${err.type} (${err.pythonMessage}), want ${want.type}`);
      if (!err.pythonMessage.includes(want.message_contains)) throw new Error(`message ${JSON.stringify(err.pythonMessage)}`);
    };
    if (op === 'eval' && c.setup === undefined) {
      await check(() => client.eval(c.code as string, opts));
    } else if (op === 'eval' || op === 'exec_then_eval') {
      await client.withSession(async (s) => {
        session = s;
        if (c.setup) await s.exec(c.setup as string, opts);
        if (op === 'eval') {
          await check(() => s.eval(c.code as string, opts));
        } else {
          await s.exec(c.code as string, opts);
          await check(() => s.eval(c.eval as string, opts));
        }
      });
    } else {
      throw new Error(`unknown callback op ${op}`);
    }
  } finally {
    await client.close();
  }
}

async function runLease(address: string, c: Case): Promise<void> {
  const holder = new Client(address, { values: { ints: 'bigint' } });
  const s = await holder.bind(); // leased: the client's default
  if (!s.leased) throw new Error('bind() resolved without holding the lease');
  if ((await s.eval('1')) !== 1n) throw new Error('eval("1") on the leased session');
  const token = s.token;
  const start = Date.now();
  await holder.close(); // the lease ends with its client, no Unbind
  const other = new Client(address);
  try {
    const limit = start + ((c.grace_seconds as number) + 3) * 1000;
    for (;;) {
      try {
        await other.session(token).eval('1', { timeoutMs: 5000 });
      } catch (e) {
        await expectError(c.expect as string, Promise.reject(e));
        console.log(`conformance ${c.name}: session gone ${Date.now() - start} ms after its client closed`);
        return;
      }
      if (Date.now() > limit) throw new Error(`the session outlived its lease by more than ${(c.grace_seconds as number) + 3} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await other.close();
  }
}

async function runInterruptRace(client: Client, c: Case): Promise<void> {
  const rounds = c.rounds as number;
  await onSession(client, async (s) => {
    const start = Date.now();
    let lost = 0;
    let firstLoss = '';
    for (let i = 0; i < rounds; i++) {
      const running = s.exec('while True: pass', { timeoutMs: 30_000 });
      const interrupted = await running.interrupt({ timeoutMs: 10_000 });
      const outcome = await running.then(
        () => 'completed',
        (e: unknown) => (e instanceof CancelledError ? 'cancelled' : String(e)),
      );
      if (!interrupted || outcome !== 'cancelled') {
        lost++;
        firstLoss ||= `round ${i}: interrupted=${interrupted}, call ${outcome}`;
      }
    }
    console.log(`conformance ${c.name}: ${rounds} rounds, ${lost} lost, ${Date.now() - start} ms`);
    if (lost > 0) throw new Error(`${lost} of ${rounds} interrupts lost (${firstLoss})`);
  });
}

async function runCase(client: Client, c: Case, address: string): Promise<void> {
  switch (c.kind) {
    case 'roundtrip': {
      const locals = { x: toNative(c.value as Tagged) };
      const got = await client.eval('x', { locals });
      const back = toTagged(got);
      if (!taggedEqual(c.value as Tagged, back)) {
        throw new Error(`sent ${JSON.stringify(c.value)}, got ${JSON.stringify(back)}`);
      }
      if (c.python_type !== undefined) {
        const t = await client.eval('type(x).__name__', { locals });
        if (t !== c.python_type) throw new Error(`python type ${String(t)}, want ${String(c.python_type)}`);
      }
      return;
    }
    case 'eval':
      if (c.setup === undefined) {
        expectValue(c, await client.eval(c.code as string));
      } else {
        await client.withSession(async (s) => {
          await s.exec(c.setup as string);
          expectValue(c, await s.eval(c.code as string));
        });
      }
      return;
    case 'call': {
      const args = (c.args as Tagged[]).map(toNative);
      const kwargs = kwargsOf(c);
      const mod = c.module as string;
      const fn = c.function as string;
      if (c.setup === undefined) {
        expectValue(c, await client.call(mod, fn, args, { kwargs }));
      } else {
        await client.withSession(async (s) => {
          await s.exec(c.setup as string);
          expectValue(c, await s.call(mod, fn, args, { kwargs }));
        });
      }
      return;
    }
    case 'python_error': {
      const want = c.error as { type: string; message_contains: string; traceback_contains: string };
      const code = c.code as string;
      let err: unknown;
      try {
        if (c.op === 'eval') await client.eval(code);
        else if (c.op === 'exec') await client.exec(code);
        else throw new Error(`unknown op ${String(c.op)}`);
      } catch (e) {
        err = e;
      }
      if (!(err instanceof PythonError)) throw new Error(`expected PythonError, got ${String(err)}`);
      if (err.type !== want.type) throw new Error(`type ${err.type}, want ${want.type}`);
      if (!err.pythonMessage.includes(want.message_contains)) throw new Error(`message ${JSON.stringify(err.pythonMessage)}`);
      if (!err.traceback.includes(want.traceback_contains)) throw new Error(`traceback ${JSON.stringify(err.traceback)}`);
      return;
    }
    case 'status':
      await runStatus(client, c);
      return;
    case 'stream':
      await runStream(client, c);
      return;
    case 'ref':
      await runRef(client, c);
      return;
    case 'callback':
      await runCallback(address, c);
      return;
    case 'lease':
      await runLease(address, c);
      return;
    case 'interrupt_race':
      await runInterruptRace(client, c);
      return;
    default:
      throw new Error(`unknown case kind ${c.kind}`);
  }
}

test('conformance', { timeout: 180_000 }, async () => {
  const vectors = JSON.parse(fs.readFileSync(vectorsPath(), 'utf8')) as { cases: Case[] };
  assert.ok(vectors.cases.length > 0, 'no conformance cases');
  const server = await startPyexecd(['--lease_grace=1s']);
  const client = new Client(server.address, { values: { ints: 'bigint' }, defaultTimeoutMs: 30_000 });
  const failures: string[] = [];
  try {
    for (const c of vectors.cases) {
      try {
        await runCase(client, c, server.address);
      } catch (e) {
        failures.push(`${c.name}: ${(e as Error).message}`);
      }
    }
  } finally {
    await client.close();
    await server.stop();
  }
  for (const f of failures) console.log(`conformance FAIL ${f}`);
  console.log(`conformance: ${vectors.cases.length - failures.length} passed, ${failures.length} failed`);
  assert.deepEqual(failures, []);
});
