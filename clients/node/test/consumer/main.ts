// A program as a user of the package writes it. test/package.check.ts
// compiles it in a scratch project outside the repository, against the
// installed package (the npm pack tarball, or the directory) with the
// project's own TypeScript and the tsconfig of the README's "TypeScript and
// Node 20", then runs it against a real pyexecd at $PYEXEC_ADDRESS. It
// prints one JSON line, which the check compares. The package's own build
// does not compile this file (tsconfig.json excludes test/consumer).

import { Client, SessionNotFoundError, Tuple, tuple, type TupleOf } from '@pyexec/client';

const address = process.env['PYEXEC_ADDRESS'];
if (address === undefined) throw new Error('PYEXEC_ADDRESS is not set');
const client = new Client(address, { defaultTimeoutMs: 20_000 });

// A tuple of mixed element types compiles, and keeps each position's type.
const pair: TupleOf<[string, number]> = tuple('x', 1);
const name: string = pair[0];
// @ts-expect-error position 1 is a number
const notAString: string = pair[1];

const product = await client.eval<number>('a * b', { locals: { a: 6, b: 7 } });
const echoed = await client.eval('t', { locals: { t: pair } });

// `await using` unbinds the session at the end of its block.
let token = '';
{
  await using s = await client.bind();
  token = s.token;
  await s.exec('x = 1');
  if ((await s.eval('x')) !== 1) throw new Error('the session lost x');
}
const afterBlock = await client.session(token).eval('x').then(
  () => 'still bound',
  (e: unknown) => (e instanceof SessionNotFoundError ? 'unbound' : String(e)),
);

await client.close();
console.log(
  JSON.stringify({
    product,
    echoed: echoed instanceof Tuple ? { tuple: [...echoed] } : echoed,
    name,
    notAString,
    afterBlock,
  }),
);
