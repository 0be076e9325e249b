'use strict';
// Shared pieces of the benchmarks: argument parsing, percentiles, a memory node in its own process.
const { spawn } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { onCpus } = require('./cpus');

const ROOT = path.join(__dirname, '..');
const MiB = 1 << 20;

function args(spec) {
  return parseArgs({ args: process.argv.slice(2), options: spec, strict: true }).values;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function median(values) {
  return percentile([...values].sort((a, b) => a - b), 50);
}

/** Starts `farmem node` in a child process (on `cpus`, a taskset list, if given); resolves { address, port, stop() }. */
function startNodeProcess(capacity = '2GiB', extraArgs = [], { cpus = null } = {}) {
  const [command, argv] = onCpus(cpus, process.execPath, [path.join(ROOT, 'bin/farmem.js'), 'node', '--port', '0', '--capacity', capacity, ...extraArgs]);
  const child = spawn(command, argv, {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const match = /listening on ([\d.]+):(\d+)/.exec(out);
      if (match) {
        resolve({
          address: `${match[1]}:${match[2]}`,
          port: Number(match[2]),
          stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`memory node exited with ${code}`)));
  });
}

/** A fixed-seed permutation of 0..n-1 (xorshift + Fisher-Yates). */
function permutation(n, seed = 0x2545f491) {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  let x = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const j = x % (i + 1);
    const t = out[i]; out[i] = out[j]; out[j] = t;
  }
  return out;
}

/** The machine a result was measured on, stored with every results file. */
function machine() {
  return {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
  };
}

/** Runs a benchmark's async main; any failure is printed and the process exits 1. */
function run(main) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

module.exports = { ROOT, MiB, args, percentile, median, machine, startNodeProcess, permutation, run };
