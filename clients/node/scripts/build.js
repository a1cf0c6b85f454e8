// Builds dist/: compiles with tsc (tsconfig.json: src, test, bench), then
// copies the service's .proto into dist/proto, which the client loads at run
// time with @grpc/proto-loader, so the package is self-contained. The
// proto's source of truth stays proto/pyexec/v1/pyexec.proto at the repo
// root: the package builds only inside a checkout of the repository.
//
// It is `npm run build`, and `prepare`, which npm runs on `npm ci` and
// `npm install` here, before `npm pack` and `npm publish`, and for
// `npm install /path/to/clients/node` in another project. The build needs
// the devDependencies, which only `npm ci` (or `npm install`) here installs;
// without them it says so.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const pkgDir = path.resolve(__dirname, '..');
const proto = path.resolve(pkgDir, '../../proto/pyexec/v1/pyexec.proto');

function fail(msg) {
  console.error(`@pyexec/client build: ${msg}`);
  process.exit(1);
}

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [pkgDir] });
} catch {
  fail(`typescript is not installed in ${pkgDir}: run \`npm ci\` there first.`);
}
if (!fs.existsSync(proto)) {
  fail(`${proto} not found: the package builds inside a checkout of the pyexec repository.`);
}

const r = spawnSync(process.execPath, [tsc, '-p', pkgDir], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

const dstDir = path.join(pkgDir, 'dist', 'proto', 'pyexec', 'v1');
fs.mkdirSync(dstDir, { recursive: true });
fs.copyFileSync(proto, path.join(dstDir, 'pyexec.proto'));
