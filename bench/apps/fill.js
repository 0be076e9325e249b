'use strict';
// The write path: fills a region front to back, flushes it, reads it back, rounds over, on a memory node
// process it starts (a fresh node, as the demo's is). Each round allocates a new region, so it writes
// never-written pages, and frees it at the end. Prints, per round, seconds to fill (and with the flush)
// and to read, the median of the fill's 1 MiB steps and how many took over 2 ms (waits on the pager),
// and the counters. A plain ArrayBuffer is filled the same way first, for scale.
// Usage: node bench/apps/fill.js [--size 512MiB] [--budget 0.25] [--rounds 3] [--pin auto|off]
//        [--options '{"hugePages":false}'] (more FarMemory.open options)
const { parseArgs } = require('node:util');
const { startNodeProcess, median } = require('../common');
const { cpuPlacement, placeSelf, describePlacement } = require('../cpus');
const { FarMemory } = require('../../dist/cjs/index.js');
const { parseSize } = require('../../dist/cjs/units.js');

const STEP = 1 << 20;

/** Writes `f64` front to back, timing each 1 MiB step; returns the step times in ms. */
function fill(f64, value) {
  const perStep = STEP / 8;
  const steps = [];
  for (let from = 0; from < f64.length; from += perStep) {
    const t0 = performance.now();
    const to = Math.min(f64.length, from + perStep);
    for (let i = from; i < to; i++) f64[i] = i + value;
    steps.push(performance.now() - t0);
  }
  return steps;
}

function sum(f64) {
  let s = 0;
  for (let i = 0; i < f64.length; i++) s += f64[i];
  return s;
}

async function main() {
  const { values: opts } = parseArgs({
    options: {
      size: { type: 'string', default: '512MiB' },
      budget: { type: 'string', default: '0.25' },
      rounds: { type: 'string', default: '3' },
      pin: { type: 'string', default: 'auto' },
      options: { type: 'string', default: '{}' },
    },
  });
  const bytes = parseSize(opts.size, '--size');
  const rounds = Number(opts.rounds);
  const cpus = cpuPlacement(opts.pin);
  const nodeCpus = placeSelf(cpus);

  const local = new Float64Array(bytes / 8);
  let t0 = performance.now();
  fill(local, 1);
  console.log(`plain ArrayBuffer: fill ${((performance.now() - t0) / 1000).toFixed(3)} s (its first write of each page included)`);

  const node = await startNodeProcess(String(2 * bytes), [], { cpus: nodeCpus });
  const fm = await FarMemory.open({ nodes: [node.address], localBudget: Math.floor(bytes * Number(opts.budget)), ...JSON.parse(opts.options) });
  console.log(`${opts.size} regions, ${Number(opts.budget) * 100}% local, hugePages ${fm.hugePages}; CPUs: ${describePlacement(cpus)}`);
  try {
    for (let round = 0; round < rounds; round++) {
      const region = await fm.allocate(bytes, { prefetch: 'readahead' });
      const f64 = new Float64Array(region.buffer);
      t0 = performance.now();
      const steps = fill(f64, round);
      const filled = performance.now();
      await region.flush();
      const flushed = performance.now();
      const s = sum(f64);
      const read = performance.now();
      if (s !== (f64.length * (f64.length - 1)) / 2 + round * f64.length) throw new Error(`round ${round}: read back a sum of ${s}`);
      const c = region.stats();
      const slow = steps.filter((ms) => ms > 2);
      console.log(
        `round ${round}: fill ${((filled - t0) / 1000).toFixed(3)} s, with flush ${((flushed - t0) / 1000).toFixed(3)} s, read ${((read - flushed) / 1000).toFixed(3)} s; ` +
          `1 MiB steps: median ${median(steps).toFixed(2)} ms, ${slow.length} over 2 ms (${slow.reduce((a, b) => a + b, 0).toFixed(0)} ms); ` +
          `${c.zeroFills} zero-fills (${c.zeroBlocks} whole blocks), ${c.faults} faults, ${c.writebacks} write-backs, ${c.evictions} evictions`,
      );
      await region.free();
    }
  } finally {
    await fm.close();
    await node.stop();
  }
}

main().catch((error) => {
  console.error(error?.stack ?? error);
  process.exit(1);
});
