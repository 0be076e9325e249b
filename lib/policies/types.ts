// The prefetch policy contract. Policies are pure: fault events in, page ranges out.
// No I/O, no addon, so a recorded trace can drive them. They run on the pager thread.

export interface FaultEvent {
  /** Page index within the region. */
  page: number;
  /** The fault was caused by a write. */
  write: boolean;
  /** The page was already being brought in by an earlier prefetch. */
  prefetchHit: boolean;
  /** performance.now() of the batch the fault came in. */
  time: number;
  /** Pages in the region. */
  regionPages: number;
}

/** Pages to prefetch: [firstPage, count] pairs. The pager clamps them to the region and skips pages already local. */
export type PrefetchRanges = Array<[number, number]>;

export interface PrefetchPolicy {
  readonly name: string;
  onFault(event: FaultEvent): PrefetchRanges | null;
}
