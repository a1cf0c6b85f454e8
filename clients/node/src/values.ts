// Native JavaScript values <-> pyexec.v1.Value.
//
// The mapping keeps every Python kind distinct that JavaScript can tell apart
// by type (tuple vs list, set vs list, bytes vs str, non-string dict keys).
// The one place JavaScript is poorer than Python is numbers: `3` and `3.0`
// are the same JS number. `ValueOptions.ints` chooses how to deal with that:
//   'auto'   (default) Python int -> number when it is a safe integer
//            (|n| <= 2^53 - 1), bigint otherwise; JS number -> int when it
//            is a safe integer, float otherwise. Convenient, but a Python
//            float with an integral value (3.0) comes back as 3 and is sent
//            back as int 3 unless wrapped in `Float`.
//   'bigint' exact: Python int -> bigint always, Python float -> number;
//            JS bigint -> int, JS number -> float always. Round trips keep
//            int and float apart.

import { status } from '@grpc/grpc-js';

import { InvalidArgumentError, PyExecError } from './errors';
import type { WireValue } from './wire';

/**
 * Deepest value the client sends. protobufjs, like protoc, refuses messages
 * nested deeper than 100, and a request adds a few levels around the value;
 * the check also turns a cyclic structure into an error instead of a stack
 * overflow. pyexecd's own limit (--max_value_depth, default 64) is lower.
 */
export const MAX_SEND_DEPTH = 96;

/** Options for the value mapping; see the module comment. */
export interface ValueOptions {
  /** How Python ints and JS numbers map; default 'auto'. */
  ints?: 'auto' | 'bigint' | undefined;
  /**
   * How Python dicts map. 'auto' (default): a plain object when every key is
   * a str, a Map otherwise. 'map': always a Map (keeps insertion order even
   * for integer-like string keys, which plain objects reorder).
   */
  dicts?: 'auto' | 'map' | undefined;
}

/**
 * A Python tuple: an Array subclass so it indexes, iterates and spreads like
 * an array, but encodes as a tuple, not a list. Build one with
 * `tuple(1, 'a')`, `Tuple.of(1, 'a')` or `Tuple.from(iterable)`;
 * `new Tuple(n)` inherits Array's length-only constructor.
 */
export class Tuple<T = unknown> extends Array<T> {
  static override get [Symbol.species](): ArrayConstructor {
    // map/filter/slice of a tuple give plain arrays, like Python's list
    // comprehensions over a tuple; only explicit construction makes a Tuple.
    return Array;
  }

  /**
   * A tuple of the given elements, typed per position as `tuple()` types
   * them. Unlike `tuple()` it takes elements of any type, as the Array.of
   * it overrides must; one with no Python mapping fails when sent.
   */
  declare static of: <T extends unknown[]>(...items: T) => TupleOf<T>;
}

/**
 * The static type of `tuple(a, b, ...)`: a `Tuple` of the union of the
 * element types that also keeps each position's own type and the length,
 * so `tuple('x', 1)[0]` is a `string` and `[1]` a `number`.
 */
export type TupleOf<T extends readonly unknown[]> = Tuple<T[number]> & { readonly [K in keyof T]: T[K] };

/**
 * Builds a Python tuple from its elements, of any mix of types that have a
 * Python mapping: `tuple('x', 1, [true])`.
 */
export function tuple<T extends PyInput[]>(...items: T): TupleOf<T> {
  return Tuple.from(items) as unknown as TupleOf<T>;
}

/**
 * Forces a JS number to be sent as a Python float (in 'auto' mode an
 * integral number is sent as an int).
 */
export class Float {
  constructor(readonly value: number) {}
  valueOf(): number {
    return this.value;
  }
}

/**
 * A Python object with no value mapping: its qualified type name and repr().
 * It is a result only; sending it back is a TypeError.
 */
export class Opaque {
  constructor(
    readonly type: string,
    readonly repr: string,
  ) {}
  toString(): string {
    return this.repr;
  }
}

/**
 * A live Python object held by a bound session (Value kind `ref`). Pass it
 * back as an argument, keyword argument or local of the same session; only
 * `id` travels. Valid until Release or Unbind.
 */
export class Ref {
  constructor(
    readonly id: string,
    readonly type: string,
    readonly repr: string,
  ) {}
  toString(): string {
    return this.repr;
  }
}

/** Every value the client can send. */
export type PyInput =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Float
  | Uint8Array
  | PyInput[]
  | Tuple<PyInput>
  | Set<PyInput>
  | Map<PyInput, PyInput>
  | Ref
  | { [key: string]: PyInput };

/** Every value the client can return. */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Buffer
  | PyValue[]
  | Tuple<PyValue>
  | Set<PyValue>
  | Map<PyValue, PyValue>
  | { [key: string]: PyValue }
  | Opaque
  | Ref;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function encodeBigInt(n: bigint): WireValue {
  if (n >= INT64_MIN && n <= INT64_MAX) return { int: n.toString() };
  return { big_int: n.toString() };
}

function isPlainObject(v: object): v is Record<string, unknown> {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Converts a native value to a wire Value. Throws TypeError on a value with no Python mapping. */
export function toWire(v: unknown, opts: ValueOptions = {}, depth = 1): WireValue {
  if (depth > MAX_SEND_DEPTH) {
    throw new InvalidArgumentError(
      status.INVALID_ARGUMENT,
      `value nested deeper than ${MAX_SEND_DEPTH} levels (or cyclic); not sent`,
    );
  }
  const exact = opts.ints === 'bigint';
  switch (typeof v) {
    case 'undefined':
      return { none: {} };
    case 'boolean':
      return { bool: v };
    case 'bigint':
      return encodeBigInt(v);
    case 'number':
      // -0 stays a float so its sign survives.
      if (!exact && Number.isSafeInteger(v) && !Object.is(v, -0)) return { int: String(v) };
      return { float: v };
    case 'string':
      return { str: v };
    case 'object':
      break;
    default:
      throw new TypeError(`pyexec: cannot send a ${typeof v} to Python`);
  }
  if (v === null) return { none: {} };
  if (v instanceof Float) return { float: v.value };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength) };
  if (v instanceof Tuple) return { tuple: true, items: Array.from(v, (x) => toWire(x, opts, depth + 1)) };
  if (Array.isArray(v)) return { list: true, items: Array.from(v, (x) => toWire(x, opts, depth + 1)) };
  if (v instanceof Set) return { set: true, items: Array.from(v, (x) => toWire(x, opts, depth + 1)) };
  if (v instanceof Map) {
    const keys: WireValue[] = [];
    const items: WireValue[] = [];
    for (const [k, x] of v) {
      keys.push(toWire(k, opts, depth + 1));
      items.push(toWire(x, opts, depth + 1));
    }
    return { dict: true, keys, items };
  }
  if (v instanceof Ref) return { ref: { id: v.id } };
  if (v instanceof Opaque) {
    throw new TypeError(`pyexec: an opaque ${v.type} cannot be sent back to Python`);
  }
  if (isPlainObject(v)) {
    const keys: WireValue[] = [];
    const items: WireValue[] = [];
    for (const k of Object.keys(v)) {
      keys.push({ str: k });
      items.push(toWire(v[k], opts, depth + 1));
    }
    return { dict: true, keys, items };
  }
  const name = (v as object).constructor?.name ?? 'object';
  throw new TypeError(`pyexec: cannot send a ${name} to Python`);
}

/** Converts a map of names to native values (locals, kwargs) to wire form. */
export function toWireMap(
  m: Record<string, unknown> | Map<string, unknown> | undefined,
  opts: ValueOptions,
): Record<string, WireValue> {
  const out: Record<string, WireValue> = {};
  if (m === undefined) return out;
  const entries = m instanceof Map ? m.entries() : Object.entries(m);
  for (const [k, v] of entries) {
    if (typeof k !== 'string') throw new TypeError('pyexec: locals and kwargs names must be strings');
    // defineProperty so a name like "__proto__" is an own key, not the prototype.
    Object.defineProperty(out, k, { value: toWire(v, opts), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Converts a wire Value to a native value. */
export function fromWire(w: WireValue | null | undefined, opts: ValueOptions = {}): PyValue {
  if (w == null) throw new PyExecError('pyexec: response has no value');
  const items = () => (w.items ?? []).map((x) => fromWire(x, opts));
  switch (w.kind) {
    case 'none':
      return null;
    case 'bool':
      return w.bool === true;
    case 'int': {
      const s = w.int ?? '0';
      if (opts.ints === 'bigint') return BigInt(s);
      const n = Number(s);
      return Number.isSafeInteger(n) ? n : BigInt(s);
    }
    case 'big_int':
      return BigInt(w.big_int ?? '0');
    case 'float':
      return Number(w.float ?? 0);
    case 'str':
      return w.str ?? '';
    case 'bytes':
      return w.bytes ?? Buffer.alloc(0);
    case 'list':
      return items();
    case 'tuple':
      return Tuple.from(items()) as Tuple<PyValue>;
    case 'set':
      return new Set(items());
    case 'dict': {
      const keys = (w.keys ?? []).map((x) => fromWire(x, opts));
      const vals = items();
      if (keys.length !== vals.length) throw new PyExecError('pyexec: malformed dict in response');
      if (opts.dicts !== 'map' && keys.every((k) => typeof k === 'string')) {
        const o: { [key: string]: PyValue } = {};
        keys.forEach((k, i) => {
          Object.defineProperty(o, k as string, { value: vals[i], enumerable: true, writable: true, configurable: true });
        });
        return o;
      }
      return new Map(keys.map((k, i) => [k, vals[i]]));
    }
    case 'opaque':
      return new Opaque(w.opaque?.type ?? '', w.opaque?.repr ?? '');
    case 'ref':
      return new Ref(w.ref?.id ?? '', w.ref?.type ?? '', w.ref?.repr ?? '');
    default:
      // A Value kind added to the API after this client was built.
      throw new PyExecError(`pyexec: unknown Value kind ${String(w.kind)}`);
  }
}
