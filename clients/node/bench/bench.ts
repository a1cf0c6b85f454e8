// Bench of the Node client: Eval("1+1") through the public API against a
// real pyexecd, next to the same process's grpc-js calls to the bare echo
// server (bench/echo_server_main.cc) in the same run, so the ratio is what
// pyexec adds over a minimal gRPC round trip from Node.
//
//   npm run bench                         # 3 s per phase
//   BENCH_SECONDS=5 BENCH_INFLIGHT=32 npm run bench
//
// PYEXECD and ECHO_SERVER default to <repo>/bazel-bin/server/pyexecd and
// <repo>/bazel-bin/bench/echo_server_main (bazel build //bench:echo_server_main).
// Phases: 1 call in flight on one connection (latency), then BENCH_INFLIGHT
// calls in flight on the same one connection (throughput).

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

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
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
  const rows: [string, Phase][] = [];
  try {
    await client.withSession(async (s) => {
      rows.push(['pyexec Eval "1+1", 1 in flight, bound session', await phase(1, async () => {
        if ((await s.eval('1+1')) !== 2) throw new Error('wrong result');
      })]);
    });
    rows.push([`pyexec Eval "1+1", ${INFLIGHT} in flight, stateless`, await phase(INFLIGHT, async () => {
      if ((await client.eval('1+1')) !== 2) throw new Error('wrong result');
    })]);
    rows.push(['echo, 1 in flight', await phase(1, echoOnce)]);
    rows.push([`echo, ${INFLIGHT} in flight`, await phase(INFLIGHT, echoOnce)]);
  } finally {
    ec.close();
    await client.close();
    await py.stop();
    await echo.stop();
  }
  console.log(`\n${'phase (one connection each)'.padEnd(50)} ${'calls/s'.padStart(9)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)}`);
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
