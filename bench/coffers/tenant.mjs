// The tenants of bench/coffers.js: a victim doing random reads and writes over far memory twice its
// budget, and a noisy neighbour thrashing a region 16 times its budget.
import { farMemory } from 'farmem/coffer';

const PAGE = 4096;
let region = null;
let view = null;

export async function setup(size, prefetch) {
  region = await farMemory.allocate(size, { prefetch });
  view = new Float64Array(region.buffer);
  for (let i = 0; i < view.length; i += PAGE / 8) view[i] = i;
  await region.evict();
  return region.size;
}

/** Random 8-byte reads and writes, one per page touched, for `ms`: returns the operations done. */
export function random(ms) {
  const pages = region.size / PAGE;
  const until = performance.now() + ms;
  let x = 0x9e3779b9;
  let ops = 0;
  while (performance.now() < until) {
    for (let k = 0; k < 64; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const i = ((x >>> 0) % pages) * (PAGE / 8);
      view[i] = view[i] + 1;
    }
    ops += 64;
  }
  return ops;
}

/** Sequential passes that write every page, for `ms`: returns the bytes swept. */
export function thrash(ms) {
  const until = performance.now() + ms;
  let bytes = 0;
  while (performance.now() < until) {
    for (let i = 0; i < view.length && performance.now() < until; i += PAGE / 8) {
      view[i] += 1;
      bytes += PAGE;
    }
  }
  return bytes;
}
