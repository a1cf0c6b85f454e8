// The package as its users get it. From a copy of the package's sources and
// the repository's proto (no dist/, no node_modules: a fresh clone), `npm ci`
// and `npm pack` make the tarball. A scratch project outside the repository
// installs it, with its own TypeScript and @types/node from npm, and sets
// itself up as the README's "TypeScript and Node 20" says (its `tsc --init`
// line, run with the scratch project's tsc). There the consumer program
// (test/consumer/main.ts) and every TypeScript example of the README
// compile; the consumer and the examples that talk to 127.0.0.1:50051 then
// run against a real pyexecd. A second scratch project installs the
// directory instead of the tarball and runs the consumer.
//
// run_tests.sh runs this file on its own, after the other tests: npm and tsc
// are heavy, and the stream tests measure time. It needs the npm registry,
// or npm's cache, as `npm ci` does. Every step has a timeout, and the
// temporary directory is removed at the end.

import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { REPO_ROOT, RunningServer, startPyexecd } from './server';

/** clients/node (this file runs as clients/node/dist/test/package.check.js). */
const PKG_DIR = path.resolve(__dirname, '..', '..');
const README = fs.readFileSync(path.join(PKG_DIR, 'README.md'), 'utf8');
/** The address the README's examples use; replaced by the test server's. */
const README_ADDRESS = "'127.0.0.1:50051'";

let tmp: string;
let copy: string;
let tarball: string;
let server: RunningServer;

/** npm's environment without the npm_* variables of any npm that runs us. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_')) env[k] = v;
  return { ...env, npm_config_update_notifier: 'false', npm_config_audit: 'false', npm_config_fund: 'false', ...extra };
}

/** Runs a command to completion within timeoutMs; fails with its output otherwise. Returns stdout. */
function run(cmd: string, args: string[], cwd: string, timeoutMs: number, env: NodeJS.ProcessEnv = childEnv()): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  const what = `${cmd} ${args.join(' ')} (in ${cwd})`;
  if (r.error) assert.fail(`${what}: ${r.error.message}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  if (r.status !== 0) {
    assert.fail(`${what} exited with ${r.status ?? r.signal}:\n${r.stdout.slice(-4000)}${r.stderr.slice(-4000)}`);
  }
  return r.stdout;
}

/** The version of a devDependency that `npm ci` installed here, so the scratch projects use the same. */
function lockedVersion(name: string): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(PKG_DIR, 'node_modules', name, 'package.json'), 'utf8'));
  return pkg.version as string;
}

/** The README's fenced blocks in `lang`. */
function readmeBlocks(lang: string): string[] {
  const re = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm');
  return Array.from(README.matchAll(re), (m) => m[1]);
}

/** The options of the README's `npx tsc --init ...` line. */
function readmeTscInitArgs(): string[] {
  const lines = readmeBlocks('sh')
    .flatMap((b) => b.split('\n'))
    .filter((l) => l.startsWith('npx tsc --init'));
  assert.equal(lines.length, 1, 'the README has one `npx tsc --init` line');
  return lines[0].split(/\s+/).slice(3);
}

/**
 * A scratch ES-module project in `dir` with `spec` (a tarball or a directory)
 * installed, set up as the README says.
 */
function scratchProject(dir: string, spec: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name: path.basename(dir), version: '1.0.0', private: true, type: 'module' }, null, 2),
  );
  run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--loglevel=error',
      spec,
      `typescript@${lockedVersion('typescript')}`,
      `@types/node@${lockedVersion('@types/node')}`,
    ],
    dir,
    180_000,
  );
  run(path.join(dir, 'node_modules', '.bin', 'tsc'), ['--init', ...readmeTscInitArgs()], dir, 60_000);
  fs.copyFileSync(path.join(PKG_DIR, 'test', 'consumer', 'main.ts'), path.join(dir, 'main.ts'));
}

/** Compiles every .ts file of the scratch project with its own tsc and its tsconfig. */
function compile(dir: string): void {
  run(path.join(dir, 'node_modules', '.bin', 'tsc'), ['-p', '.'], dir, 120_000);
}

/** Runs the compiled consumer program and checks what it printed. */
function runConsumer(dir: string): void {
  const out = run('node', ['main.js'], dir, 60_000, childEnv({ PYEXEC_ADDRESS: server.address }));
  assert.deepEqual(JSON.parse(out), {
    product: 42,
    echoed: { tuple: ['x', 1] },
    name: 'x',
    notAString: 1,
    afterBlock: 'unbound',
  });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pyexec-node-pkg-'));
  // The files of a fresh clone that the package build reads.
  copy = path.join(tmp, 'repo', 'clients', 'node');
  fs.cpSync(PKG_DIR, copy, {
    recursive: true,
    filter: (src) => !['node_modules', 'dist'].includes(path.basename(src)) && !src.endsWith('.tgz'),
  });
  fs.cpSync(path.join(REPO_ROOT, 'proto'), path.join(tmp, 'repo', 'proto'), { recursive: true });
  // Without scripts: `npm pack` builds dist/ itself (prepack empties it, prepare
  // builds it), and run_tests.sh's own `npm ci` is the one that checks `prepare`.
  run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], copy, 180_000);
  server = await startPyexecd();
});

after(async () => {
  await server?.stop();
  if (tmp !== undefined) fs.rmSync(tmp, { recursive: true, force: true });
});

test('npm pack from a fresh copy gives the complete package', { timeout: 240_000 }, () => {
  // A file of an older build, which prepack must remove before prepare builds dist/.
  fs.mkdirSync(path.join(copy, 'dist', 'src'), { recursive: true });
  fs.writeFileSync(path.join(copy, 'dist', 'src', 'stale.js'), '// from an older build\n');
  run('npm', ['pack', '--loglevel=error', '--pack-destination', tmp], copy, 180_000);
  const pkg = JSON.parse(fs.readFileSync(path.join(copy, 'package.json'), 'utf8'));
  tarball = path.join(tmp, `${pkg.name.replace(/^@/, '').replace('/', '-')}-${pkg.version}.tgz`);
  assert.ok(fs.existsSync(tarball), `${tarball} not made`);

  const listed = run('tar', ['-tzf', tarball], tmp, 30_000)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/^package\//, ''))
    .sort();
  const modules = fs
    .readdirSync(path.join(copy, 'src'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3));
  assert.ok(modules.includes('index'));
  const expected = [
    'README.md',
    'package.json',
    'dist/proto/pyexec/v1/pyexec.proto',
    ...modules.flatMap((m) => [`src/${m}.ts`, `dist/src/${m}.js`, `dist/src/${m}.d.ts`, `dist/src/${m}.js.map`]),
  ].sort();
  assert.deepEqual(listed, expected);
  // The entry points name files that are in the tarball.
  for (const f of [pkg.main, pkg.types, pkg.exports['.'].types, pkg.exports['.'].default]) {
    assert.ok(listed.includes(path.posix.normalize(f)), `${f} is not in the tarball`);
  }
});

test('the tarball installs in a scratch project; the consumer and the README examples compile and run', { timeout: 420_000 }, () => {
  assert.ok(tarball !== undefined, 'no tarball: the npm pack test failed');
  const dir = path.join(tmp, 'app-tarball');
  scratchProject(dir, tarball);

  const examples = readmeBlocks('ts');
  assert.ok(examples.length >= 3, `only ${examples.length} TypeScript blocks in the README`);
  const runnable: string[] = [];
  examples.forEach((code, i) => {
    const file = `readme_${i + 1}`;
    if (code.includes(README_ADDRESS)) {
      code = code.replaceAll(README_ADDRESS, JSON.stringify(server.address));
      runnable.push(file);
    }
    fs.writeFileSync(path.join(dir, `${file}.ts`), code);
  });
  assert.ok(
    runnable.some((f) => fs.readFileSync(path.join(dir, `${f}.ts`), 'utf8').includes('await using')),
    'the README example with `await using` is not among those that run',
  );
  compile(dir);
  runConsumer(dir);
  for (const f of runnable) run('node', [`${f}.js`], dir, 60_000);
});

test('the directory installs in a scratch project; the consumer compiles and runs', { timeout: 420_000 }, () => {
  const dir = path.join(tmp, 'app-directory');
  // npm >= 9.4.2 links the directory; 9.0 to 9.4.1 (install-links) copy it as packed.
  scratchProject(dir, copy);
  compile(dir);
  runConsumer(dir);
});
