'use strict';
// Prefetch policies side by side on three access patterns over regions whose pages are all remote:
// a sequential scan, a stride of k pages and uniform random reads, each beside the same loop over a
// plain ArrayBuffer. Each trial runs in a fresh process (--child) against one memory node process.
// Usage: node bench/policies.js [--trials 3] [--quick] [--out bench/results/policies-<date>.json]
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, MiB, args, machine, median, permutation, run, startNodeProcess } = require('./common');

const POLICIES = ['none', 'readahead', 'stride', 'leap'];
const PAGE = 4096;

/** Reads one double per page in `pages` order; returns the sum, so nothing is optimised away. */
function touch(view, pages, stridePerPage) {
  let sum = 0;
  for (let i = 0; i < pages.length; i++) sum += view[pages[i] * stridePerPage];
  return sum;
}

function scan(view) {
  let sum = 0;
  for (let i = 0; i < view.length; i++) sum += view[i];
  return sum;
}

async function child(opts) {
  const { FarMemory } = require('../dist/cjs/index.js');
  const quick = opts.quick;
  const scanBytes = (quick ? 64 : 512) * MiB;
  const patternBytes = (quick ? 64 : 256) * MiB;
  const stride = Number(opts.stride);
  const randomReads = quick ? 4000 : 20000;
  const fm = await FarMemory.open({ nodes: [opts.node], localBudget: '64MiB' });
  const doublesPerPage = PAGE / 8;
  const patternPages = patternBytes / PAGE;
  const stridePages = [];
  for (let p = 0; p < patternPages; p += stride) stridePages.push(p);
  const randomPages = Array.from(permutation(patternPages, 0x9e3779b9).subarray(0, randomReads));

  const plain = new Float64Array(new ArrayBuffer(Math.max(scanBytes, patternBytes)));
  for (let i = 0; i < plain.length; i++) plain[i] = i & 1023;
  const timed = (fn) => {
    const t0 = process.hrtime.bigint();
    const value = fn();
    return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, value };
  };

  const out = { plain: {}, policies: {} };
  out.plain.scanGBps = scanBytes / 1e9 / timed(() => scan(plain.subarray(0, scanBytes / 8))).seconds;
  out.plain.strideSeconds = timed(() => touch(plain, stridePages, doublesPerPage)).seconds;
  out.plain.randomSeconds = timed(() => touch(plain, randomPages, doublesPerPage)).seconds;

  // Pattern by pattern, the policies in an order rotated per trial and round, so that no policy always
  // runs first or last in the process; random access, the closest comparison, runs three rounds.
  const rounds = { scan: 1, stride: 1, random: quick ? 1 : 3 };
  const samples = Object.fromEntries(POLICIES.map((p) => [p, { scan: [], stride: [], random: [] }]));
  for (const [pattern, bytes] of [['scan', scanBytes], ['stride', patternBytes], ['random', patternBytes]]) {
    for (let round = 0; round < rounds[pattern]; round++) {
      const shift = (Number(opts.trial) + round) % POLICIES.length;
      for (const policy of [...POLICIES.slice(shift), ...POLICIES.slice(0, shift)]) {
        const region = await fm.allocate(bytes, { prefetch: policy });
        const view = new Float64Array(region.buffer);
        for (let i = 0; i < view.length; i++) view[i] = i & 1023;
        await region.evict(); // every page remote
        const before = region.stats();
        let measured;
        if (pattern === 'scan') measured = timed(() => scan(view));
        else measured = timed(() => touch(view, pattern === 'stride' ? stridePages : randomPages, doublesPerPage));
        const expected = pattern === 'scan' ? scan(plain.subarray(0, bytes / 8)) : touch(plain, pattern === 'stride' ? stridePages : randomPages, doublesPerPage);
        if (measured.value !== expected) throw new Error(`${policy} ${pattern}: sum ${measured.value}, expected ${expected}`);
        const after = region.stats();
        samples[policy][pattern].push({
          seconds: measured.seconds,
          gbPerSec: pattern === 'scan' ? bytes / 1e9 / measured.seconds : undefined,
          demandFetches: after.remoteFetches - before.remoteFetches,
          prefetched: after.prefetched - before.prefetched,
          faults: after.faults - before.faults,
        });
        await region.free();
      }
    }
  }
  for (const policy of POLICIES) {
    out.policies[policy] = {};
    for (const pattern of ['scan', 'stride', 'random']) {
      const runs = samples[policy][pattern];
      const bySeconds = [...runs].sort((a, b) => a.seconds - b.seconds);
      // The median run by time, with all its counters; every run's seconds are kept.
      out.policies[policy][pattern] = { ...bySeconds[Math.floor((bySeconds.length - 1) / 2)], allSeconds: runs.map((r) => r.seconds) };
    }
  }
  await fm.close();
  console.log(JSON.stringify(out));
}

async function main() {
  const opts = args({
    child: { type: 'boolean', default: false },
    node: { type: 'string' },
    quick: { type: 'boolean', default: false },
    trials: { type: 'string', default: '3' },
    stride: { type: 'string', default: '8' },
    trial: { type: 'string', default: '0' },
    out: { type: 'string' },
  });
  if (opts.child) return child(opts);
  const trials = opts.quick ? 1 : Number(opts.trials);
  const node = await startNodeProcess('4GiB');
  const results = { machine: machine(), stride: Number(opts.stride), trials: [] };
  try {
    for (let t = 0; t < trials; t++) {
      const argv = [__filename, '--child', '--node', node.address, '--stride', opts.stride, '--trial', String(t), ...(opts.quick ? ['--quick'] : [])];
      const r = spawnSync(process.execPath, argv, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
      if (r.status !== 0) throw new Error(`trial ${t + 1} failed (${r.status ?? r.signal})`);
      results.trials.push(JSON.parse(r.stdout.trim().split('\n').pop()));
      console.error(`trial ${t + 1}/${trials} done`);
    }
  } finally {
    await node.stop();
  }
  const m = (f) => median(results.trials.map(f));
  const summary = { plainScanGBps: m((t) => t.plain.scanGBps), policies: {} };
  for (const policy of POLICIES) {
    const p = (pattern, key) => m((t) => t.policies[policy][pattern][key]);
    summary.policies[policy] = {
      scanGBps: p('scan', 'gbPerSec'),
      scanDemandFetches: p('scan', 'demandFetches'),
      strideSeconds: p('stride', 'seconds'),
      strideDemandFetches: p('stride', 'demandFetches'),
      randomSeconds: p('random', 'seconds'),
      randomDemandFetches: p('random', 'demandFetches'),
      randomPrefetched: p('random', 'prefetched'),
      // Per trial, then the median: both runs of a ratio come from the same process.
      strideFetchCut: m((t) => t.policies.none.stride.demandFetches / Math.max(1, t.policies[policy].stride.demandFetches)),
      randomSlowdown: m((t) => t.policies[policy].random.seconds / t.policies.none.random.seconds),
    };
  }
  results.summary = summary;
  const file = opts.out ?? path.join(ROOT, 'bench', 'results', `policies-${results.machine.date.slice(0, 16).replace(':', '')}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  const rows = POLICIES.map((policy) => {
    const s = summary.policies[policy];
    return `| ${policy} | ${s.scanGBps.toFixed(2)} | ${s.strideDemandFetches} | ${s.strideFetchCut.toFixed(1)}x | ${(s.strideSeconds * 1000).toFixed(0)} | ${(s.randomSeconds * 1000).toFixed(0)} | ${s.randomSlowdown.toFixed(3)} | ${s.randomPrefetched} |`;
  });
  console.log(`Medians of ${trials} trial(s); plain ArrayBuffer scan ${summary.plainScanGBps.toFixed(2)} GB/s in the same runs.`);
  console.log(`| policy | scan GB/s | stride-${opts.stride} demand fetches | cut vs none | stride ms | random ms | random time / none | random prefetched |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
  console.log(`results: ${path.relative(ROOT, file)}`);
}

run(main);
