import { invalidOption } from '../errors';
import { checkOptionNames, intOption } from '../options';
import { MAX_ANSWER_PAGES, type FaultEvent, type PolicyContext, type PrefetchPolicy, type PrefetchRanges } from './types';

export interface ReadaheadOptions {
  /** First window, in pages, once two faults in a row look sequential. Default 16. */
  initialWindow?: number;
  /** Largest window, in pages. Default 1024 (4 MiB): on loopback a scan gains up to that size (docs/benchmark.md). */
  maxWindow?: number;
  /** Sequential streams followed at once (a copy from one place to another is two). Default 4. */
  streams?: number;
}

const MAX_WINDOW = MAX_ANSWER_PAGES / 2;
/** Misses in a row (faults that continue no stream) after which a stream is dropped. */
const MAX_MISSES = 3;
/** Recent fault pages remembered to recognise the start of a stream (page p after p-1 or p+1). */
const RECENT_FAULTS = 8;
/** Pages in 2 MiB: windows of half that or more end on such a boundary. */
const ALIGN_PAGES = 512;
/**
 * The share of the local budget all streams together may keep asked for ahead of the application. Ahead
 * of each stream lie up to two windows; the rest of the budget holds the pages being read and those just
 * passed. Asking for more than fits evicts the guesses before their use: with windows unbounded, columns
 * at 25% local under evictLowWater 0.6 fetched every page 16 times (docs/benchmark-log.md, 2026-12-04).
 */
const AHEAD_SHARE = 0.5;
/** A stream counts against the budget while it was continued within this many faults per stream. */
const LIVE_EVENTS = 4;

interface Stream {
  direction: 1 | -1;
  /** The last page of this stream the policy saw. */
  last: number;
  /** The first page, in `direction`, not yet asked for. */
  frontier: number;
  /** A fault at or past this page (in `direction`) asks for the next window. */
  marker: number;
  window: number;
  /** Faults in a row that continued no stream while this one was alive. */
  misses: number;
  /** When the stream was last continued, in events: the least recent one is replaced first. */
  lastUsed: number;
}

/**
 * Adaptive readahead in the manner of Linux, for a few streams at once, forward or backward. A stream
 * starts when a fault lands right next to a recent one; it asks for two windows ahead of the fault, and
 * when the application reaches the start of the last window (the marker), or faults at the frontier of
 * what was asked for, the window doubles and the stream asks for the next one. A fault that continues no
 * stream halves every stream's window; a stream missed MAX_MISSES times in a row, or at window 1, is
 * dropped. Keeping two windows ahead is meant to spare a stream the round trip once it is going. In a
 * region, though, pages mapped on arrival are read with no fault at all, so the policy sees only faults
 * on pages still in flight and at the frontier; with whole blocks landing, mostly the latter, and a
 * stream waits there about once every two windows (docs/benchmark-log.md, 2026-12-06).
 */
/** Pages per range of a backward answer. */
const BACKWARD_CHUNK = 32;

export class ReadaheadPolicy implements PrefetchPolicy {
  readonly name = 'readahead';
  private readonly initialWindow: number;
  private readonly maxWindow: number;
  private readonly maxStreams: number;
  private readonly localPages: number;
  private readonly streams: Stream[] = [];
  private readonly recent = new Float64Array(RECENT_FAULTS).fill(-2);
  private recentNext = 0;
  private events = 0;

  constructor(options: ReadaheadOptions = {}, context: Partial<PolicyContext> = {}) {
    checkOptionNames(options, ['initialWindow', 'maxWindow', 'streams'], "the 'readahead' policy");
    // Two windows must fit in one answer (MAX_ANSWER_PAGES).
    this.initialWindow = intOption('prefetchOptions.initialWindow', options.initialWindow, 16, 1, MAX_WINDOW);
    this.maxWindow = intOption('prefetchOptions.maxWindow', options.maxWindow, 1024, 1, MAX_WINDOW);
    this.maxStreams = intOption('prefetchOptions.streams', options.streams, 4, 1, 64);
    if (this.maxWindow < this.initialWindow) {
      throw invalidOption('prefetchOptions.maxWindow', this.maxWindow, `at least initialWindow (${this.initialWindow})`);
    }
    const localPages = context.localPages ?? Infinity;
    if (!(localPages >= 1)) throw invalidOption('context.localPages', localPages, 'a number of pages, at least 1 (Infinity: no budget)');
    this.localPages = localPages;
  }

  /**
   * The largest window a stream may have now: maxWindow, or less where two windows for each live stream
   * would overrun AHEAD_SHARE of the local budget. Never below 1.
   */
  private windowLimit(): number {
    // A stream the application left (a scan that started over) lives on until misses drop it: only those
    // continued within the last few faults of every stream share the budget.
    let streams = 0;
    for (const s of this.streams) if (this.events - s.lastUsed < LIVE_EVENTS * this.maxStreams) streams++;
    streams = Math.max(1, streams);
    const fit = Math.floor((this.localPages * AHEAD_SHARE) / (2 * streams));
    return Math.max(1, Math.min(this.maxWindow, fit));
  }

  onFault(event: FaultEvent): PrefetchRanges | null {
    const { page } = event;
    this.events++;
    const stream = this.streamOf(page);
    if (stream !== null) {
      if (page === stream.last) return null; // the same fault again (two threads): nothing new
      const d = stream.direction;
      stream.misses = 0;
      stream.last = page;
      stream.lastUsed = this.events;
      if (d * (stream.marker - page) > 0) {
        // Before the marker: the window ahead is still long enough. A demand fault here means a page
        // asked for was not brought (no free frame) or was evicted: ask again for the rest of the window.
        return event.prefetchHit ? null : this.ask(page + d, stream.frontier, d, event.regionPages);
      }
      stream.window = Math.min(stream.window * 2, this.maxWindow);
      return this.advance(stream, page, event.regionPages);
    }
    const direction = this.adjacentRecent(page);
    this.remember(page);
    if (direction !== 0) return this.start(page, direction, event.regionPages);
    // A prefetch hit that no stream claims is still a correct guess (of a stream replaced since): no miss.
    if (!event.prefetchHit) this.miss();
    return null;
  }

  /** The stream this page continues: after its last page, up to and including its frontier. */
  private streamOf(page: number): Stream | null {
    for (const s of this.streams) {
      const d = s.direction;
      if (d * (page - s.last) >= 0 && d * (s.frontier - page) >= 0) return s;
    }
    return null;
  }

  /** +1 when page-1 faulted recently, -1 when page+1 did (the more recent wins), 0 otherwise. */
  private adjacentRecent(page: number): 0 | 1 | -1 {
    for (let k = 1; k <= RECENT_FAULTS; k++) {
      const p = this.recent[(this.recentNext - k + RECENT_FAULTS) % RECENT_FAULTS];
      if (p === page - 1) return 1;
      if (p === page + 1) return -1;
    }
    return 0;
  }

  private remember(page: number): void {
    this.recent[this.recentNext] = page;
    this.recentNext = (this.recentNext + 1) % RECENT_FAULTS;
  }

  private start(page: number, direction: 1 | -1, regionPages: number): PrefetchRanges | null {
    const stream: Stream = {
      direction,
      last: page,
      frontier: page + direction,
      marker: page + direction,
      window: this.initialWindow,
      misses: 0,
      lastUsed: this.events,
    };
    if (this.streams.length < this.maxStreams) {
      this.streams.push(stream);
    } else {
      let oldest = 0;
      for (let i = 1; i < this.streams.length; i++) if (this.streams[i].lastUsed < this.streams[oldest].lastUsed) oldest = i;
      this.streams[oldest] = stream;
    }
    return this.advance(stream, page, regionPages);
  }

  /**
   * Moves the frontier to two windows past `page` and asks for every page up to it, nearest first: a
   * region (or the replay) may have refused some of the earlier ones for lack of free frames, and the
   * pages it already holds or is bringing cost it only a look.
   */
  private advance(stream: Stream, page: number, regionPages: number): PrefetchRanges | null {
    const d = stream.direction;
    // A stream started or resumed since this one last grew may have lowered the limit.
    stream.window = Math.min(stream.window, this.windowLimit());
    let frontier = d > 0 ? page + 1 + 2 * stream.window : page - 1 - 2 * stream.window;
    // Large windows end on the nearest 2 MiB boundary (the frontier is exclusive), so that the next one
    // covers whole aligned blocks, which a region can land as huge pages; Linux aligns readahead to large
    // folios alike. The nearest, not the next: that moves the frontier by at most half a block, a quarter
    // of two windows, so the budget's bound holds.
    if (stream.window >= ALIGN_PAGES / 2) {
      frontier = d > 0 ? Math.round(frontier / ALIGN_PAGES) * ALIGN_PAGES : Math.round((frontier + 1) / ALIGN_PAGES) * ALIGN_PAGES - 1;
    }
    frontier = d > 0 ? Math.min(regionPages, frontier) : Math.max(-1, frontier);
    if (d * (frontier - stream.frontier) > 0) stream.frontier = frontier;
    stream.marker = stream.frontier - d * stream.window;
    return this.ask(page + d, stream.frontier, d, regionPages);
  }

  /**
   * The pages from `from` (inclusive) to `to` (exclusive) in direction `d`. Backward, as chunks listed
   * nearest first: whoever serves the answer in order and runs out of frames then drops the far pages.
   */
  private ask(from: number, to: number, d: 1 | -1, regionPages: number): PrefetchRanges | null {
    const first = d > 0 ? Math.max(0, from) : Math.max(0, to + 1);
    const end = d > 0 ? Math.min(regionPages, to) : Math.min(regionPages, from + 1);
    if (end <= first) return null;
    if (d > 0) return [[first, end - first]];
    const ranges: PrefetchRanges = [];
    for (let top = end; top > first; top -= BACKWARD_CHUNK) {
      const bottom = Math.max(first, top - BACKWARD_CHUNK);
      ranges.push([bottom, top - bottom]);
    }
    return ranges;
  }

  /** A fault that continues no stream: every stream's window halves; broken streams are dropped. */
  private miss(): void {
    for (let i = this.streams.length - 1; i >= 0; i--) {
      const s = this.streams[i];
      s.misses++;
      if (s.misses >= MAX_MISSES || s.window <= 1) {
        this.streams.splice(i, 1);
      } else {
        s.window = Math.max(1, s.window >> 1);
      }
    }
  }
}
