import { checkOptionNames, intOption } from '../options';
import type { FaultEvent, PrefetchAnswer, PrefetchPolicy } from './types';

export interface LeapOptions {
  /** Recent fault deltas kept for the majority vote. Default 32. */
  historySize?: number;
  /** Largest prefetch window, in pages. Default 64. */
  maxWindow?: number;
}

/**
 * The smallest block the no-trend fallback reads around a fault. Leap's kernel rounds every window up to
 * at least 4 pages; without this floor a window that starts at 1 could never earn the hits that grow it.
 */
const MIN_FALLBACK_BLOCK = 4;

/**
 * Most trend deltas logged for reads inferred at once. The kernel would log one per page read, but an
 * inference can be a coincidence (a new stride that lands right past the old window), and a history
 * flooded with the old trend would take many faults to notice the new one.
 */
const INFERRED_DELTAS = 2;

/** The smallest power of two >= n (n >= 1). */
function ceilPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Leap's majority-trend prefetcher (Maruf & Chowdhury, "Effectively Prefetching Remote Memory with
 * Leap", USENIX ATC '20). Every fault, hit or miss, adds its page delta to a ring of recent deltas. On a
 * miss (a fault that no prefetch served), a Boyer-Moore majority vote over the newest quarter of the
 * ring, then the newest half, then all of it, looks for a delta held by more than half of the entries
 * considered: the trend. The window is the prefetch hits since the last prefetch, plus one, rounded up
 * to a power of two, capped at maxWindow and never below half the previous window. With a trend it
 * fetches `window` pages along it from the fault; without one, the rest of the aligned block of `window`
 * (at least MIN_FALLBACK_BLOCK) pages around the fault, unless nothing of the previous prefetch was
 * used: then it pauses until a trend appears or a prefetched page is used.
 */
export class LeapPolicy implements PrefetchPolicy {
  readonly name = 'leap';
  private readonly historySize: number;
  private readonly maxWindow: number;
  private readonly deltas: Float64Array; // a ring; deltas of uint32 pages need more than int32
  private head = 0; // where the next delta goes
  private filled = 0;
  private lastPage = -1;
  /** Prefetched pages used since the last prefetch (event.prefetchUsed, summed). */
  private usedSincePrefetch = 0;
  private lastWindow = 0;
  private hasPrefetched = false;
  /** The trend the last prefetch followed (0: none), and the first page along it past that window. */
  private followedTrend = 0;
  private followedNext = -1;

  constructor(options: LeapOptions = {}) {
    checkOptionNames(options, ['historySize', 'maxWindow'], "the 'leap' policy");
    this.historySize = intOption('prefetchOptions.historySize', options.historySize, 32, 4, 4096);
    this.maxWindow = intOption('prefetchOptions.maxWindow', options.maxWindow, 64, 1, 4096);
    this.deltas = new Float64Array(this.historySize);
  }

  onFault(event: FaultEvent): PrefetchAnswer {
    const { page } = event;
    this.usedSincePrefetch += event.prefetchUsed;
    // A repeated fault on the same page (another thread) has no direction; Leap's history is of movement.
    if (this.lastPage >= 0 && page !== this.lastPage) {
      const steps = event.prefetchHit ? 0 : this.stepsToFollowedNext(page);
      if (steps > 0) {
        // In a region the pages a prefetch mapped on arrival are read with no fault, where Leap's kernel
        // logs each as a swap-cache hit. A miss on exactly the first page past the window it fetched along
        // the trend means the application read its way through: log the pages from the last fault on as
        // the kernel would have (a few trend deltas, not one per page: see INFERRED_DELTAS), and count them as hits.
        for (let k = 0; k < Math.min(steps, INFERRED_DELTAS); k++) this.record(this.followedTrend);
        this.usedSincePrefetch += steps - 1;
      } else {
        this.record(page - this.lastPage);
      }
    }
    this.lastPage = page;
    // Like Leap in the kernel, a hit only feeds the history and the hit count; misses prefetch.
    if (event.prefetchHit) return null;

    let window = Math.min(ceilPowerOfTwo(this.usedSincePrefetch + 1), this.maxWindow);
    window = Math.max(window, this.lastWindow >> 1, 1);
    this.lastWindow = window;
    const trend = this.findTrend();
    if (trend !== 0) {
      const answer = this.alongTrend(page, trend, window, event.regionPages);
      const count = Math.min(window, trend > 0 ? Math.floor((event.regionPages - 1 - page) / trend) : Math.floor(page / -trend));
      this.followedTrend = answer ? trend : 0;
      this.followedNext = page + (count + 1) * trend;
      return this.prefetched(answer);
    }
    this.followedTrend = 0;
    // No trend, and the previous prefetch went unused: wait rather than guess again.
    if (this.hasPrefetched && this.usedSincePrefetch === 0) return null;
    return this.prefetched(this.aroundFault(page, Math.max(window, MIN_FALLBACK_BLOCK), event.regionPages));
  }

  /** When `page` is the first page past the last window along its trend: the strides from the last fault to it; else 0. */
  private stepsToFollowedNext(page: number): number {
    if (this.followedTrend === 0 || page !== this.followedNext) return 0;
    const steps = (page - this.lastPage) / this.followedTrend;
    return Number.isInteger(steps) && steps >= 1 ? steps : 0;
  }

  private record(delta: number): void {
    this.deltas[this.head] = delta;
    this.head = (this.head + 1) % this.historySize;
    if (this.filled < this.historySize) this.filled++;
  }

  /** The majority delta of the newest quarter, half or whole history (the first that has one), or 0. */
  private findTrend(): number {
    let size = Math.max(1, this.historySize >> 2);
    for (;;) {
      const considered = Math.min(size, this.filled);
      if (considered === 0) return 0;
      const delta = this.majority(considered);
      if (delta !== 0) return delta;
      if (considered < size || size >= this.historySize) return 0; // a larger window has no more entries
      size = Math.min(size * 2, this.historySize);
    }
  }

  /** Boyer-Moore vote over the newest `n` deltas, then a count: the delta held by more than n/2, or 0. */
  private majority(n: number): number {
    const h = this.historySize;
    let candidate = 0;
    let votes = 0;
    for (let k = 1; k <= n; k++) {
      const d = this.deltas[(this.head - k + h) % h];
      if (votes === 0) {
        candidate = d;
        votes = 1;
      } else {
        votes += d === candidate ? 1 : -1;
      }
    }
    let count = 0;
    for (let k = 1; k <= n; k++) if (this.deltas[(this.head - k + h) % h] === candidate) count++;
    return count * 2 > n ? candidate : 0;
  }

  private prefetched(answer: PrefetchAnswer): PrefetchAnswer {
    if (answer) {
      this.hasPrefetched = true;
      this.usedSincePrefetch = 0;
    }
    return answer;
  }

  /** page + trend, page + 2 trend, ... `window` pages, stopping at the region's ends. */
  private alongTrend(page: number, trend: number, window: number, regionPages: number): PrefetchAnswer {
    const room = trend > 0 ? Math.floor((regionPages - 1 - page) / trend) : Math.floor(page / -trend);
    const count = Math.min(window, room);
    if (count <= 0) return null;
    if (trend === 1) return [[page + 1, count]];
    if (trend === -1) return [[page - count, count]];
    const pages: number[] = new Array(count);
    for (let k = 0; k < count; k++) pages[k] = page + (k + 1) * trend;
    return pages;
  }

  /** The other pages of the `block`-page block, aligned to `block`, that holds the fault (Leap's fallback). */
  private aroundFault(page: number, block: number, regionPages: number): PrefetchAnswer {
    const first = page - (page % block);
    const end = Math.min(regionPages, first + block);
    const answer: Array<[number, number]> = [];
    if (page > first) answer.push([first, page - first]);
    if (end > page + 1) answer.push([page + 1, end - page - 1]);
    return answer.length > 0 ? answer : null;
  }
}
