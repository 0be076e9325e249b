'use strict';
// Performance isolation between coffers: a victim's throughput alone, and beside a noisy neighbour that
// thrashes far memory at 1/16 local memory, against one memory node in its own process.
// Usage: node bench/coffers.js [--trials 5] [--seconds 3] [--quick]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, MiB, args, median, run, startNodeProcess } = require('./common');
const { Coffer } = require('../dist/cjs/index.js');

const TENANT = path.join(__dirname, 'coffers', 'tenant.mjs');

async function main() {
  const opts = args({
    trials: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
  });
  const trials = opts.quick ? 1 : Number(opts.trials);
  const ms = (opts.quick ? 1 : Number(opts.seconds)) * 1000;
  const node = await startNodeProcess('2GiB');
  const nodes = [node.address];
  const results = {
    machine: { date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, kernel: os.release(), node: process.version },
    setup: {
      victim: 'random 8-byte read+write per page over 32 MiB, 16 MiB budget, prefetch none',
      neighbour: 'sequential write sweeps over 64 MiB, 4 MiB budget (1/16), readahead',
      seconds: ms / 1000,
    },
    trials: [],
  };
  try {
    const victim = await Coffer.spawn(TENANT, { nodes, localBudget: '16MiB', heapMb: 64 });
    const neighbour = await Coffer.spawn(TENANT, { nodes, localBudget: '4MiB', heapMb: 64 });
    await victim.call('setup', 32 * MiB, 'none');
    await neighbour.call('setup', 64 * MiB, 'readahead');
    await victim.call('random', 500); // warm-up
    for (let t = 0; t < trials; t++) {
      // Alone, then with the neighbour, then alone again: the solo figure is their mean.
      const soloBefore = (await victim.call('random', ms)) / (ms / 1000);
      const [shared, neighbourBytes] = await Promise.all([victim.call('random', ms), neighbour.call('thrash', ms + 200)]);
      const soloAfter = (await victim.call('random', ms)) / (ms / 1000);
      const solo = (soloBefore + soloAfter) / 2;
      const withNeighbour = shared / (ms / 1000);
      results.trials.push({ soloBefore, soloAfter, withNeighbour, ratio: withNeighbour / solo, neighbourMBps: neighbourBytes / 1e6 / ((ms + 200) / 1000) });
      console.error(`trial ${t + 1}/${trials}: victim alone ${solo.toFixed(0)} ops/s, with the neighbour ${withNeighbour.toFixed(0)} ops/s (${(withNeighbour / solo).toFixed(2)})`);
    }
    results.victimStats = victim.stats().farMemory;
    results.neighbourStats = neighbour.stats().farMemory;
    await victim.terminate();
    await neighbour.terminate();
  } finally {
    await node.stop();
  }
  results.summary = {
    ratio: median(results.trials.map((t) => t.ratio)),
    soloOpsPerSec: median(results.trials.map((t) => (t.soloBefore + t.soloAfter) / 2)),
    withNeighbourOpsPerSec: median(results.trials.map((t) => t.withNeighbour)),
    neighbourMBps: median(results.trials.map((t) => t.neighbourMBps)),
  };
  const file = opts.out ?? path.join(ROOT, 'bench', 'results', `coffers-${results.machine.date.slice(0, 16).replace(':', '')}${opts.quick ? '-quick' : ''}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  const s = results.summary;
  console.log(`victim alone ${s.soloOpsPerSec.toFixed(0)} ops/s; beside the neighbour ${s.withNeighbourOpsPerSec.toFixed(0)} ops/s: ` +
    `${(s.ratio * 100).toFixed(0)}% of solo (median of ${trials}); the neighbour swept ${s.neighbourMBps.toFixed(0)} MB/s`);
  console.log(`results: ${path.relative(ROOT, file)}`);
}

run(main);
