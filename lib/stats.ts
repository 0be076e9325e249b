// Counters the pager thread writes into a SharedArrayBuffer and any thread reads, so that
// region.stats() is synchronous. Writes come from the pager thread alone; readers see a snapshot
// that may be a few operations old, never a torn double (aligned 8-byte stores on x86-64/arm64).

export const REGION_COUNTERS = [
  'faults', // fault messages handled (missing + write-protect)
  'writeFaults', // first writes to clean or zero pages (write-protect faults)
  'writeAround', // clean pages made writable ahead of a sequential writer, with no fault of their own
  'remoteFetches', // pages fetched from a node because a fault asked for them
  'zeroFills', // faults served with zeros, no network
  'prefetched', // pages fetched ahead of any fault
  'prefetchHits', // faults on pages a prefetch was already bringing in
  'evictions', // pages dropped from local memory
  'writebacks', // pages written back to a node
  'residentPages', // pages holding a local frame (clean, dirty, or fetch in flight)
  'dirtyPages',
  'inflightPages', // fetches in flight
  'bytesFetched',
  'bytesWritten',
  'latencyCount', // remote demand faults timed in the histogram
  'latencySumUs',
  'prefetchUsed', // prefetched pages known used: touched in flight or while held, or written
  'prefetchSampled', // prefetched pages held unmapped until first touch, to measure accuracy
  'prefetchSampledUsed',
  'prefetchSampledUnused', // held pages evicted untouched
  'policyErrors', // policies or guides that misbehaved and were replaced by 'none'
  'hugeBlocks', // whole 2 MiB blocks landed by one move (hugePages)
  'protectCalls', // UFFDIO_WRITEPROTECT calls that took write access away for a write-back (each flushes the TLB)
  'zeroBlocks', // whole 2 MiB blocks of zeros mapped by one move ahead of a writer (hugePages)
] as const;
export type RegionCounter = (typeof REGION_COUNTERS)[number];

// Latency histogram: exact below 16 µs, then 8 linear sub-buckets per power of two (≤ 12.5% error),
// up to 2^31 µs.
const LINEAR = 16;
const SUB_BITS = 3;
const SUB = 1 << SUB_BITS;
export const HISTOGRAM_BUCKETS = LINEAR + (31 - 4) * SUB;

export const REGION_STATS_FLOATS = REGION_COUNTERS.length + HISTOGRAM_BUCKETS;
const INDEX = Object.fromEntries(REGION_COUNTERS.map((name, i) => [name, i])) as Record<RegionCounter, number>;
export const C = INDEX;
export const HISTOGRAM_OFFSET = REGION_COUNTERS.length;

export function bucketOf(us: number): number {
  const v = us < 0 ? 0 : Math.floor(us);
  if (v < LINEAR) return v;
  const exponent = 31 - Math.clz32(v); // >= 4
  if (exponent >= 31) return HISTOGRAM_BUCKETS - 1;
  const sub = (v >>> (exponent - SUB_BITS)) & (SUB - 1);
  return LINEAR + (exponent - 4) * SUB + sub;
}

/** The middle of a bucket's range, in µs. */
export function bucketValue(bucket: number): number {
  if (bucket < LINEAR) return bucket;
  const exponent = 4 + Math.floor((bucket - LINEAR) / SUB);
  const sub = (bucket - LINEAR) % SUB;
  const width = 1 << (exponent - SUB_BITS);
  return (1 << exponent) + sub * width + width / 2;
}

/** Percentile (0..100) of a histogram stored at `offset` in `data`; 0 when empty. */
export function percentile(data: Float64Array, offset: number, p: number): number {
  let total = 0;
  for (let i = 0; i < HISTOGRAM_BUCKETS; i++) total += data[offset + i];
  if (total === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
    seen += data[offset + i];
    if (seen >= rank) return bucketValue(i);
  }
  return bucketValue(HISTOGRAM_BUCKETS - 1);
}

export interface RegionStats {
  faults: number;
  writeFaults: number;
  /** Clean pages made writable (and counted dirty) ahead of a sequential writer, sparing each its fault. */
  writeAround: number;
  remoteFetches: number;
  zeroFills: number;
  prefetched: number;
  prefetchHits: number;
  evictions: number;
  writebacks: number;
  residentBytes: number;
  dirtyBytes: number;
  inflightBytes: number;
  bytesFetched: number;
  bytesWritten: number;
  /** Pager-side service time of faults that needed the network, from the batch read to the page installed. */
  faultLatencyUs: { p50: number; p99: number; mean: number; count: number };
  prefetch: PrefetchAccounting;
  policyErrors: number;
  /** Whole 2 MiB blocks that landed as one move (the hugePages option): a transparent huge page where the kernel had one. */
  hugeBlocks: number;
  /** Calls that write-protected dirty pages for their write-back: one may span many pages, and each flushes the TLB. */
  protectCalls: number;
  /** Whole 2 MiB blocks of never-written pages mapped as zeros by one move ahead of a sequential writer (hugePages): one huge page each where the kernel had one free. */
  zeroBlocks: number;
}

/**
 * How well prefetching did. A read of a mapped page never reaches the pager, so use is measured on a
 * sample: `sampled` prefetched pages were held unmapped until their first touch, and their fate gives
 * accuracy; the rest is estimated from it. null where nothing was sampled yet.
 */
export interface PrefetchAccounting {
  /** Pages fetched ahead of any fault. */
  prefetched: number;
  /** Prefetched pages known to have been used (touched in flight or while held, or written). */
  used: number;
  /** Prefetched pages whose use was measured (held until touched or evicted). */
  sampled: number;
  /** Used / prefetched, estimated from the sample. */
  accuracy: number | null;
  /** Faults avoided / faults there would have been without prefetch (demand fetches + pages used). */
  coverage: number | null;
  /** Bytes fetched ahead and never used, estimated from the sample. */
  unusedBytes: number | null;
}

export interface PrefetchCounts {
  prefetched: number;
  used: number;
  sampled: number;
  sampledUsed: number;
  sampledUnused: number;
  demandFetches: number;
}

export function prefetchAccounting(counts: PrefetchCounts, pageSize: number): PrefetchAccounting {
  const decided = counts.sampledUsed + counts.sampledUnused;
  const accuracy = decided === 0 ? null : counts.sampledUsed / decided;
  // Never below what is known for certain.
  const usedEstimate = accuracy === null ? null : Math.max(counts.used, accuracy * counts.prefetched);
  const avoidable = usedEstimate === null ? 0 : counts.demandFetches + usedEstimate;
  return {
    prefetched: counts.prefetched,
    used: counts.used,
    sampled: counts.sampled,
    accuracy,
    coverage: usedEstimate === null ? null : avoidable === 0 ? 0 : usedEstimate / avoidable,
    unusedBytes: usedEstimate === null ? null : Math.round((counts.prefetched - usedEstimate) * pageSize),
  };
}

export function readRegionStats(data: Float64Array, pageSize: number): RegionStats {
  const count = data[C.latencyCount];
  return {
    faults: data[C.faults],
    writeFaults: data[C.writeFaults],
    writeAround: data[C.writeAround],
    remoteFetches: data[C.remoteFetches],
    zeroFills: data[C.zeroFills],
    prefetched: data[C.prefetched],
    prefetchHits: data[C.prefetchHits],
    evictions: data[C.evictions],
    writebacks: data[C.writebacks],
    residentBytes: data[C.residentPages] * pageSize,
    dirtyBytes: data[C.dirtyPages] * pageSize,
    inflightBytes: data[C.inflightPages] * pageSize,
    bytesFetched: data[C.bytesFetched],
    bytesWritten: data[C.bytesWritten],
    faultLatencyUs: {
      p50: percentile(data, HISTOGRAM_OFFSET, 50),
      p99: percentile(data, HISTOGRAM_OFFSET, 99),
      mean: count === 0 ? 0 : data[C.latencySumUs] / count,
      count,
    },
    prefetch: prefetchAccounting(
      {
        prefetched: data[C.prefetched],
        used: data[C.prefetchUsed],
        sampled: data[C.prefetchSampled],
        sampledUsed: data[C.prefetchSampledUsed],
        sampledUnused: data[C.prefetchSampledUnused],
        demandFetches: data[C.remoteFetches],
      },
      pageSize,
    ),
    policyErrors: data[C.policyErrors],
    hugeBlocks: data[C.hugeBlocks],
    protectCalls: data[C.protectCalls],
    zeroBlocks: data[C.zeroBlocks],
  };
}

const GAUGES = [C.residentPages, C.dirtyPages, C.inflightPages] as const;

/**
 * The counters of a set of regions over time (a FarMemory's, a coffer's): live regions are read when
 * asked, freed ones are folded in once. Gauges (resident, dirty, in flight) count live regions only.
 */
export class StatsLedger {
  private readonly freed = new Float64Array(REGION_STATS_FLOATS);

  /** Folds a region's final counters in; its gauges stop counting. */
  retire(stats: Float64Array): void {
    for (let i = 0; i < REGION_STATS_FLOATS; i++) this.freed[i] += stats[i];
    for (const gauge of GAUGES) this.freed[gauge] = 0;
  }

  /** Freed regions' counters plus the live ones', in the layout readRegionStats() reads. */
  total(live: Iterable<Float64Array>): Float64Array {
    const sum = new Float64Array(this.freed);
    for (const stats of live) for (let i = 0; i < REGION_STATS_FLOATS; i++) sum[i] += stats[i];
    return sum;
  }
}
