// Wire shapes of the value mapping, without a server: which Value kind each
// native value becomes, and back.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';

import { Float, InvalidArgumentError, Opaque, Ref, Tuple, tuple } from '../src';
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
