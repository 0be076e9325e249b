import { checkOptionNames, intOption } from '../options';
import type { FaultEvent, PrefetchAnswer, PrefetchPolicy } from './types';

export interface HistoryOptions {
  /** Pages asked for ahead along the remembered order. Default 32, at most 4096. */
  depth?: number;
}

/** Demand faults over which a paused history checks whether its order predicts them. */
const SHADOW_WINDOW = 64;

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
 * of the pages it asked for are known used, it pauses (random access has no order to replay).
 *
 * While paused it asks for nothing. It notes each page's latest successor apart from the order it keeps,
 * and over each SHADOW_WINDOW demand faults counts how many followed their previous fault as the kept
 * order says, and as those latest successors say. From a quarter on, it resumes: with the kept order, or,
 * when only the latest successors predicted the faults (the walk's order changed), after taking them into
 * the kept order. Random access predicts neither, so it stays paused, and the kept order survives it. A
 * fixed pause would resume into random access over and over, each time fetching pages no one reads.
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
  private paused = false;
  /** While paused: each page's latest successor (-1: none seen since the pause). */
  private latest: Int32Array | null = null;
  /** While paused: demand faults in the current window, and how many the kept order and the latest successors predicted. */
  private shadowFaults = 0;
  private keptPredicted = 0;
  private latestPredicted = 0;
  /** Windows in a row in which the latest successors, and not the kept order alone, predicted the faults. */
  private latestWindows = 0;

  constructor(options: HistoryOptions = {}) {
    checkOptionNames(options, ['depth'], "the 'history' policy");
    this.depth = intOption('prefetchOptions.depth', options.depth, 32, 1, 4096);
  }

  onFault(event: FaultEvent): PrefetchAnswer {
    const { page } = event;
    if (this.next === null || this.next.length !== event.regionPages) {
      this.next = new Int32Array(event.regionPages).fill(-1);
      this.askedIn = new Int32Array(event.regionPages).fill(-1);
      this.paused = false;
      this.latest = null;
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
    // Before learning from this fault, which could make it the previous page's successor.
    const keptPredicted = previous >= 0 && next[previous] === page;
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

    if (this.paused) {
      if (event.prefetchHit) return null;
      const latest = this.latest!;
      this.shadowFaults++;
      if (keptPredicted) this.keptPredicted++;
      else if (previous >= 0 && latest[previous] === page) this.latestPredicted++;
      if (previous >= 0 && previous !== page) latest[previous] = page;
      if (this.shadowFaults < SHADOW_WINDOW) return null;
      const keptPredicts = 4 * this.keptPredicted >= this.shadowFaults;
      const latestPredicts = !keptPredicts && 4 * (this.keptPredicted + this.latestPredicted) >= this.shadowFaults;
      // Two windows in a row: one could be a short stretch that happens to repeat, and taking the
      // latest successors in overwrites the kept order.
      this.latestWindows = latestPredicts ? this.latestWindows + 1 : 0;
      this.shadowFaults = 0;
      this.keptPredicted = 0;
      this.latestPredicted = 0;
      if (!keptPredicts && this.latestWindows < 2) return null;
      if (!keptPredicts) {
        for (let p = 0; p < latest.length; p++) if (latest[p] >= 0) next[p] = latest[p];
      }
      this.latest = null;
      this.paused = false;
      this.asked = 0;
      this.used = 0;
    }
    if (this.asked >= 8 * this.depth) {
      const paying = 4 * this.used >= this.asked;
      this.asked = 0;
      this.used = 0;
      if (!paying) {
        this.paused = true;
        this.latest = new Int32Array(next.length).fill(-1);
        this.shadowFaults = 0;
        this.keptPredicted = 0;
        this.latestPredicted = 0;
        this.latestWindows = 0;
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
