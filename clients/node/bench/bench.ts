// Bench of the Node client: Eval("1+1") through the public API against a
// real pyexecd, next to the same process's grpc-js calls to the bare echo
// server (bench/echo_server_main.cc) in the same run, so the ratio is what
// pyexec adds over a minimal gRPC round trip from Node.
//
//   npm run bench                         # 3 rounds of 2 s phases
//   BENCH_SECONDS=5 BENCH_ROUNDS=5 BENCH_INFLIGHT=32 npm run bench
//
// PYEXECD and ECHO_SERVER default to <repo>/bazel-bin/server/pyexecd and
// <repo>/bazel-bin/bench/echo_server_main (bazel build //bench:echo_server_main).
// Phases: 1 call in flight on one connection (latency), then BENCH_INFLIGHT
// calls in flight on the same one connection (throughput). The pyexec and
// echo phases alternate, round after round, and each figure is the median
// over rounds, so a busy machine skews both sides alike.

import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { Client } from '../src';
import { REPO_ROOT, pyexecdPath, startServer } from '../test/server';

interface Phase {
  rate: number;
  p50: number;
  p99: number;
}

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 32);

/** Runs `op` with `inflight` loops for SECONDS; latencies in microseconds. */
async function phase(inflight: number, op: () => Promise<void>): Promise<Phase> {
  const warmEnd = performance.now() + 300;
  while (performance.now() < warmEnd) await op();
  const lats: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await op();
        lats.push((performance.now() - t0) * 1000);
      }
    }),
  );
  const secs = (performance.now() - start) / 1000;
  lats.sort((a, b) => a - b);
  const pct = (p: number) => Math.round(lats[Math.min(lats.length - 1, Math.floor(lats.length * p))]);
  return { rate: Math.round(lats.length / secs), p50: pct(0.5), p99: pct(0.99) };
}

function echoClient(address: string): grpc.Client & Record<string, Function> {
  const def = protoLoader.loadSync(path.join(REPO_ROOT, 'bench', 'echo.proto'), { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    pyexec: { bench: { Echo: grpc.ServiceClientConstructor } };
  };
  return new pkg.pyexec.bench.Echo(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
}

async function main(): Promise<void> {
  const echoBin = process.env.ECHO_SERVER ?? path.join(REPO_ROOT, 'bazel-bin', 'bench', 'echo_server_main');
  const echo = await startServer(echoBin, ['--listen=127.0.0.1:0']);
  const py = await startServer(pyexecdPath(), ['--listen=127.0.0.1:0', '--workers=9', '--max_workers=16']).catch(
    async (e) => {
      await echo.stop();
      throw e;
    },
  );
  const client = new Client(py.address);
  const ec = echoClient(echo.address);
  const payload = Buffer.from('1+1');
  const echoOnce = () =>
    new Promise<void>((resolve, reject) =>
      ec.Echo({ payload }, (err: Error | null) => (err ? reject(err) : resolve())),
    );
  const names = [
    'pyexec Eval "1+1", 1 in flight, bound session',
    `pyexec Eval "1+1", ${INFLIGHT} in flight, stateless`,
    'echo, 1 in flight',
    `echo, ${INFLIGHT} in flight`,
  ];
  const runs: Phase[][] = names.map(() => []);
  try {
    await client.withSession(async (s) => {
      const evalOnce = async (e: { eval(code: string): Promise<unknown> }) => {
        if ((await e.eval('1+1')) !== 2) throw new Error('wrong result');
      };
      for (let r = 0; r < ROUNDS; r++) {
        runs[0].push(await phase(1, () => evalOnce(s)));
        runs[2].push(await phase(1, echoOnce));
        runs[1].push(await phase(INFLIGHT, () => evalOnce(client)));
        runs[3].push(await phase(INFLIGHT, echoOnce));
      }
    });
  } finally {
    ec.close();
    await client.close();
    await py.stop();
    await echo.stop();
  }
  const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const rows: [string, Phase][] = names.map((n, i) => [
    n,
    { rate: median(runs[i].map((p) => p.rate)), p50: median(runs[i].map((p) => p.p50)), p99: median(runs[i].map((p) => p.p99)) },
  ]);
  console.log(`\nmedians of ${ROUNDS} rounds of ${SECONDS} s phases\n${'phase (one connection each)'.padEnd(50)} ${'calls/s'.padStart(9)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)}`);
  for (const [name, r] of rows) {
    console.log(`${name.padEnd(50)} ${String(r.rate).padStart(9)} ${String(r.p50).padStart(8)} ${String(r.p99).padStart(8)}`);
  }
  const [e1, eN, o1, oN] = [rows[0][1], rows[1][1], rows[2][1], rows[3][1]];
  console.log(
    `\nEval/echo: p50 latency ${(e1.p50 / o1.p50).toFixed(2)}x; throughput ${(eN.rate / oN.rate).toFixed(2)}x (${INFLIGHT} in flight)`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
