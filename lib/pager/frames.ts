// The local frame table: one entry per page of the local budget. A page holds a frame while it is
// Fetching, Clean or Dirty. Victims come first from the pages a sequential stream has passed, most
// recently passed first, then from a second-chance queue in the order frames were filled (CLOCK over
// insertion order), where the pager picks among the oldest by refault gap (see refaultGap). Runs on
// the pager thread.

/** A skipped frame's refault gap counts this much more each time eviction passes it over (aging). */
const SKIP_AGING = 1.05;
const SKIP_WEIGHT = Float64Array.from({ length: 256 }, (_, n) => SKIP_AGING ** n);

export class FrameTable {
  /** Region id owning the frame, or -1 when free. */
  readonly region: Int32Array;
  readonly page: Int32Array;
  /** Second-chance bit: set when a fault touches the page, cleared when the hand passes it. */
  readonly referenced: Uint8Array;
  // While the page is Fetching (only then does it matter, and a fetching page always holds a frame):
  /** A write fault asked for it: install it writable. */
  readonly wantsWrite: Uint8Array;
  /** A prefetch started the fetch; it counts against the prefetch limit until it lands. */
  readonly prefetched: Uint8Array;
  /** performance.now() when a fault started waiting for it; 0 when none waits. */
  readonly faultAt: Float64Array;
  // Prefetch accounting, from the prefetch until the page's use is known or it leaves local memory:
  /** Brought by a prefetch, not yet known to be used. */
  readonly guess: Uint8Array;
  /** In the sample: held unmapped when it lands, so that its first touch is seen. */
  readonly sampled: Uint8Array;
  /** The policy record (per region) that asked for it. */
  readonly issuer: Int32Array;
  /** Guide hops from the application's last fault; -1 when no guide is following it. */
  readonly hop: Int32Array;
  /** On the passed stack: a stream went by it, so it is the cheapest page to lose. */
  readonly passed: Uint8Array;
  /** The fill clock when the frame was taken (mod 2^32). */
  private readonly filledAt: Uint32Array;
  /** A fault brought the page (take with referenced), not a prefetch: only then does a refault gap mean anything. */
  private readonly faultFilled: Uint8Array;
  /** Frames in use that a fault filled: while no more than an eviction wants, no gap can keep one. */
  private faultFilledInUse = 0;
  /** Times eviction looked at the frame and chose another (saturates at 255). */
  private readonly skipped: Uint8Array;
  /** Counts takes: the clock of refault gaps. It runs with misses and prefetches, not wall time. */
  private fillClock = 0;
  /** Bumped on every take, so a queue entry left by an earlier owner of the frame is recognised as stale. */
  private readonly epoch: Uint32Array;
  private readonly freeStack: Int32Array;
  private freeTop: number;
  // The queue, oldest first: a ring of (frame, epoch) entries. Frames released by the hand leave it when
  // popped; frames released otherwise (a freed region) leave stale entries that the hand skips.
  private readonly ringFrame: Int32Array;
  private readonly ringEpoch: Uint32Array;
  private ringHead = 0;
  private ringCount = 0;
  // Frames a stream has passed, newest on top: evicting the newest first is meant to keep the oldest
  // part of a repeating scan resident. It does not yet: hits 1,000 or more pages apart learn of passed
  // pages too late, and the ring's oldest, that part, make up the rest (see docs/benchmark-log.md, 2026-12-03).
  // Whole blocks are read with no fault at all, so a scan of them passes little here; marking pages
  // passed at demand faults as well kept some resident but split blocks, and cost more (2026-12-06).
  // Entries go stale like the ring's.
  private readonly passedFrame: Int32Array;
  private readonly passedEpoch: Uint32Array;
  private passedTop = 0;

  constructor(readonly size: number) {
    this.region = new Int32Array(size).fill(-1);
    this.page = new Int32Array(size);
    this.referenced = new Uint8Array(size);
    this.wantsWrite = new Uint8Array(size);
    this.prefetched = new Uint8Array(size);
    this.faultAt = new Float64Array(size);
    this.guess = new Uint8Array(size);
    this.sampled = new Uint8Array(size);
    this.issuer = new Int32Array(size);
    this.hop = new Int32Array(size);
    this.passed = new Uint8Array(size);
    this.filledAt = new Uint32Array(size);
    this.faultFilled = new Uint8Array(size);
    this.skipped = new Uint8Array(size);
    this.epoch = new Uint32Array(size);
    this.freeStack = new Int32Array(size);
    for (let i = 0; i < size; i++) this.freeStack[i] = size - 1 - i;
    this.freeTop = size;
    this.ringFrame = new Int32Array(2 * size);
    this.ringEpoch = new Uint32Array(2 * size);
    this.passedFrame = new Int32Array(2 * size);
    this.passedEpoch = new Uint32Array(2 * size);
  }

  get free(): number {
    return this.freeTop;
  }

  get used(): number {
    return this.size - this.freeTop;
  }

  /** Takes a free frame for (region, page) and queues it as the newest; -1 when none is free. */
  take(region: number, page: number, referenced: boolean): number {
    if (this.freeTop === 0) return -1;
    const frame = this.freeStack[--this.freeTop];
    this.region[frame] = region;
    this.page[frame] = page;
    this.referenced[frame] = referenced ? 1 : 0;
    this.wantsWrite[frame] = 0;
    this.prefetched[frame] = 0;
    this.faultAt[frame] = 0;
    this.guess[frame] = 0;
    this.sampled[frame] = 0;
    this.issuer[frame] = -1;
    this.hop[frame] = -1;
    this.passed[frame] = 0;
    this.filledAt[frame] = this.fillClock;
    this.fillClock = (this.fillClock + 1) >>> 0;
    this.faultFilled[frame] = referenced ? 1 : 0;
    if (referenced) this.faultFilledInUse++;
    this.skipped[frame] = 0;
    this.epoch[frame] = (this.epoch[frame] + 1) >>> 0;
    this.enqueue(frame);
    return frame;
  }

  /** The value for PageTable.evictedAt of a page evicted now. */
  evictionStamp(): number {
    return this.fillClock === 0xffffffff ? 1 : this.fillClock + 1;
  }

  /**
   * How long the frame's page stayed away before a fault brought it back: fills between its last
   * eviction (`evictedAt`, from PageTable.evictedAt) and its refetch, grown by SKIP_AGING for each time
   * eviction passed it over. Infinity when it was never evicted. Under a skewed access pattern the
   * pages wanted back soonest are the hot ones, which a pager that sees no accesses to mapped pages
   * cannot tell apart otherwise. In a replay of kv's page trace (bench/apps/eviction-sim.js), keeping
   * them by gaps compared over the whole queue takes 12% fewer misses than fill order, about as few as
   * exact LRU; the pager compares only the oldest part (EVICTION_WINDOW_SHARE in pager.ts). -1 for a
   * page a prefetch brought: its refetch says what the policy guessed, not when the application wanted it.
   */
  refaultGap(frame: number, evictedAt: number): number {
    if (this.faultFilled[frame] === 0) return -1;
    if (evictedAt === 0) return Infinity;
    return (((this.filledAt[frame] - evictedAt + 1) >>> 0) + 1) * SKIP_WEIGHT[this.skipped[frame]];
  }

  /** Puts a frame eviction looked at and passed over back as the newest; it ages (SKIP_AGING). */
  requeueSkipped(frame: number): void {
    if (this.skipped[frame] < 255) this.skipped[frame]++;
    this.enqueue(frame);
  }

  /** Calls `visit` with the oldest frames in use, oldest first, up to `count` of them; moves nothing. */
  peekOldest(count: number, visit: (frame: number) => void): void {
    const capacity = this.ringFrame.length;
    for (let i = 0; i < this.ringCount && count > 0; i++) {
      const slot = (this.ringHead + i) % capacity;
      const frame = this.ringFrame[slot];
      if (this.region[frame] < 0 || this.ringEpoch[slot] !== this.epoch[frame]) continue;
      visit(frame);
      count--;
    }
  }

  release(frame: number): void {
    if (this.region[frame] < 0) throw new Error(`frame ${frame} released twice (a pager bug)`);
    this.region[frame] = -1;
    if (this.faultFilled[frame] === 1) this.faultFilledInUse--;
    this.freeStack[this.freeTop++] = frame;
  }

  /** Frames in use whose page a fault brought (the only ones with a refault gap). */
  get faultFilledCount(): number {
    return this.faultFilledInUse;
  }

  /** Removes and returns the oldest frame in use; -1 when none is. */
  popOldest(): number {
    while (this.ringCount > 0) {
      const slot = this.ringHead;
      this.ringHead = slot + 1 === this.ringFrame.length ? 0 : slot + 1;
      this.ringCount--;
      const frame = this.ringFrame[slot];
      if (this.region[frame] >= 0 && this.ringEpoch[slot] === this.epoch[frame]) return frame;
    }
    return -1;
  }

  /** Records that a stream went past the frame's page; no-op if it is already on the stack. */
  pushPassed(frame: number): void {
    if (this.passed[frame] === 1 || this.region[frame] < 0) return;
    if (this.passedTop === this.passedFrame.length) this.compactPassed();
    this.passed[frame] = 1;
    this.passedFrame[this.passedTop] = frame;
    this.passedEpoch[this.passedTop] = this.epoch[frame];
    this.passedTop++;
  }

  /** Removes and returns the most recently passed frame still in use; -1 when none is. */
  popPassed(): number {
    while (this.passedTop > 0) {
      this.passedTop--;
      const frame = this.passedFrame[this.passedTop];
      if (this.region[frame] >= 0 && this.passedEpoch[this.passedTop] === this.epoch[frame] && this.passed[frame] === 1) {
        this.passed[frame] = 0;
        return frame;
      }
    }
    return -1;
  }

  /** Puts a popped frame back as the newest: its second chance, or a page still in flight. */
  requeue(frame: number): void {
    this.enqueue(frame);
  }

  private enqueue(frame: number): void {
    const capacity = this.ringFrame.length;
    if (this.ringCount === capacity) this.compact();
    const slot = (this.ringHead + this.ringCount) % capacity;
    this.ringFrame[slot] = frame;
    this.ringEpoch[slot] = this.epoch[frame];
    this.ringCount++;
  }

  /** Drops the passed stack's stale entries, keeping order; at most `size` are live, so half is freed. */
  private compactPassed(): void {
    let kept = 0;
    for (let i = 0; i < this.passedTop; i++) {
      const frame = this.passedFrame[i];
      if (this.region[frame] >= 0 && this.passedEpoch[i] === this.epoch[frame] && this.passed[frame] === 1) {
        this.passedFrame[kept] = frame;
        this.passedEpoch[kept] = this.passedEpoch[i];
        kept++;
      }
    }
    this.passedTop = kept;
  }

  /** Drops stale entries, keeping order. At most `size` entries are live, so this frees half the ring. */
  private compact(): void {
    const capacity = this.ringFrame.length;
    let kept = 0;
    const frames = new Int32Array(this.size);
    const epochs = new Uint32Array(this.size);
    for (let i = 0; i < this.ringCount; i++) {
      const slot = (this.ringHead + i) % capacity;
      const frame = this.ringFrame[slot];
      if (this.region[frame] >= 0 && this.ringEpoch[slot] === this.epoch[frame]) {
        frames[kept] = frame;
        epochs[kept] = this.ringEpoch[slot];
        kept++;
      }
    }
    this.ringFrame.set(frames.subarray(0, kept), 0);
    this.ringEpoch.set(epochs.subarray(0, kept), 0);
    this.ringHead = 0;
    this.ringCount = kept;
  }
}
