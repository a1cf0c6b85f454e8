// A program that binds a leased session, prints its token and then either
// stays alive (argv[3] === 'stay': the test SIGKILLs it) or simply ends
// without closing its client (argv[3] === 'end': Node must exit, since a
// lease never keeps the process alive). Used by lease.test.ts.

import { Client } from '../src';

async function main(): Promise<void> {
  const [address, mode] = process.argv.slice(2);
  const client = new Client(address);
  const s = await client.bind();
  await s.exec('x = 1');
  process.stdout.write(`${s.token} ${s.leased}\n`);
  if (mode === 'stay') setInterval(() => {}, 1000);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
