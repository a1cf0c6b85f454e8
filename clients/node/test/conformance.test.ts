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
  Client,
  DeadlineExceededError,
  InvalidArgumentError,
  Opaque,
  PoolExhaustedError,
  PyInput,
  PyValue,
  PythonError,
  SessionNotFoundError,
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

async function runCase(client: Client, c: Case): Promise<void> {
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
      const kwargs: Record<string, PyInput> = {};
      for (const [k, v] of Object.entries((c.kwargs ?? {}) as Record<string, Tagged>)) kwargs[k] = toNative(v);
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
    default:
      throw new Error(`unknown case kind ${c.kind}`);
  }
}

test('conformance', { timeout: 180_000 }, async () => {
  const vectors = JSON.parse(fs.readFileSync(vectorsPath(), 'utf8')) as { cases: Case[] };
  assert.ok(vectors.cases.length > 0, 'no conformance cases');
  const server = await startPyexecd();
  const client = new Client(server.address, { values: { ints: 'bigint' }, defaultTimeoutMs: 30_000 });
  const failures: string[] = [];
  try {
    for (const c of vectors.cases) {
      try {
        await runCase(client, c);
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
