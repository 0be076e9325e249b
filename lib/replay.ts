// Replays a fault trace against prefetch policies, in a model of the pager: a local budget of frames,
// demand fetches, prefetches into free frames only, CLOCK eviction between a high and a low water mark.
// Pure: no addon, no network, so policies can be compared on a recorded trace in milliseconds.
import { FarmemError, invalidOption } from './errors';
import { checkOptionNames, fractionOption, intOption } from './options';
import { BUILTIN_POLICIES, checkAnswer, createPolicy } from './policies';
import type { PrefetchPolicy } from './policies';
import { TRACE_FLAG_FIRST_TOUCH, TRACE_FLAG_WRITE, type Trace } from './trace-file';

export { checkAnswer } from './policies';

export interface SimulateOptions {
  /** Local frames, in pages. */
  budgetPages: number;
  /** Eviction starts when more than this fraction of the budget is in use. Default 0.95, as in a region. */
  highWater?: number;
  /** ...and frees frames until this fraction is in use. Default 0.85. */
  lowWater?: number;
  /** Most of the budget that prefetched pages not used yet may hold. Default 0.25. */
  maxPrefetchFraction?: number;
  /**
   * Call the policy (prefetchHit true) on the first use of each prefetched page, as the pager does for a
   * page it still holds or is bringing. Default true. False models pages mapped on arrival, which are
   * read without a fault: the policy then sees only demand faults, and its events' prefetchUsed stays 0.
   * A region is between the two.
   */
  notifyPrefetchHits?: boolean;
}

export interface ReplayResult {
  policy: string;
  /** Records in the trace: each is a reference to a page. */
  references: number;
  /** References to a page that was not resident: demand fetches. */
  faults: number;
  /** References to a resident page (references - faults). */
  hits: number;
  /** Pages fetched by the policy's answers. */
  prefetched: number;
  /** Prefetched pages referenced before being evicted. */
  prefetchUsed: number;
  /** Prefetched pages evicted before any reference, or never referenced by the end of the trace. */
  prefetchUnused: number;
  /** prefetchUsed / prefetched; null when nothing was prefetched. */
  accuracy: number | null;
  /** faults + prefetched. */
  pagesFetched: number;
  bytesFetched: number;
  /** prefetchUnused pages, in bytes: transfer spent for nothing. */
  bytesUnused: number;
  evictions: number;
  /** Set when the policy threw or answered something that is not pages; from then on it ran as 'none'. */
  error?: string;
}

export interface ReplayRow extends ReplayResult {
  /** (baseline faults - faults) / baseline faults, against 'none'; null when the baseline had no faults. */
  coverage: number | null;
}

export interface ReplayOptions extends SimulateOptions {
  /** Options per policy name, e.g. { leap: { maxWindow: 32 } }. */
  policyOptions?: Record<string, Record<string, unknown>>;
}

const SIMULATE_OPTIONS = ['budgetPages', 'highWater', 'lowWater', 'maxPrefetchFraction', 'notifyPrefetchHits'];
// Per-page state is kept in typed arrays the size of the region: past this, the model would need GiBs.
const MAX_SIMULATED_REGION_PAGES = 1 << 26;

interface Model {
  budgetPages: number;
  highWater: number;
  lowWater: number;
  maxPrefetchFraction: number;
  notifyPrefetchHits: boolean;
}

function checkSimulateOptions(options: SimulateOptions, known = SIMULATE_OPTIONS): Model {
  checkOptionNames(options, known, 'the replay');
  if (options === undefined || options.budgetPages === undefined) {
    throw invalidOption('budgetPages', undefined, 'the local budget in pages, an integer of at least 1');
  }
  const budgetPages = intOption('budgetPages', options.budgetPages, 0, 1, Number.MAX_SAFE_INTEGER);
  const highWater = fractionOption('highWater', options.highWater, 0.95);
  const lowWater = fractionOption('lowWater', options.lowWater, 0.85);
  if (lowWater > highWater) throw invalidOption('lowWater', lowWater, `at most highWater (${highWater})`);
  const maxPrefetchFraction = fractionOption('maxPrefetchFraction', options.maxPrefetchFraction, 0.25);
  const notify = options.notifyPrefetchHits;
  if (notify !== undefined && typeof notify !== 'boolean') throw invalidOption('notifyPrefetchHits', notify, 'true or false');
  return { budgetPages, highWater, lowWater, maxPrefetchFraction, notifyPrefetchHits: notify ?? true };
}

/** Replays `trace` against `policy` with the pager's rules; see SimulateOptions and ReplayResult. */
export function simulate(trace: Trace, policy: PrefetchPolicy, options: SimulateOptions): ReplayResult {
  return run(trace, policy, checkSimulateOptions(options));
}

function run(trace: Trace, policy: PrefetchPolicy, model: Model): ReplayResult {
  const { regionPages, pageSize } = trace.header;
  if (regionPages > MAX_SIMULATED_REGION_PAGES) {
    throw invalidOption('trace', `a region of ${regionPages} pages`, `a region of at most ${MAX_SIMULATED_REGION_PAGES} pages to simulate`);
  }
  const { budgetPages } = model;
  // More frames than pages would never be used: the region fits, nothing is evicted.
  const frameCount = Math.min(budgetPages, regionPages);
  const highFrames = Math.max(1, Math.floor(budgetPages * model.highWater));
  const lowFrames = Math.floor(budgetPages * model.lowWater);
  const maxUnused = Math.floor(budgetPages * model.maxPrefetchFraction);

  const frameOf = new Int32Array(regionPages).fill(-1);
  const pageOf = new Int32Array(frameCount).fill(-1);
  const referenced = new Uint8Array(frameCount);
  const unusedPrefetch = new Uint8Array(frameCount); // prefetched, not referenced yet
  const freeFrames = new Int32Array(frameCount);
  for (let f = 0; f < frameCount; f++) freeFrames[f] = frameCount - 1 - f;
  let freeCount = frameCount;
  let hand = 0;

  let faults = 0;
  let prefetched = 0;
  let prefetchUsed = 0;
  let evictedUnused = 0;
  let unusedResident = 0;
  let evictions = 0;
  let usedSinceCall = 0;
  let error: string | undefined;

  // CLOCK: the hand clears reference bits and takes the first frame found without one; two sweeps at most.
  const evict = (wanted: number): void => {
    let evicted = 0;
    for (let steps = 2 * frameCount; evicted < wanted && steps > 0; steps--) {
      const f = hand;
      hand = hand + 1 === frameCount ? 0 : hand + 1;
      if (pageOf[f] < 0) continue;
      if (referenced[f]) {
        referenced[f] = 0;
        continue;
      }
      frameOf[pageOf[f]] = -1;
      pageOf[f] = -1;
      freeFrames[freeCount++] = f;
      evictions++;
      evicted++;
      if (unusedPrefetch[f]) {
        unusedPrefetch[f] = 0;
        unusedResident--;
        evictedUnused++;
      }
    }
  };

  const install = (page: number, frame: number): void => {
    frameOf[page] = frame;
    pageOf[frame] = page;
    referenced[frame] = 1; // as in the pager: a new page gets one pass of the hand before it can go
  };

  const ask = (index: number, page: number, prefetchHit: boolean): Array<[number, number]> | null => {
    const event = {
      page,
      write: (trace.flags[index] & TRACE_FLAG_WRITE) !== 0,
      prefetchHit,
      // As recorded: the model does not know which pages held data before the trace began.
      firstTouch: (trace.flags[index] & TRACE_FLAG_FIRST_TOUCH) !== 0,
      prefetchUsed: usedSinceCall,
      time: trace.time[index],
      regionPages,
    };
    usedSinceCall = 0;
    try {
      let answer: unknown;
      try {
        answer = policy.onFault(event);
      } catch (thrown) {
        throw new FarmemError('FARMEM_POLICY_ERROR', `the policy threw: ${thrown instanceof Error ? thrown.message : String(thrown)}`);
      }
      return checkAnswer(answer, regionPages);
    } catch (failure) {
      // As in a region: a misbehaving policy is reported and replaced by 'none' for the rest of the run.
      error = `at reference ${index} (page ${page}): ${(failure as Error).message}`;
      return null;
    }
  };

  const prefetch = (ranges: Array<[number, number]>): void => {
    for (const [first, count] of ranges) {
      for (let page = first; page < first + count; page++) {
        if (frameOf[page] >= 0) continue;
        // A prefetch takes only a free frame, and never more than its share of the budget.
        if (freeCount === 0 || unusedResident >= maxUnused) return;
        const frame = freeFrames[--freeCount];
        install(page, frame);
        unusedPrefetch[frame] = 1;
        unusedResident++;
        prefetched++;
      }
    }
  };

  for (let i = 0; i < trace.length; i++) {
    const page = trace.page[i];
    let frame = frameOf[page];
    let ranges: Array<[number, number]> | null = null;
    if (frame >= 0) {
      referenced[frame] = 1;
      if (!unusedPrefetch[frame]) continue;
      unusedPrefetch[frame] = 0;
      unusedResident--;
      prefetchUsed++;
      // Unseen when mapped on arrival: the pager learns of a use only from a fault.
      if (!model.notifyPrefetchHits || error !== undefined) continue;
      usedSinceCall++;
      ranges = ask(i, page, true);
    } else {
      faults++;
      if (freeCount === 0) evict(Math.max(1, frameCount - freeCount - lowFrames));
      frame = freeFrames[--freeCount];
      install(page, frame);
      if (error === undefined) ranges = ask(i, page, false);
    }
    if (ranges !== null) prefetch(ranges);
    if (frameCount - freeCount > highFrames) evict(frameCount - freeCount - lowFrames);
  }

  const prefetchUnused = evictedUnused + unusedResident;
  const pagesFetched = faults + prefetched;
  const result: ReplayResult = {
    policy: policy.name,
    references: trace.length,
    faults,
    hits: trace.length - faults,
    prefetched,
    prefetchUsed,
    prefetchUnused,
    accuracy: prefetched > 0 ? prefetchUsed / prefetched : null,
    pagesFetched,
    bytesFetched: pagesFetched * pageSize,
    bytesUnused: prefetchUnused * pageSize,
    evictions,
  };
  if (error !== undefined) result.error = error;
  return result;
}

/**
 * Replays `trace` against each named built-in policy, after 'none' (the baseline: faults without any
 * prefetch), and reports each one's coverage: the share of the baseline's faults it removed. The baseline
 * is the first row; naming 'none' does not repeat it.
 */
export function replayPolicies(trace: Trace, names: readonly string[], options: ReplayOptions): ReplayRow[] {
  const model = checkSimulateOptions(options, [...SIMULATE_OPTIONS, 'policyOptions']);
  if (!Array.isArray(names) || names.length === 0) {
    throw invalidOption('policies', names, `a list of policy names from ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
  }
  const wanted: string[] = ['none'];
  for (const name of names) {
    if (!(BUILTIN_POLICIES as readonly string[]).includes(name)) {
      throw invalidOption('policy', name, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
    }
    if (!wanted.includes(name)) wanted.push(name);
  }
  const policyOptions = options.policyOptions ?? {};
  if (policyOptions === null || typeof policyOptions !== 'object' || Array.isArray(policyOptions)) {
    throw invalidOption('policyOptions', policyOptions, 'an object keyed by policy name, e.g. { "leap": { "maxWindow": 32 } }');
  }
  for (const name of Object.keys(policyOptions)) {
    if (!wanted.includes(name)) {
      throw invalidOption('policyOptions', name, `options only for the policies replayed (${wanted.join(', ')})`);
    }
  }
  // Every policy is built before any runs, so that a bad option fails at once. Each is told the budget,
  // as a region's pager tells it its local memory.
  const context = { regionPages: trace.header.regionPages, pageSize: trace.header.pageSize, localPages: model.budgetPages };
  const policies = wanted.map((name) => createPolicy(name, policyOptions[name] ?? {}, context));
  const results = policies.map((policy) => run(trace, policy, model));
  const baselineFaults = results[0].faults;
  return results.map((result) => ({
    ...result,
    coverage: baselineFaults > 0 ? (baselineFaults - result.faults) / baselineFaults : null,
  }));
}
