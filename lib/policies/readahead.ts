import { invalidOption } from '../errors';
import { checkOptionNames, intOption } from '../options';
import type { FaultEvent, PrefetchPolicy, PrefetchRanges } from './types';

export interface ReadaheadOptions {
  /** First window, in pages, once two faults in a row look sequential. Default 16. */
  initialWindow?: number;
  /** Largest window, in pages. Default 256 (1 MiB). */
  maxWindow?: number;
}

/**
 * Adaptive readahead in the manner of Linux: a window that doubles while faults keep landing at or just
 * past the pages it predicted, forward or backward, and collapses on a miss. It keeps two windows in
 * flight (the one the application is about to reach and the next), so a stream never waits for a whole
 * round trip once it is going.
 */
export class ReadaheadPolicy implements PrefetchPolicy {
  readonly name = 'readahead';
  private readonly initialWindow: number;
  private readonly maxWindow: number;
  private lastPage = -2;
  private direction = 0; // +1 forward, -1 backward, 0 none yet
  private window = 0;
  /** The predicted pages run from lastPage (exclusive) to frontier (exclusive), in `direction`. */
  private frontier = 0;

  constructor(options: ReadaheadOptions = {}) {
    checkOptionNames(options, ['initialWindow', 'maxWindow'], "the 'readahead' policy");
    this.initialWindow = intOption('prefetchOptions.initialWindow', options.initialWindow, 16, 1, 1 << 20);
    this.maxWindow = intOption('prefetchOptions.maxWindow', options.maxWindow, 256, 1, 1 << 20);
    if (this.maxWindow < this.initialWindow) {
      throw invalidOption('prefetchOptions.maxWindow', this.maxWindow, `at least initialWindow (${this.initialWindow})`);
    }
  }

  onFault(event: FaultEvent): PrefetchRanges | null {
    const { page } = event;
    const step = page - this.lastPage;
    let sequential = false;
    if (this.direction !== 0 && this.window > 0) {
      // A fault inside what we predicted, or the page right after it, continues the stream.
      const ahead = this.direction > 0 ? page > this.lastPage && page <= this.frontier : page < this.lastPage && page >= this.frontier;
      sequential = ahead;
    } else if (step === 1 || step === -1) {
      sequential = true;
      this.direction = step;
    }
    this.lastPage = page;
    if (!sequential) {
      this.direction = 0;
      this.window = 0;
      return null;
    }
    this.window = this.window === 0 ? this.initialWindow : Math.min(this.window * 2, this.maxWindow);
    const span = 2 * this.window;
    if (this.direction > 0) {
      const first = page + 1;
      const last = Math.min(event.regionPages, first + span);
      this.frontier = last;
      return last > first ? [[first, last - first]] : null;
    }
    const last = page; // exclusive
    const first = Math.max(0, last - span);
    this.frontier = first - 1;
    return last > first ? [[first, last - first]] : null;
  }
}
