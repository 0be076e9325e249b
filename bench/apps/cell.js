'use strict';
// One cell of the application benchmark, in a process of its own: one workload on one system (local,
// farmem or kernel swap) at one local budget. For farmem, every prefetch variant runs on the same region
// in turn, switched at runtime. Timing is benny's (benchmark.js samples); the result is one line,
// `FARMEM_CELL <json>`, on stdout.
// Usage: node bench/apps/cell.js --workload W --system local|farmem|swap [--budget 0.25]
//        [--variants none,readahead,none+guide] [--node HOST:PORT] [--samples 3] [--sample-seconds 0]
//        [--quick] [--latency N]
const b = require('benny');
const { parseArgs } = require('node:util');
const { WORKLOADS, PAGE, permutation, budgetBytes, initByCopy } = require('./workloads');

const RESULT_MARK = 'FARMEM_CELL ';
// Accesses faster than this hit a resident page; slower ones waited for a fault to be served.
const FAULT_THRESHOLD_US = 2;

function options() {
  return parseArgs({
    args: process.argv.slice(2),
    options: {
      workload: { type: 'string' },
      system: { type: 'string' },
      budget: { type: 'string', default: '1' },
      variants: { type: 'string', default: 'none' },
      node: { type: 'string' },
      samples: { type: 'string', default: '3' },
      'sample-seconds': { type: 'string', default: '0' },
      quick: { type: 'boolean', default: false },
      latency: { type: 'string', default: '0' },
      spin: { type: 'string', default: '0' },
      'huge-pages': { type: 'string', default: 'auto' },
    },
    strict: true,
  }).values;
}

/** 'leap' → { policy: 'leap' }; 'none+guide' → { policy: 'none', guide: true }. */
function parseVariant(label) {
  const [policy, extra] = label.split('+');
  return { label: extra === 'guide' ? `${policy} + guide` : policy, policy, guide: extra === 'guide' };
}

/**
 * benny's samples of `run` (seconds per run; benny calls it once more first, which warms it): at least
 * `samples`, and more until those from the `samples`-th on add up to over `moreSeconds` (benchmark.js's
 * maxTime). With 3 and 1 s, a scan cell of 0.08 s runs took eight here; one of 1 s runs takes three.
 */
async function time(name, run, samples, moreSeconds) {
  const summary = await b.suite(name, b.add(name, run, { minSamples: samples, maxTime: moreSeconds, initCount: 1 }));
  const result = summary.results[0];
  return { seconds: result.details.sampleResults, median: result.details.median };
}

/** Seconds `init` took: not part of any figure, but it is most of a --quick cell's time. */
function timeInit(init) {
  const t0 = process.hrtime.bigint();
  init();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** First touches of `count` distinct random pages, one read each, timed one by one. */
function accessLatencies(buffer, count) {
  const view = new Float64Array(buffer);
  const pages = permutation(buffer.byteLength / PAGE, 0x1b873593);
  const n = Math.min(count, pages.length);
  const faultsUs = [];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    sum += view[pages[i] * (PAGE / 8)];
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    if (us >= FAULT_THRESHOLD_US) faultsUs.push(us);
  }
  faultsUs.sort((x, y) => x - y);
  return { samplesUs: faultsUs, accesses: n, faults: faultsUs.length, thresholdUs: FAULT_THRESHOLD_US, sum };
}

async function main() {
  const opts = options();
  const workload = WORKLOADS.find((w) => w.name === opts.workload);
  if (!workload) throw new Error(`unknown workload '${opts.workload}'`);
  const budget = Number(opts.budget);
  const samples = Number(opts.samples);
  const moreSeconds = Number(opts['sample-seconds']);
  const bytes = workload.bytes(opts.quick);
  const ctx = workload.prepare(bytes, opts.quick);
  const out = { workload: workload.name, system: opts.system, budget, workingSetBytes: bytes, runs: [] };

  if (opts.system === 'local' || opts.system === 'swap') {
    let swap = null;
    if (opts.system === 'swap') {
      swap = require('./kernel-swap');
      // Everything but the working set is loaded and built: the limit is what is left of this footprint
      // once squeezed, plus the budget.
      out.cgroup = swap.enterLimit();
    }
    // Under swap, where its memory went is found as it is allocated: the limit is steered by how much of
    // it stays resident.
    const { buffer, range } = swap ? swap.allocateWorkingSet(bytes) : { buffer: new ArrayBuffer(bytes), range: null };
    if (swap) out.cgroup.workingSetLocated = range ? 'at allocation' : 'by mapping size';
    out.initSeconds = timeInit(() => workload.init(buffer, ctx));
    // The same budget as farmem's: the limit is steered until that much of the working set stays
    // resident, first in untimed runs, then over the timed ones (the suite turns this off for a retry
    // after an OOM kill).
    const steer = swap !== null && process.env.FARMEM_BENCH_CALIBRATE !== '0';
    const target = budgetBytes(budget, bytes);
    // A --quick smoke run steers less: it must end within two minutes.
    const timedAttempts = opts.quick ? 1 : 3;
    if (steer) out.cgroup.calibration = swap.calibrateLimit(bytes, target, () => workload.run(buffer, ctx), { rounds: opts.quick ? 4 : 8, range });
    let result;
    let measured;
    let before;
    let after;
    for (let attempt = 1; ; attempt++) {
      const start = steer ? swap.workingSetResidentBytes(bytes, range) : null;
      before = swap?.swapCounters();
      measured = await time(`${workload.name} ${opts.system}`, () => (result = workload.run(buffer, ctx)), samples, moreSeconds);
      after = swap?.swapCounters();
      if (!steer || !start) break;
      // The share moves while benny samples (Node's own heap grows and shrinks beside the working set):
      // what counts is the share over the timed runs, so take the mean of before and after, and time
      // again (at most twice more; not in --quick) with the limit moved if that is off target.
      const end = swap.workingSetResidentBytes(bytes, range);
      const mean = (start.residentBytes + end.residentBytes) / 2;
      (out.cgroup.timed ??= []).push({ limitBytes: swap.currentLimitBytes(), startResidentBytes: start.residentBytes, endResidentBytes: end.residentBytes });
      if (swap.onTarget(mean, target, bytes) || attempt === timedAttempts) break;
      swap.moveLimit(target - mean);
    }
    // How much of the working set the kernel kept resident, right after the timed runs.
    if (swap) out.cgroup.workingSet = swap.workingSetResidentBytes(bytes, range);
    workload.verify(buffer, ctx, result);
    out.runs.push({
      system: opts.system,
      label: opts.system === 'swap' ? 'kernel swap' : 'local',
      budget,
      ...measured,
      counters: swap ? { swapIns: after.swapIns - before.swapIns, swapOuts: after.swapOuts - before.swapOuts } : {},
    });
    if (Number(opts.latency) > 0) out.latency = accessLatencies(buffer, Number(opts.latency));
  } else if (opts.system === 'farmem') {
    const { FarMemory } = require('../../dist/cjs/index.js');
    // At 100% the whole working set fits: no eviction ahead of need (evictHighWater 1), as a user whose
    // budget covers the data would configure it.
    const fm = await FarMemory.open({
      nodes: [opts.node],
      localBudget: budgetBytes(budget, bytes),
      ...(budget === 1 ? { evictHighWater: 1 } : {}),
      spinMicros: Number(opts.spin),
      hugePages: opts['huge-pages'] === 'off' ? false : 'auto',
    });
    const variants = opts.variants.split(',').map(parseVariant);
    const region = await fm.allocate(bytes, { prefetch: variants[0].policy });
    try {
      const buffer = region.buffer;
      out.initSeconds = timeInit(() => initByCopy(workload, buffer, ctx));
      for (const variant of variants) {
        await region.setPrefetch(variant.policy);
        await region.setGuide(variant.guide ? { module: workload.guide, depth: 64 } : null);
        const before = region.stats();
        let result;
        const measured = await time(`${workload.name} farmem ${variant.label}`, () => (result = workload.run(buffer, ctx)), samples, moreSeconds);
        const after = region.stats();
        workload.verify(buffer, ctx, result);
        out.runs.push({
          system: 'farmem',
          ...variant,
          budget,
          hugePagesUsed: fm.hugePages,
          ...measured,
          counters: {
            faults: after.faults - before.faults,
            demandFetches: after.remoteFetches - before.remoteFetches,
            prefetched: after.prefetched - before.prefetched,
            evictions: after.evictions - before.evictions,
            writebacks: after.writebacks - before.writebacks,
            writeFaults: after.writeFaults - before.writeFaults,
            writeAround: after.writeAround - before.writeAround,
            bytesFetched: after.bytesFetched - before.bytesFetched,
            policyErrors: after.policyErrors - before.policyErrors,
            hugeBlocks: after.hugeBlocks - before.hugeBlocks,
          },
          residentBytes: after.residentBytes, // of the region, right after the timed runs
        });
      }
      if (Number(opts.latency) > 0) {
        await region.setPrefetch('none');
        await region.setGuide(null);
        out.latency = accessLatencies(buffer, Number(opts.latency));
        out.latency.pagerServiceUs = region.stats().faultLatencyUs;
      }
    } finally {
      await region.free();
      await fm.close();
    }
  } else {
    throw new Error(`unknown system '${opts.system}' (local, farmem or swap)`);
  }
  // Written synchronously: exit comes at once after it.
  require('node:fs').writeSync(1, `\n${RESULT_MARK}${JSON.stringify(out)}\n`);
  process.exit(0);
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error?.stack ?? error);
    process.exit(1);
  });
}

module.exports = { RESULT_MARK };
