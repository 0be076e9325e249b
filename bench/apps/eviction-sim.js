'use strict';
// How many page misses the KV workload's page references take under FIFO and under exact LRU, at the
// same number of resident pages: the question behind farmem against kernel swap on `kv`. FIFO is what
// a userfaultfd pager's CLOCK becomes when it never sees reads of mapped pages (no accessed bits);
// LRU is the best the kernel's accessed-bit aging could do. Pure JS, no region: it replays the pages
// that `kv`'s run() touches (every probe) over the whole request stream.
// Usage: node bench/apps/eviction-sim.js [--budgets 0.125,0.25,0.5]
const { parseArgs } = require('node:util');
const { WORKLOADS, PAGE, SLOT_BYTES, hashKey } = require('./workloads');

const kv = WORKLOADS.find((w) => w.name === 'kv');

/** The pages of `kv`'s table that its run() touches, in order, over ctx.requests. */
function pageTrace(table, ctx) {
  const pages = [];
  for (const key of ctx.requests) {
    let s = hashKey(key) & (ctx.slots - 1);
    let last = -1;
    for (;;) {
      const page = ((s * SLOT_BYTES) / PAGE) | 0;
      if (page !== last) pages.push((last = page));
      const k = table[(s * SLOT_BYTES) / 8];
      if (k === key + 1 || k === 0) break;
      s = (s + 1) & (ctx.slots - 1);
    }
  }
  return pages;
}

function fifoMisses(trace, frames, pageCount) {
  const resident = new Uint8Array(pageCount);
  const queue = new Int32Array(trace.length);
  let head = 0;
  let tail = 0;
  let misses = 0;
  for (const page of trace) {
    if (resident[page]) continue;
    misses++;
    if (tail - head >= frames) resident[queue[head++]] = 0;
    queue[tail++] = page;
    resident[page] = 1;
  }
  return misses;
}

function lruMisses(trace, frames) {
  const order = new Map(); // insertion order = recency order
  let misses = 0;
  for (const page of trace) {
    if (order.delete(page)) {
      order.set(page, 1);
      continue;
    }
    misses++;
    if (order.size >= frames) order.delete(order.keys().next().value);
    order.set(page, 1);
  }
  return misses;
}

if (require.main === module) {
  const { values } = parseArgs({ options: { budgets: { type: 'string', default: '0.125,0.25,0.5' } } });
  const bytes = kv.bytes(false);
  const ctx = kv.prepare(bytes, false);
  const buffer = new ArrayBuffer(bytes);
  kv.init(buffer, ctx);
  const trace = pageTrace(new Float64Array(buffer), ctx);
  const pageCount = bytes / PAGE;
  console.log(`kv: ${ctx.requests.length} requests, ${trace.length} page references over ${pageCount} pages`);
  console.log('| budget | FIFO misses | LRU misses | LRU / FIFO |');
  console.log('|---|---|---|---|');
  for (const budget of values.budgets.split(',').map(Number)) {
    const frames = Math.floor(budget * pageCount);
    const fifo = fifoMisses(trace, frames, pageCount);
    const lru = lruMisses(trace, frames);
    console.log(`| ${budget * 100}% | ${fifo} | ${lru} | ${(lru / fifo).toFixed(2)} |`);
  }
}

module.exports = { pageTrace, fifoMisses, lruMisses };
