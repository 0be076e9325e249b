'use strict';
// Sequential scan with readahead: sum a Float64Array whose pages are all remote.
// Beside it, in the same process, the same loop over a plain ArrayBuffer.
// The first pass over the region is measured apart (coldPass): it is also the first time the pager
// thread's fetch path runs hot, and V8 is still compiling it; the C reference has no such warm-up.
// Usage: node bench/seq-scan.js --node host:port [--size 512MiB] [--budget 64MiB] [--passes 3] [--benny]
const b = require('benny');
const { FarMemory, parseSize } = require('../dist/cjs/index.js');
const { args, median, run } = require('./common');

function scan(view) {
  let sum = 0;
  for (let i = 0; i < view.length; i++) sum += view[i];
  return sum;
}

async function main() {
  const opts = args({
    node: { type: 'string' },
    size: { type: 'string', default: '512MiB' },
    budget: { type: 'string', default: '64MiB' },
    passes: { type: 'string', default: '3' },
    prefetch: { type: 'string', default: 'readahead' },
    benny: { type: 'boolean', default: false },
  });
  const size = parseSize(opts.size);
  const passes = Number(opts.passes);
  const fm = await FarMemory.open({ nodes: [opts.node], localBudget: opts.budget, ...JSON.parse(process.env.FARMEM_BENCH_OPTIONS || '{}') });
  const region = await fm.allocate(size, { prefetch: opts.prefetch, prefetchOptions: JSON.parse(process.env.FARMEM_BENCH_POLICY_OPTIONS || '{}') });
  const data = new Float64Array(region.buffer);
  for (let i = 0; i < data.length; i++) data[i] = i & 1023;

  const plainData = new Float64Array(new ArrayBuffer(size));
  for (let i = 0; i < plainData.length; i++) plainData[i] = i & 1023;
  const expected = scan(plainData);

  const rates = [];
  const plainRates = [];
  let coldPass = 0;
  for (let pass = -1; pass < passes; pass++) {
    await region.evict(); // every page remote again
    let t0 = process.hrtime.bigint();
    const sum = scan(data);
    const rate = size / 1e9 / (Number(process.hrtime.bigint() - t0) / 1e9);
    if (sum !== expected) throw new Error(`pass ${pass}: sum ${sum}, expected ${expected}`);
    if (pass < 0) {
      coldPass = rate;
      continue;
    }
    rates.push(rate);
    t0 = process.hrtime.bigint();
    scan(plainData);
    plainRates.push(size / 1e9 / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  const stats = region.stats();
  const result = {
    bench: 'seq-scan',
    size,
    budget: parseSize(opts.budget),
    prefetch: opts.prefetch,
    farmem: { gbPerSec: median(rates), passes: rates, coldPass },
    plain: { gbPerSec: median(plainRates), passes: plainRates },
    faults: stats.faults,
    prefetched: stats.prefetched,
    remoteFetches: stats.remoteFetches,
  };

  if (opts.benny) {
    await b.suite(
      `sequential scan of ${opts.size} (GB/s = size / time per op)`,
      b.add('plain ArrayBuffer', () => scan(plainData)),
      b.add(`farmem region, ${opts.prefetch}`, async () => {
        await region.evict();
        return () => scan(data);
      }),
      b.cycle(),
      b.complete(),
    );
  }
  await region.free();
  await fm.close();
  console.log(JSON.stringify(result));
}

run(main);
