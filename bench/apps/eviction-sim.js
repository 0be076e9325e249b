'use strict';
// How many page misses the KV workload's page references take under FIFO and under exact LRU, at the
// same number of resident pages: the question behind farmem against kernel swap on `kv`. FIFO is what
// a userfaultfd pager's CLOCK becomes when it never sees reads of mapped pages (no accessed bits);
// LRU is the best the kernel's accessed-bit aging could do; "refault gap" is what the pager does
// (lib/pager/pager.ts evict, lib/pager/frames.ts refaultGap). Pure JS, no region: it replays the pages
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

/**
 * The pager's eviction without prefetch: every page comes by a fault, with a second-chance bit set. When
 * no frame is free it frees down to `lowWater` of them. Of the oldest `window` frames for each it must
 * free (at most `windowShare` of the frames in use), the ones with the longest refault gaps (fills
 * between a page's eviction and its refetch; never evicted counts as longest) would be enough: the
 * shortest of those is the cutoff. Walking from the oldest, a page with a shorter gap goes to the back,
 * its gap grown by `aging`; the others go.
 */
function refaultGapMisses(trace, frames, pageCount, { window = 8, windowShare = 0.35, lowWater = 0.85, aging = 1.05 } = {}) {
  const resident = new Uint8Array(pageCount);
  const referenced = new Uint8Array(pageCount);
  const skipped = new Uint16Array(pageCount);
  const evictedAt = new Float64Array(pageCount).fill(-1);
  const gapAtFill = new Float64Array(pageCount);
  let queue = [];
  let head = 0;
  let clock = 0;
  let misses = 0;
  const gap = (page) => gapAtFill[page] * aging ** skipped[page];
  const evict = (wanted) => {
    const known = [];
    const reach = Math.min(window * wanted, Math.floor((queue.length - head) * windowShare));
    for (let i = head; i < queue.length && i - head < reach; i++) if (!referenced[queue[i]]) known.push(gap(queue[i]));
    const cutoff = known.length > wanted ? known.sort((a, b) => b - a)[wanted - 1] : -1;
    let freed = 0;
    for (let budget = 2 * frames; freed < wanted && budget > 0; budget--) {
      const page = queue[head++];
      if (referenced[page]) {
        referenced[page] = 0;
        queue.push(page);
      } else if (gap(page) < cutoff) {
        skipped[page]++;
        queue.push(page);
      } else {
        resident[page] = 0;
        evictedAt[page] = clock;
        freed++;
      }
    }
    if (head > frames * 4) {
      queue = queue.slice(head);
      head = 0;
    }
  };
  for (const page of trace) {
    if (resident[page]) continue;
    misses++;
    if (queue.length - head >= frames) evict(queue.length - head - Math.floor(frames * lowWater));
    gapAtFill[page] = evictedAt[page] < 0 ? Infinity : clock - evictedAt[page] + 1;
    clock++;
    skipped[page] = 0;
    referenced[page] = 1;
    resident[page] = 1;
    queue.push(page);
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
  console.log('| budget | FIFO | exact LRU | pager, fill order (CLOCK) | pager, refault gaps (/ fill order) | refault gaps over the whole queue |');
  console.log('|---|---|---|---|---|---|');
  for (const budget of values.budgets.split(',').map(Number)) {
    const frames = Math.floor(budget * pageCount);
    const fifo = fifoMisses(trace, frames, pageCount);
    const lru = lruMisses(trace, frames);
    // A window of 1 never finds more known gaps than frames wanted, so nothing is kept back: fill order.
    const clock = refaultGapMisses(trace, frames, pageCount, { window: 1 });
    const gap = refaultGapMisses(trace, frames, pageCount);
    const unlimited = refaultGapMisses(trace, frames, pageCount, { windowShare: 1 });
    console.log(`| ${budget * 100}% | ${fifo} | ${lru} | ${clock} | ${gap} (${(gap / clock).toFixed(2)}) | ${unlimited} (${(unlimited / clock).toFixed(2)}) |`);
  }
}

module.exports = { pageTrace, fifoMisses, lruMisses, refaultGapMisses };
