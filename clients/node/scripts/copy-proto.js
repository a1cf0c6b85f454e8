// Copies the service's .proto into dist/ so the built package is
// self-contained: the client loads it at run time with @grpc/proto-loader.
// The source of truth stays proto/pyexec/v1/pyexec.proto at the repo root.
'use strict';
const fs = require('fs');
const path = require('path');
const src = path.resolve(__dirname, '../../../proto/pyexec/v1/pyexec.proto');
const dstDir = path.resolve(__dirname, '../dist/proto/pyexec/v1');
fs.mkdirSync(dstDir, { recursive: true });
fs.copyFileSync(src, path.join(dstDir, 'pyexec.proto'));
