#!/usr/bin/env node
'use strict';
let cli;
try {
  cli = require('../dist/cjs/cli.js');
} catch (error) {
  if (error && error.code === 'MODULE_NOT_FOUND' && /dist\/cjs\/cli\.js/.test(error.message)) {
    console.error('farmem: the TypeScript build is missing; run `npm run build` in the package directory');
    process.exit(1);
  }
  throw error;
}
// A reader that stops early (`farmem demo | head`) closes the pipe. End as a C tool killed by SIGPIPE
// would (status 128 + 13), without a stack trace.
process.stdout.on('error', (error) => {
  if (error && error.code === 'EPIPE') process.exit(141);
  throw error;
});
cli.main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
