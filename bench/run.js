'use strict';
// Runs the benchmarks, each trial in a fresh process, against one memory node in its own process,
// beside the minimal C reference pager (bench/reference) on the same node. Writes the results to
// bench/results/<date>.json and prints a table.
// Usage: node bench/run.js [--trials 3] [--quick] [--no-reference]
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, args, machine, median, run, startNodeProcess } = require('./common');

function runJson(command, argv) {
  const result = spawnSync(command, argv, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
  if (result.status !== 0) throw new Error(`${path.basename(argv[0] ?? command)} failed (${result.status ?? result.signal})`);
  const lines = result.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

function buildReference() {
  const out = path.join(ROOT, 'bench/reference/c-pager');
  try {
    execFileSync('bash', [path.join(ROOT, 'bench/reference/build.sh')], { env: { ...process.env, OUT: out }, stdio: 'inherit' });
    return out;
  } catch (error) {
    console.error(`reference C pager not built (${error.message}); running without it`);
    return null;
  }
}

async function main() {
  const opts = args({
    trials: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
    'no-reference': { type: 'boolean', default: false },
  });
  const trials = opts.quick ? 1 : Number(opts.trials);
  const latencyPages = opts.quick ? '8192' : '65536';
  const latencySamples = opts.quick ? '4000' : '20000';
  const scanSize = opts.quick ? '64MiB' : '512MiB';
  const scanPages = String((opts.quick ? 64 : 512) * 256);
  const reference = opts['no-reference'] ? null : buildReference();
  const node = await startNodeProcess('4GiB');
  const results = { machine: machine(), trials: [], summary: {} };
  try {
    for (let t = 0; t < trials; t++) {
      const trial = {};
      trial.latency = runJson(process.execPath, ['bench/fault-latency.js', '--node', node.address, '--pages', latencyPages, '--samples', latencySamples]);
      trial.scan = runJson(process.execPath, ['bench/seq-scan.js', '--node', node.address, '--size', scanSize]);
      if (reference) {
        trial.referenceLatency = runJson(reference, ['--port', String(node.port), '--pages', latencyPages, '--samples', latencySamples, '--mode', 'demand']);
        trial.referenceScan = runJson(reference, ['--port', String(node.port), '--pages', scanPages, '--mode', 'seq', '--readahead', '128', '--passes', '3']);
      }
      results.trials.push(trial);
      console.error(`trial ${t + 1}/${trials}: fault p50 ${trial.latency.farmem.p50Us.toFixed(1)} µs, scan ${trial.scan.farmem.gbPerSec.toFixed(2)} GB/s` +
        (reference ? ` | C reference: ${trial.referenceLatency.p50Us.toFixed(1)} µs, ${trial.referenceScan.gbPerSec.toFixed(2)} GB/s` : ''));
    }
  } finally {
    await node.stop();
  }
  const m = (f) => median(results.trials.map(f));
  const s = {
    faultP50Us: m((t) => t.latency.farmem.p50Us),
    faultP99Us: m((t) => t.latency.farmem.p99Us),
    plainReadP50Us: m((t) => t.latency.plain.p50Us),
    scanGBps: m((t) => t.scan.farmem.gbPerSec),
    coldScanGBps: m((t) => t.scan.farmem.coldPass ?? 0),
    plainScanGBps: m((t) => t.scan.plain.gbPerSec),
  };
  if (reference) {
    s.referenceFaultP50Us = m((t) => t.referenceLatency.p50Us);
    s.referenceFaultP99Us = m((t) => t.referenceLatency.p99Us);
    s.referenceScanGBps = m((t) => t.referenceScan.gbPerSec);
    s.faultLatencyRatio = s.faultP50Us / s.referenceFaultP50Us;
    s.scanRateRatio = s.scanGBps / s.referenceScanGBps;
  }
  results.summary = s;
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  // One file per run (date and time), so that a later run never overwrites results the docs cite.
  const stamp = results.machine.date.slice(0, 16).replace(':', '');
  const file = path.join(dir, `scan-latency-${stamp}${opts.quick ? '-quick' : ''}.json`);
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');

  const row = (name, farmem, plain, ref, unit) =>
    `| ${name} | ${farmem.toFixed(2)} ${unit} | ${plain.toFixed(2)} ${unit} | ${ref === undefined ? '—' : `${ref.toFixed(2)} ${unit}`} | ${ref === undefined ? '—' : (farmem / ref).toFixed(2)} |`;
  console.log(`\n${results.machine.cpu}, ${results.machine.cores} cores, kernel ${results.machine.kernel}, Node ${results.machine.node}, ${results.machine.date}`);
  console.log(`medians of ${trials} trial(s), each in a fresh process; results in ${path.relative(ROOT, file)}\n`);
  console.log('| measure | farmem (TypeScript pager) | plain ArrayBuffer | minimal C pager | farmem / C |');
  console.log('|---|---|---|---|---|');
  console.log(row('demand fault p50', s.faultP50Us, s.plainReadP50Us, s.referenceFaultP50Us, 'µs'));
  console.log(row('demand fault p99', s.faultP99Us, m((t) => t.latency.plain.p99Us), s.referenceFaultP99Us, 'µs'));
  console.log(row('sequential scan', s.scanGBps, s.plainScanGBps, s.referenceScanGBps, 'GB/s'));
  console.log(row('sequential scan, first pass', s.coldScanGBps, s.plainScanGBps, s.referenceScanGBps, 'GB/s'));
}

run(main);
