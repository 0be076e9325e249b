// The page table of one region: one byte of state per page, and the transitions that are legal.
// Runs on the pager thread only.

export const enum PageState {
  /** Never written anywhere: a fault is served by a zero page, no network. */
  Untouched = 0,
  /** Only the memory node holds the page. */
  Remote = 1,
  /** A read from the node is in flight; a frame is reserved for it. */
  Fetching = 2,
  /** The shared zero page is mapped write-protected: reads cost nothing, the first write faults. */
  ZeroMapped = 3,
  /** Resident, write-protected, equal to its backing copy (the node, or zeros). */
  Clean = 4,
  /** Resident and writable: differs from the node. */
  Dirty = 5,
  /** Not mapped; the pager holds the only local copy while its write-back is in flight. */
  Evicting = 6,
  /**
   * Prefetched and kept in the pager, not mapped, holding a frame: the first touch faults and maps it
   * with no network, which tells the pager the guess was used (reads of mapped pages are invisible).
   */
  Held = 7,
}

export const PAGE_STATE_NAMES = [
  'untouched',
  'remote',
  'fetching',
  'zero-mapped',
  'clean',
  'dirty',
  'evicting',
  'held',
] as const;

// LEGAL[from] is a bit set of the states `from` may move to.
const bit = (s: PageState): number => 1 << s;
const LEGAL: readonly number[] = [
  /* Untouched  */ bit(PageState.ZeroMapped) | bit(PageState.Dirty),
  /* Remote     */ bit(PageState.Fetching),
  /* Fetching   */ bit(PageState.Clean) | bit(PageState.Dirty) | bit(PageState.Held),
  /* ZeroMapped */ bit(PageState.Dirty) | bit(PageState.Untouched) | bit(PageState.Evicting),
  /* Clean      */ bit(PageState.Dirty) | bit(PageState.Remote) | bit(PageState.Evicting),
  /* Dirty      */ bit(PageState.Evicting) | bit(PageState.Clean),
  /* Evicting   */ bit(PageState.Remote) | bit(PageState.Clean) | bit(PageState.Dirty),
  /* Held       */ bit(PageState.Clean) | bit(PageState.Dirty) | bit(PageState.Remote),
];

export class IllegalTransitionError extends Error {
  readonly code = 'FARMEM_ILLEGAL_TRANSITION';
  constructor(
    readonly region: number,
    readonly page: number,
    readonly from: PageState,
    readonly to: PageState,
  ) {
    super(
      `page ${page} of region ${region}: illegal transition ${PAGE_STATE_NAMES[from]} -> ${PAGE_STATE_NAMES[to]} ` +
        `(a pager bug: please report it with this message)`,
    );
    this.name = 'IllegalTransitionError';
  }
}

export class PageTable {
  /** Pager memory per page of a region: state (1), frame index (4) and last eviction (4). */
  static readonly BYTES_PER_PAGE = 9;

  readonly state: Uint8Array;
  /** Frame index holding the page while it occupies local memory (Fetching, Clean, Dirty, Held), else -1. */
  readonly frame: Int32Array;
  /**
   * The frame table's fill clock + 1 when eviction last took the page, 0 if it never did: a refetch
   * then measures how soon the page was wanted back (FrameTable.refaultGap).
   */
  readonly evictedAt: Uint32Array;
  readonly counts: Int32Array;

  constructor(
    readonly regionId: number,
    readonly pages: number,
  ) {
    this.state = new Uint8Array(pages);
    this.frame = new Int32Array(pages).fill(-1);
    this.evictedAt = new Uint32Array(pages);
    this.counts = new Int32Array(PAGE_STATE_NAMES.length);
    this.counts[PageState.Untouched] = pages;
  }

  get(page: number): PageState {
    return this.state[page] as PageState;
  }

  /** Moves `page` to `to`, or throws IllegalTransitionError naming the page. */
  move(page: number, to: PageState): void {
    const from = this.state[page] as PageState;
    if ((LEGAL[from] & (1 << to)) === 0) throw new IllegalTransitionError(this.regionId, page, from, to);
    this.state[page] = to;
    this.counts[from]--;
    this.counts[to]++;
  }

  count(state: PageState): number {
    return this.counts[state];
  }
}
