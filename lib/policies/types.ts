// The prefetch policy contract. Policies are pure: fault events in, pages to prefetch out. No I/O, no
// addon, so a recorded trace can drive them (see replay.ts). In a region they run on the pager thread.

export interface FaultEvent {
  /** Page index within the region. */
  page: number;
  /** The fault was caused by a write. */
  write: boolean;
  /**
   * The page had been prefetched and this fault found it: still in flight, or held by the pager and mapped
   * now without network. (A prefetched page that was mapped on arrival is read with no fault at all.)
   */
  prefetchHit: boolean;
  /**
   * The page had never held data: the pager mapped zeros, and nothing was fetched. These faults follow
   * the order in which the application first wrote (or read) fresh memory, which need not be the order in
   * which it reads its data later.
   */
  firstTouch: boolean;
  /** Prefetched pages this policy asked for that are known to have been used since its previous call. */
  prefetchUsed: number;
  /** Milliseconds on a monotonic clock (performance.now() in a region, the trace's clock in a replay). */
  time: number;
  /** Pages in the region. */
  regionPages: number;
}

/**
 * What a policy answers: nothing, or a list whose entries are page indexes (`17`) or ranges
 * (`[firstPage, count]`). Ranges reaching past either end of the region are clipped to it; pages
 * already resident or in flight are skipped. Non-integers, NaN, negative counts, single pages outside
 * the region, or more than MAX_ANSWER_PAGES pages in one answer are a misbehaving policy.
 */
export type PrefetchAnswer = ReadonlyArray<number | readonly [number, number]> | null | undefined | void;

/** Compatibility name: a list of [firstPage, count] ranges. */
export type PrefetchRanges = Array<[number, number]>;

export interface PrefetchPolicy {
  readonly name: string;
  onFault(event: FaultEvent): PrefetchAnswer;
}

/** What a policy module's factory is told about the region it will serve. */
export interface PolicyContext {
  regionPages: number;
  pageSize: number;
  /**
   * Pages of local memory the region's pager holds at most (its `localBudget`, shared by every region of
   * the same FarMemory; a replay's budgetPages). Pages asked for beyond what fits are evicted before use
   * and fetched again. Infinity where no budget is known.
   */
  localPages: number;
}

/**
 * A policy module (for `region.setPrefetch({ module, options })`) exports a factory as `createPolicy`
 * or as its default export: `(options, context) => PrefetchPolicy`.
 */
export type PolicyFactory = (options: Record<string, unknown>, context: PolicyContext) => PrefetchPolicy;

/** The most pages one answer may name; more is a misbehaving policy. */
export const MAX_ANSWER_PAGES = 1 << 16;
