'use strict';
// Demand-fault latency: one random page at a time, no prefetch, every page remote.
// Beside it, in the same process, the same loop over a plain ArrayBuffer.
// Usage: node bench/fault-latency.js --node host:port [--pages 65536] [--samples 20000] [--benny]
const b = require('benny');
const { FarMemory } = require('../dist/cjs/index.js');
const { args, percentile, permutation, run } = require('./common');

async function main() {
  const opts = args({
    node: { type: 'string' },
    pages: { type: 'string', default: '65536' },
    samples: { type: 'string', default: '20000' },
    budget: { type: 'string', default: '16MiB' },
    benny: { type: 'boolean', default: false },
  });
  const pages = Number(opts.pages);
  const samples = Math.min(Number(opts.samples), pages);
  const size = pages * 4096;
  const fm = await FarMemory.open({ nodes: [opts.node], localBudget: opts.budget });
  const region = await fm.allocate(size, { prefetch: 'none' });
  const words = new Float64Array(region.buffer);
  // Make every page remote: write it (then it is written back and dropped).
  for (let i = 0; i < words.length; i += 512) words[i] = i;
  await region.evict();

  const order = permutation(pages);
  const sample = (view) => {
    const times = new Float64Array(samples);
    let sum = 0;
    for (let k = 0; k < samples; k++) {
      const index = order[k] * 512;
      const t0 = process.hrtime.bigint();
      sum += view[index];
      times[k] = Number(process.hrtime.bigint() - t0) / 1000;
    }
    return { times: Array.from(times).sort((a, b) => a - b), sum };
  };

  const farmem = sample(words);
  const before = region.stats();
  const plainBuffer = new Float64Array(new ArrayBuffer(size));
  for (let i = 0; i < plainBuffer.length; i += 512) plainBuffer[i] = i;
  const plain = sample(plainBuffer);
  if (farmem.sum !== plain.sum) throw new Error(`checksum mismatch: farmem ${farmem.sum}, plain ${plain.sum}`);

  const result = {
    bench: 'fault-latency',
    pages,
    samples,
    farmem: { p50Us: percentile(farmem.times, 50), p99Us: percentile(farmem.times, 99), meanUs: farmem.times.reduce((a, v) => a + v, 0) / samples },
    plain: { p50Us: percentile(plain.times, 50), p99Us: percentile(plain.times, 99) },
    pagerP50Us: before.faultLatencyUs.p50,
    remoteFetches: before.remoteFetches,
  };

  if (opts.benny) {
    // benny's view of the same thing: ops/s of "touch the next random page".
    await region.evict();
    let cursor = 0;
    let plainCursor = 0;
    await b.suite(
      'demand fault: one random page',
      b.add('plain ArrayBuffer', () => {
        plainCursor = (plainCursor + 1) % pages;
        return plainBuffer[order[plainCursor] * 512];
      }),
      b.add('farmem region, prefetch none', () => {
        cursor = (cursor + 1) % pages;
        return words[order[cursor] * 512];
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
