import { checkOptionNames, intOption } from '../options';
import type { FaultEvent, PrefetchAnswer, PrefetchPolicy } from './types';

export interface StrideOptions {
  /** Equal page deltas in a row that confirm a stride. Default 2 (faults at 0, 3, 6 confirm stride 3). */
  confirmations?: number;
  /** Pages asked for ahead of the fault along a confirmed stride. Default 32, at most 4096. */
  depth?: number;
}

/**
 * Constant-stride detection over a region's faults, in pages, in either direction (stride 1 is a
 * sequential scan, -5 a backward walk over every fifth page). Once `confirmations` equal deltas in a row
 * confirm a stride, it keeps `depth` pages asked for ahead of the fault along it. A later fault on a
 * page it predicted (or on the next page along the stride after them) extends the prediction without
 * confirming again, so a stream survives a few unrelated faults in between.
 */
export class StridePolicy implements PrefetchPolicy {
  readonly name = 'stride';
  private readonly confirmations: number;
  private readonly depth: number;
  // Detection, over every fault:
  private lastPage = -1;
  private lastDelta = 0;
  private repeats = 0;
  // The confirmed stride (0: none yet) and where its stream stands:
  private stride = 0;
  /** The last page of the stream seen in a fault. */
  private position = 0;
  /** The first page along the stride not yet asked for. */
  private frontier = 0;

  constructor(options: StrideOptions = {}) {
    checkOptionNames(options, ['confirmations', 'depth'], "the 'stride' policy");
    this.confirmations = intOption('prefetchOptions.confirmations', options.confirmations, 2, 1, 64);
    this.depth = intOption('prefetchOptions.depth', options.depth, 32, 1, 4096);
  }

  onFault(event: FaultEvent): PrefetchAnswer {
    const { page } = event;
    // Detection runs on every fault, predicted or not, so that a new stride can take over from the old.
    if (this.lastPage >= 0) {
      const delta = page - this.lastPage;
      if (delta === 0) return null; // the same page again: no direction in it
      if (delta === this.lastDelta) {
        this.repeats++;
      } else {
        this.lastDelta = delta;
        this.repeats = 1;
      }
    }
    this.lastPage = page;
    // Faults that continue the stream even though their delta is not the stride: at the first page not
    // asked for yet (where a stream whose prefetched pages were read without a fault shows up next), or
    // a demand fault on a page it asked for (one the pager refused or evicted). Repeated, such deltas
    // must not pass for a new stride.
    const continuesStream =
      this.stride !== 0 && (page === this.frontier || (!event.prefetchHit && this.predicted(page)));
    if (!continuesStream && this.repeats >= this.confirmations && (this.lastDelta !== this.stride || !this.predicted(page))) {
      // A new stride starts a new stream: what the old one asked for is on another lattice. So does the
      // same stride confirmed again away from the stream (a second pass over the region, say).
      this.stride = this.lastDelta;
      this.position = page;
      this.frontier = page + this.stride;
      return this.askAhead(page, event.regionPages);
    }
    if (this.stride === 0 || !this.predicted(page)) return null;
    this.position = page;
    // A prefetch hit with more than half the depth still asked for ahead: nothing to do yet. Otherwise
    // (half used up, or a demand fault on a page it asked for: one refused or evicted) ask again.
    if (event.prefetchHit && (this.frontier - page) / this.stride > this.depth / 2) return null;
    return this.askAhead(page, event.regionPages);
  }

  /** On the stride's lattice, after the stream's position, up to and including its frontier. */
  private predicted(page: number): boolean {
    const steps = (page - this.position) / this.stride;
    return Number.isInteger(steps) && steps >= 1 && steps <= (this.frontier - this.position) / this.stride;
  }

  /**
   * Asks for the next `depth` pages along the stride after `page`, inside the region, nearest first: the
   * ones already held or coming cost the pager a look, and any it refused before are asked for again.
   */
  private askAhead(page: number, regionPages: number): PrefetchAnswer {
    const s = this.stride;
    const room = s > 0 ? Math.floor((regionPages - 1 - page) / s) : Math.floor(page / -s);
    const count = Math.min(this.depth, room);
    const end = page + s * (count + 1); // exclusive, along the stride
    if ((end - this.frontier) * s > 0) this.frontier = end;
    if (count <= 0) return null;
    if (s === 1) return [[page + 1, count]];
    if (s === -1) return [[end + 1, count]];
    const pages: number[] = new Array(count);
    for (let k = 0; k < count; k++) pages[k] = page + (k + 1) * s;
    return pages;
  }
}
