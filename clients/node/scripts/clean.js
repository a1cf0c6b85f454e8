// Removes dist/. `npm pack` and `npm publish` run it as `prepack`, before
// `prepare` builds dist/ again, so a tarball never carries files left over
// from an older build.
'use strict';
const fs = require('fs');
const path = require('path');
fs.rmSync(path.resolve(__dirname, '../dist'), { recursive: true, force: true });
