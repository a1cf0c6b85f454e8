// Wire shapes of the value mapping, without a server: which Value kind each
// native value becomes, and back.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';

import { Float, InvalidArgumentError, Opaque, PyInput, Ref, Tuple, TupleOf, tuple } from '../src';
import { MAX_SEND_DEPTH, fromWire, toWire } from '../src/values';

test('ints: int within int64, big_int beyond', () => {
  assert.deepEqual(toWire(2n ** 63n - 1n), { int: '9223372036854775807' });
  assert.deepEqual(toWire(2n ** 63n), { big_int: '9223372036854775808' });
  assert.deepEqual(toWire(-(2n ** 63n)), { int: '-9223372036854775808' });
  assert.deepEqual(toWire(-(2n ** 63n) - 1n), { big_int: '-9223372036854775809' });
  assert.deepEqual(toWire(42), { int: '42' });
  assert.deepEqual(toWire(42, { ints: 'bigint' }), { float: 42 });
  assert.deepEqual(toWire(2 ** 53), { float: 2 ** 53 });
  assert.deepEqual(toWire(-0), { float: -0 });
  assert.deepEqual(toWire(new Float(2)), { float: 2 });
  assert.equal(fromWire({ kind: 'int', int: '9007199254740991' }), 9007199254740991);
  assert.equal(fromWire({ kind: 'int', int: '9007199254740992' }), 9007199254740992n);
  assert.equal(fromWire({ kind: 'int', int: '5' }, { ints: 'bigint' }), 5n);
  assert.equal(fromWire({ kind: 'big_int', big_int: '-1' + '0'.repeat(30) }), -(10n ** 30n));
});

test('containers keep their kind', () => {
  assert.deepEqual(toWire(tuple(1)), { tuple: true, items: [{ int: '1' }] });
  assert.deepEqual(toWire([null]), { list: true, items: [{ none: {} }] });
  assert.deepEqual(toWire(new Set(['a'])), { set: true, items: [{ str: 'a' }] });
  assert.deepEqual(toWire(new Map([[1, true]])), { dict: true, keys: [{ int: '1' }], items: [{ bool: true }] });
  assert.deepEqual(toWire({ k: undefined }), { dict: true, keys: [{ str: 'k' }], items: [{ none: {} }] });
  const t = fromWire({ kind: 'tuple', tuple: true, items: [{ kind: 'str', str: 'x' }] });
  assert.ok(t instanceof Tuple);
  const d = fromWire({ kind: 'dict', dict: true, keys: [{ kind: 'str', str: 'a' }, { kind: 'int', int: '1' }], items: [{ kind: 'none', none: {} }, { kind: 'bool', bool: false }] });
  assert.deepEqual(d, new Map<unknown, unknown>([['a', null], [1, false]]));
  assert.deepEqual(fromWire({ kind: 'dict', dict: true, keys: [{ kind: 'str', str: 'a' }], items: [{ kind: 'bool', bool: true }] }), { a: true });
});

// The type assertions below are checked when tsc compiles this file (the
// build fails on an error, or on an @ts-expect-error that finds none); the
// runtime assertions check that the values agree with their types.
test('tuple() and Tuple.of take any mix of element types and keep each position typed', () => {
  const t = tuple('x', 1);
  const s: string = t[0];
  const n: number = t[1];
  const len: 2 = t.length;
  const asTuple: Tuple<string | number> = t;
  const asInput: PyInput = t;
  const u: TupleOf<[number, string | null, boolean[]]> = Tuple.of(2, null, [true]);
  const flags: boolean[] = u[2];
  const nested = tuple(1n, tuple('a', null), new Map([[tuple(1, 2), Buffer.from('v')]]), new Set([new Float(1)]));
  const empty: TupleOf<[]> = tuple();
  // @ts-expect-error each position keeps its own type
  const wrong: number = t[0];
  // @ts-expect-error a function has no Python mapping
  const fn = tuple('x', () => 1);
  // @ts-expect-error nor does a symbol
  tuple(Symbol('s'));

  assert.ok(t instanceof Tuple && u instanceof Tuple && empty instanceof Tuple && nested instanceof Tuple);
  assert.deepEqual([s, n, len, wrong, flags], ['x', 1, 2, 'x', [true]]);
  assert.equal(asTuple, asInput);
  assert.deepEqual(toWire(t), { tuple: true, items: [{ str: 'x' }, { int: '1' }] });
  assert.deepEqual(toWire(u), { tuple: true, items: [{ int: '2' }, { none: {} }, { list: true, items: [{ bool: true }] }] });
  assert.deepEqual(toWire(empty), { tuple: true, items: [] });
  assert.equal(toWire(nested).items?.length, 4);
  assert.throws(() => toWire(fn), TypeError);
});

test('bytes are Buffers; any Uint8Array is sent as bytes', () => {
  const u = new Uint8Array([9, 8, 7]).subarray(1);
  assert.deepEqual(toWire(u), { bytes: Buffer.from([8, 7]) });
  assert.ok(Buffer.isBuffer(fromWire({ kind: 'bytes', bytes: Buffer.from('hi') })));
});

test('unsendable values are refused', () => {
  assert.throws(() => toWire(new Opaque('object', '<object>')), TypeError);
  assert.throws(() => toWire(Symbol('s')), TypeError);
  assert.throws(() => toWire(new Date()), TypeError);
  let deep: unknown = [];
  for (let i = 1; i < MAX_SEND_DEPTH; i++) deep = [deep];
  toWire(deep); // exactly the limit is fine
  assert.throws(() => toWire([deep]), InvalidArgumentError);
  const cyc: unknown[] = [];
  cyc.push(cyc);
  assert.throws(() => toWire(cyc), InvalidArgumentError);
  assert.throws(() => fromWire({ kind: 'future_kind' }), /unknown Value kind/);
});

test('a ref decodes, and only its id goes back', () => {
  const r = fromWire({ kind: 'ref', ref: { id: 'ab12', type: 'M', repr: '<M>' } });
  assert.ok(r instanceof Ref);
  assert.equal((r as Ref).type, 'M');
  assert.deepEqual(toWire(r as Ref), { ref: { id: 'ab12' } });
});
