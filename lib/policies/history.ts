import { checkOptionNames, intOption } from '../options';
import type { FaultEvent, PrefetchAnswer, PrefetchPolicy } from './types';

export interface HistoryOptions {
  /** Pages asked for ahead along the remembered order. Default 32, at most 4096. */
  depth?: number;
}

/** Faults a paused history sits out before it tries again. */
const PAUSE_FAULTS = 256;

/**
 * Temporal prefetch for pointer chasing: it remembers, for each page, the page that faulted right after
 * it, and on a fault asks for the next `depth` pages along that remembered order. A walk that repeats
 * its order (a list, a tree, an index probed the same way) is fetched ahead even though its pages lie
 * nowhere near each other, which no address-based policy can do.
 *
 * What it learns: the successor of a page is set by the first demand fault after it and then kept, so the
 * sparse faults of a walk that is being prefetched well do not overwrite the order learnt while every page
 * faulted. A page that faults with no successor of its own (it was resident while the order was learnt)
 * goes into the order after the previous fault. First touches teach nothing: the order in which fresh
 * memory is filled is not the order in which it is read back, and, kept, it would hide the walk's order
 * for good. Use is seen from prefetch hits and inferred, as leap does, from a demand fault on the page
 * that follows the last one asked for: the walk has read everything before it. When fewer than a quarter
 * of the pages it asked for are known used, it pauses for PAUSE_FAULTS faults (random access has no order
 * to replay).
 */
export class HistoryPolicy implements PrefetchPolicy {
  readonly name = 'history';
  private readonly depth: number;
  private next: Int32Array | null = null;
  /** The demand fault during which each page was last asked for: asked again only after the next one. */
  private askedIn: Int32Array | null = null;
  private demandFaults = 0;
  private last = -1;
  /** The last page of the last answer, and that answer's length. */
  private frontier = -1;
  private answered = 0;
  private asked = 0;
  private used = 0;
  private paused = 0;

  constructor(options: HistoryOptions = {}) {
    checkOptionNames(options, ['depth'], "the 'history' policy");
    this.depth = intOption('prefetchOptions.depth', options.depth, 32, 1, 4096);
  }

  onFault(event: FaultEvent): PrefetchAnswer {
    const { page } = event;
    if (this.next === null || this.next.length !== event.regionPages) {
      this.next = new Int32Array(event.regionPages).fill(-1);
      this.askedIn = new Int32Array(event.regionPages).fill(-1);
    }
    const next = this.next;
    const askedIn = this.askedIn!;
    this.used += event.prefetchUsed;
    if (event.firstTouch) {
      // Nothing to fetch, and no successor to learn: the next fault does not follow this one either.
      this.last = -1;
      return null;
    }
    const previous = this.last;
    if (previous >= 0 && previous !== page && next[previous] === -1 && !event.prefetchHit) next[previous] = page;
    this.last = page;

    // The walk faulted just past what was asked: it read all of it, unseen.
    if (!event.prefetchHit) {
      if (this.frontier >= 0 && next[this.frontier] === page) this.used += this.answered;
      this.frontier = -1;
      this.answered = 0;
      this.demandFaults++;
      const after = previous >= 0 ? next[previous] : -1;
      if (after >= 0 && after !== page && next[page] === -1) {
        // A page the order skipped: it was resident while the order was learnt, so it never faulted. It
        // goes in after the previous fault, ahead of what followed that; no link is lost.
        next[page] = after;
        next[previous] = page;
      }
    }

    if (this.paused > 0) {
      this.paused--;
      return null;
    }
    if (this.asked >= 8 * this.depth) {
      const paying = 4 * this.used >= this.asked;
      this.asked = 0;
      this.used = 0;
      if (!paying) {
        this.paused = PAUSE_FAULTS;
        return null;
      }
    }
    // Along the order, up to depth pages not asked for since the last demand fault (a prefetch hit
    // inside what was asked moves the window on, it does not ask again). Bounded: the order may cycle.
    const out: number[] = [];
    let q = next[page];
    for (let steps = 0; q >= 0 && out.length < this.depth && steps < 2 * this.depth; steps++, q = next[q]) {
      if (askedIn[q] === this.demandFaults) continue;
      askedIn[q] = this.demandFaults;
      out.push(q);
    }
    if (out.length === 0) return null;
    this.frontier = out[out.length - 1];
    this.answered += out.length;
    this.asked += out.length;
    return out;
  }
}
