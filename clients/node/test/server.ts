// Starts a real pyexecd (or the bench's echo server) for a test: loopback,
// port 0, address read from its
// "listening on HOST:PORT" line. Bounded: startup fails after 30 s, and
// stop() kills the process if SIGTERM's drain takes over 10 s.

import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';

export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');

export function pyexecdPath(): string {
  return process.env.PYEXECD ?? path.join(REPO_ROOT, 'bazel-bin', 'server', 'pyexecd');
}

export interface RunningServer {
  address: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** A real pyexecd on 127.0.0.1:0 with 2 warm workers, plus `extraArgs`. */
export function startPyexecd(extraArgs: string[] = []): Promise<RunningServer> {
  return startServer(pyexecdPath(), ['--listen=127.0.0.1:0', '--workers=2', ...extraArgs]);
}

/** Starts any server that prints "listening on HOST:PORT" on stdout. */
export function startServer(binary: string, args: string[]): Promise<RunningServer> {
  const proc = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${binary} did not report its address in 30 s; stderr:\n${stderr}`));
    }, 30_000);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${binary}: ${e.message} (build it with bazel, or set $PYEXECD)`));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${binary} exited with ${code} before listening; stderr:\n${stderr}`));
    });
    const lines = readline.createInterface({ input: proc.stdout! });
    lines.on('line', (line) => {
      const m = /^listening on (\S+)$/.exec(line.trim());
      if (m) {
        clearTimeout(timer);
        resolve({ address: m[1], proc, stop });
      }
    });
  });
}
