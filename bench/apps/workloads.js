'use strict';
// The application workloads of `farmem bench`. Each works on one ArrayBuffer of `bytes` bytes, and the
// same code runs on a plain ArrayBuffer (all local), a farmem region and a plain ArrayBuffer in a memory
// cgroup with swap, so the three differ only in where the pages live.
//
// A workload is { name, title, description, bytes(quick), prepare(bytes, quick), init(buffer, ctx),
// run(buffer, ctx) → number, verify(buffer, ctx, lastResult) }. `prepare` builds inputs on the JS heap
// (never in the measured buffer); `init` fills the buffer once; `run` is the timed part and returns a
// value so nothing is optimised away; `verify` throws if the data or answer is wrong.

const { permutation } = require('../common');

const PAGE = 4096;
const MiB = 1 << 20;

/** xorshift32: a fixed-seed generator, so every system sees the same data and the same requests. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x;
  };
}

/**
 * A local budget of `share` of a `bytes`-byte working set, in bytes: whole pages, at least 16. farmem's
 * localBudget, the swap cell's resident target and the share the report checks against.
 */
function budgetBytes(share, bytes) {
  return Math.max(16 * PAGE, Math.floor((share * bytes) / PAGE) * PAGE);
}

function check(condition, message) {
  if (!condition) throw new Error(`workload check failed: ${message}`);
}

/**
 * `init` for a farmem region: builds the working set in a local scratch buffer, then copies it in, in
 * address order. The region ends up holding the same bytes; built in place, the kv table's random
 * inserts at 25% local took 30 to 40 s of faults, most of a --quick run, and timed nothing.
 */
function initByCopy(workload, buffer, ctx) {
  const scratch = new ArrayBuffer(buffer.byteLength);
  workload.init(scratch, ctx);
  new Uint8Array(buffer).set(new Uint8Array(scratch));
}

// --- sequential scan -------------------------------------------------------------------------------

const scan = {
  name: 'scan',
  title: 'Sequential scan',
  description: 'sum of a Float64Array, front to back',
  bytes: (quick) => (quick ? 32 : 128) * MiB,
  prepare: () => ({}),
  init(buffer) {
    const view = new Float64Array(buffer);
    for (let i = 0; i < view.length; i++) view[i] = i & 1023;
  },
  run(buffer) {
    const view = new Float64Array(buffer);
    let sum = 0;
    for (let i = 0; i < view.length; i++) sum += view[i];
    return sum;
  },
  verify(buffer, ctx, result) {
    const n = buffer.byteLength / 8;
    check(result === (n / 1024) * (1023 * 1024) / 2, `scan sum ${result}`);
  },
};

// --- uniform random 8-byte reads and writes -----------------------------------------------------------

const random = {
  name: 'random',
  title: 'Uniform random 8 B reads/writes',
  description: 'half reads, half writes of single doubles at uniformly random places; each run goes on with the random sequence, so no run repeats another',
  bytes: (quick) => (quick ? 32 : 64) * MiB,
  prepare(bytes, quick) {
    return { count: quick ? 4000 : 20000, doubles: bytes / 8, seed: 0x9e3779b9, lastSeed: 0 };
  },
  init(buffer) {
    const view = new Float64Array(buffer);
    for (let i = 0; i < view.length; i++) view[i] = i & 1023;
  },
  run(buffer, ctx) {
    const view = new Float64Array(buffer);
    const n = ctx.doubles;
    let x = ctx.seed;
    ctx.lastSeed = x;
    let sum = 0;
    for (let i = 0; i < ctx.count; i += 2) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      sum += view[x % n];
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      // Writes keep the value the cell started with, so every read stays checkable.
      const j = x % n;
      view[j] = j & 1023;
    }
    ctx.seed = x;
    return sum;
  },
  verify(buffer, ctx, result) {
    // Replays the last run's sequence.
    const view = new Float64Array(buffer);
    let x = ctx.lastSeed;
    let expected = 0;
    for (let i = 0; i < ctx.count; i += 2) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      expected += (x % ctx.doubles) & 1023;
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      check(view[x % ctx.doubles] === ((x % ctx.doubles) & 1023), 'random write lost');
    }
    check(result === expected, `random sum ${result}, expected ${expected}`);
  },
};

// --- quicksort -----------------------------------------------------------------------------------------

function insertionSort(a, lo, hi) {
  for (let i = lo + 1; i <= hi; i++) {
    const v = a[i];
    let j = i - 1;
    while (j >= lo && a[j] > v) { a[j + 1] = a[j]; j--; }
    a[j + 1] = v;
  }
}

/** In-place quicksort: Hoare partition around a median of three, recursing into the smaller side. */
function quicksort(a, lo, hi) {
  while (hi - lo > 16) {
    const mid = (lo + hi) >>> 1;
    let x = a[lo], y = a[mid], z = a[hi];
    if (x > y) { const t = x; x = y; y = t; }
    if (y > z) { y = z; if (x > y) y = x; }
    const pivot = y;
    let i = lo - 1;
    let j = hi + 1;
    for (;;) {
      do i++; while (a[i] < pivot);
      do j--; while (a[j] > pivot);
      if (i >= j) break;
      const t = a[i]; a[i] = a[j]; a[j] = t;
    }
    if (j - lo < hi - j) { quicksort(a, lo, j); lo = j + 1; }
    else { quicksort(a, j + 1, hi); hi = j; }
  }
  insertionSort(a, lo, hi);
}

const sort = {
  name: 'quicksort',
  title: 'Quicksort',
  description: 'fill an Int32Array from a fixed seed, then quicksort it in place (both timed)',
  bytes: (quick) => (quick ? 16 : 32) * MiB,
  prepare: () => ({}),
  init() {},
  run(buffer) {
    const a = new Int32Array(buffer);
    let x = 0x2545f491;
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      a[i] = x;
      sum = (sum + x) | 0;
    }
    quicksort(a, 0, a.length - 1);
    return sum;
  },
  verify(buffer, ctx, result) {
    const a = new Int32Array(buffer);
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      if (i > 0) check(a[i - 1] <= a[i], `not sorted at ${i}`);
      sum = (sum + a[i]) | 0;
    }
    check(sum === result, 'quicksort lost or changed elements');
  },
};

// --- column analytics ------------------------------------------------------------------------------------

const GROUPS = 40;

/** Four Float64 columns side by side in one buffer: store, discount, price, quantity. */
function columns(buffer) {
  const rows = buffer.byteLength / 32;
  return {
    rows,
    store: new Float64Array(buffer, 0, rows),
    discount: new Float64Array(buffer, rows * 8, rows),
    price: new Float64Array(buffer, rows * 16, rows),
    quantity: new Float64Array(buffer, rows * 24, rows),
  };
}

const analytics = {
  name: 'columns',
  title: 'Column analytics',
  description: 'SELECT store, count(*), sum(price*quantity), avg(discount), max(price) WHERE discount < 0.3 GROUP BY store, over four Float64 columns, grouped in a Map',
  bytes: (quick) => (quick ? 32 : 128) * MiB,
  prepare: () => ({}),
  init(buffer) {
    const c = columns(buffer);
    const next = rng(0x51ed270b);
    for (let i = 0; i < c.rows; i++) {
      c.store[i] = next() % GROUPS;
      c.discount[i] = (next() % 1000) / 1000;
      c.price[i] = 1 + (next() % 10000) / 100;
      c.quantity[i] = 1 + (next() % 50);
    }
  },
  run(buffer) {
    const c = columns(buffer);
    const groups = new Map();
    for (let i = 0; i < c.rows; i++) {
      const discount = c.discount[i];
      if (discount >= 0.3) continue;
      const key = c.store[i];
      let g = groups.get(key);
      if (g === undefined) {
        g = { count: 0, revenue: 0, discount: 0, maxPrice: 0 };
        groups.set(key, g);
      }
      const price = c.price[i];
      g.count++;
      g.revenue += price * c.quantity[i];
      g.discount += discount;
      if (price > g.maxPrice) g.maxPrice = price;
    }
    let digest = 0;
    for (const [key, g] of groups) digest += key * g.count + g.revenue + g.discount / g.count + g.maxPrice;
    return digest;
  },
  verify(buffer, ctx, result) {
    check(Number.isFinite(result) && result > 0, `columns digest ${result}`);
    check(result === analytics.run(buffer), 'columns query not repeatable');
  },
};

// --- key-value store (open addressing, zipfian requests) -------------------------------------------------

const SLOT_BYTES = 64; // key (8 B) + value (56 B): a small Redis value
const SLOT_DOUBLES = SLOT_BYTES / 8;

/** YCSB's zipfian generator (Gray et al., SIGMOD'94) over n items, theta 0.99, scrambled so hot keys spread. */
function zipfianRequests(n, count, seed) {
  const theta = 0.99;
  let zetan = 0;
  for (let i = 1; i <= n; i++) zetan += 1 / Math.pow(i, theta);
  const zeta2 = 1 + 1 / Math.pow(2, theta);
  const alpha = 1 / (1 - theta);
  const eta = (1 - Math.pow(2 / n, 1 - theta)) / (1 - zeta2 / zetan);
  const next = rng(seed);
  const scramble = permutation(n, seed ^ 0x5bd1e995);
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const u = next() / 4294967296;
    const uz = u * zetan;
    let rank;
    if (uz < 1) rank = 0;
    else if (uz < zeta2) rank = 1;
    else rank = Math.min(n - 1, Math.floor(n * Math.pow(eta * u - eta + 1, alpha)));
    out[i] = scramble[rank];
  }
  return out;
}

function hashKey(key) {
  let h = Math.imul(key ^ (key >>> 16), 0x45d9f3b);
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Slot of `key` (stored as key + 1, so 0 marks an empty slot), probing linearly. */
function findSlot(table, slots, key) {
  let s = hashKey(key) & (slots - 1);
  for (;;) {
    const k = table[s * SLOT_DOUBLES];
    if (k === key + 1 || k === 0) return s;
    s = (s + 1) & (slots - 1);
  }
}

const kv = {
  name: 'kv',
  title: 'Key-value store',
  description: 'open-addressing hash table of 64 B slots at load 0.5; zipfian (0.99) requests, 90% GET / 10% SET',
  bytes: (quick) => (quick ? 32 : 64) * MiB,
  prepare(bytes, quick) {
    const slots = bytes / SLOT_BYTES;
    const keys = slots / 2;
    // Runs take successive windows of one long request stream, so no run repeats the one before.
    const count = quick ? 10000 : 40000;
    return { slots, keys, count, requests: zipfianRequests(keys, 16 * count, 0x27d4eb2d), cursor: 0, lastCursor: 0 };
  },
  init(buffer, ctx) {
    const table = new Float64Array(buffer);
    for (let key = 0; key < ctx.keys; key++) {
      const s = findSlot(table, ctx.slots, key);
      table[s * SLOT_DOUBLES] = key + 1;
      for (let v = 1; v < SLOT_DOUBLES; v++) table[s * SLOT_DOUBLES + v] = key * v;
    }
  },
  run(buffer, ctx) {
    const table = new Float64Array(buffer);
    const requests = ctx.requests;
    const start = ctx.cursor;
    ctx.lastCursor = start;
    ctx.cursor = (start + ctx.count) % requests.length;
    let sum = 0;
    for (let i = start; i < start + ctx.count; i++) {
      const key = requests[i];
      const base = findSlot(table, ctx.slots, key) * SLOT_DOUBLES;
      if (i % 10 === 9) {
        // SET rewrites the value; the bytes stay a function of the key so GETs stay checkable.
        for (let v = 1; v < SLOT_DOUBLES; v++) table[base + v] = key * v;
      } else {
        for (let v = 1; v < SLOT_DOUBLES; v++) sum += table[base + v];
      }
    }
    return sum;
  },
  verify(buffer, ctx, result) {
    let expected = 0;
    const start = ctx.lastCursor;
    for (let i = start; i < start + ctx.count; i++) if (i % 10 !== 9) expected += ctx.requests[i] * 28; // 1+…+7
    check(result === expected, `kv sum ${result}, expected ${expected}`);
  },
};

// --- pointer chasing: a linked list and a tree of page-sized nodes on shuffled pages ---------------------
// Each node fills one page: a header of Int32s (next offset, or child count then child offsets), then a
// payload of doubles. The guides in ./guides read the same header.

const TREE_FANOUT = 8;

function listInit(buffer) {
  const pages = buffer.byteLength / PAGE;
  const order = permutation(pages, 0x6c078965);
  const ints = new Int32Array(buffer);
  const doubles = new Float64Array(buffer);
  for (let i = 0; i < pages; i++) {
    const page = order[i];
    ints[page * 1024] = i + 1 < pages ? order[i + 1] * PAGE : -1;
    for (let d = 0; d < 4; d++) doubles[page * 512 + 8 + d] = i & 1023;
  }
  return order[0] * PAGE;
}

const list = {
  name: 'list',
  title: 'Linked list walk',
  description: 'walk a list of page-sized nodes laid out on shuffled pages, summing each node',
  bytes: (quick) => (quick ? 16 : 32) * MiB,
  guide: require.resolve('./guides/list-guide.cjs'),
  prepare: () => ({ head: 0 }),
  init(buffer, ctx) {
    ctx.head = listInit(buffer);
  },
  run(buffer, ctx) {
    const ints = new Int32Array(buffer);
    const doubles = new Float64Array(buffer);
    let sum = 0;
    for (let at = ctx.head; at !== -1; at = ints[at >> 2]) {
      const d = (at >> 3) + 8;
      sum += doubles[d] + doubles[d + 1] + doubles[d + 2] + doubles[d + 3];
    }
    return sum;
  },
  verify(buffer, ctx, result) {
    const pages = buffer.byteLength / PAGE;
    let expected = 0;
    for (let i = 0; i < pages; i++) expected += 4 * (i & 1023);
    check(result === expected, `list sum ${result}, expected ${expected}`);
  },
};

const tree = {
  name: 'tree',
  title: 'Tree traversal',
  description: `depth-first walk of a ${TREE_FANOUT}-ary tree of page-sized nodes on shuffled pages, summing each node`,
  bytes: (quick) => (quick ? 16 : 32) * MiB,
  guide: require.resolve('./guides/tree-guide.cjs'),
  prepare: () => ({ root: 0, stack: null }),
  init(buffer, ctx) {
    // Node i (breadth-first numbering) has children TREE_FANOUT*i+1 …; node i lives on page order[i].
    const pages = buffer.byteLength / PAGE;
    const order = permutation(pages, 0x7f4a7c15);
    const ints = new Int32Array(buffer);
    const doubles = new Float64Array(buffer);
    for (let i = 0; i < pages; i++) {
      const base = order[i] * 1024;
      let children = 0;
      for (let c = TREE_FANOUT * i + 1; c <= TREE_FANOUT * i + TREE_FANOUT && c < pages; c++) {
        ints[base + 1 + children++] = order[c] * PAGE;
      }
      ints[base] = children;
      for (let d = 0; d < 4; d++) doubles[order[i] * 512 + 8 + d] = i & 1023;
    }
    ctx.root = order[0] * PAGE;
    ctx.stack = new Int32Array(pages);
  },
  run(buffer, ctx) {
    const ints = new Int32Array(buffer);
    const doubles = new Float64Array(buffer);
    const stack = ctx.stack;
    let top = 0;
    stack[top++] = ctx.root;
    let sum = 0;
    while (top > 0) {
      const at = stack[--top];
      const d = (at >> 3) + 8;
      sum += doubles[d] + doubles[d + 1] + doubles[d + 2] + doubles[d + 3];
      const header = at >> 2;
      // Pushed last child first, so children are visited in order.
      for (let c = ints[header]; c >= 1; c--) stack[top++] = ints[header + c];
    }
    return sum;
  },
  verify: list.verify,
};

const WORKLOADS = [scan, random, sort, analytics, kv, list, tree];

module.exports = { WORKLOADS, initByCopy, PAGE, TREE_FANOUT, SLOT_BYTES, budgetBytes, rng, permutation, quicksort, zipfianRequests, hashKey };
