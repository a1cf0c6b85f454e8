// Copies the service's .proto into dist/ so the built package is
// self-contained: the client loads it at run time with @grpc/proto-loader.
// The source of truth stays proto/pyexec/v1/pyexec.proto at the repo root,
// so the package builds only inside a checkout of the whole repository.
'use strict';
const fs = require('fs');
const path = require('path');
const src = path.resolve(__dirname, '../../../proto/pyexec/v1/pyexec.proto');
const dstDir = path.resolve(__dirname, '../dist/proto/pyexec/v1');
if (!fs.existsSync(src)) {
  console.error(
    `copy-proto: ${src} not found. @pyexec/client builds from clients/node inside ` +
      'a checkout of the pyexec repository, which holds the proto; elsewhere, install its npm pack tarball.',
  );
  process.exit(1);
}
fs.mkdirSync(dstDir, { recursive: true });
fs.copyFileSync(src, path.join(dstDir, 'pyexec.proto'));
