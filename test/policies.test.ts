// Prefetch policies are pure: driven here through the replay model (simulate) on synthetic access
// patterns, and directly with fault events. No pager, no network, no timing.
import { describe, expect, it } from 'vitest';
import {
  BUILTIN_POLICIES,
  LeapPolicy,
  MAX_ANSWER_PAGES,
  ReadaheadPolicy,
  StridePolicy,
  checkAnswer,
  createPolicy,
  type FaultEvent,
  type PrefetchPolicy,
} from '../lib/policies';
import { replayPolicies, simulate, type ReplayRow, type SimulateOptions } from '../lib/replay';
import { TRACE_FLAG_FIRST_TOUCH, TRACE_FLAG_WRITE, traceFromPages } from '../lib/trace-file';

const N = 20_000; // references per pattern

/** xorshift32: the same "random" pattern on every run. */
function seededRandom(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

interface Pattern {
  pages: number[];
  regionPages: number;
}

const PATTERNS: Record<string, () => Pattern> = {
  forward: () => ({ pages: Array.from({ length: N }, (_, i) => i), regionPages: N }),
  backward: () => ({ pages: Array.from({ length: N }, (_, i) => N - 1 - i), regionPages: N }),
  'stride 3': () => ({ pages: Array.from({ length: N }, (_, i) => 3 * i), regionPages: 3 * N }),
  'stride 17': () => ({ pages: Array.from({ length: N }, (_, i) => 17 * i), regionPages: 17 * N }),
  'stride -5': () => ({ pages: Array.from({ length: N }, (_, i) => 5 * (N - 1 - i)), regionPages: 5 * N }),
  // Two forward scans in lockstep, as in a copy: a page of one, then a page of the other.
  interleaved: () => {
    const pages: number[] = [];
    for (let i = 0; i < N / 2; i++) pages.push(i, N + i);
    return { pages, regionPages: 2 * N };
  },
  random: () => {
    const next = seededRandom(42);
    return { pages: Array.from({ length: N }, () => Math.floor(next() * 100_000)), regionPages: 100_000 };
  },
};

/** Every built-in policy on a pattern, with a budget of a quarter of the pages it touches. */
function replay(pattern: string, options: Partial<SimulateOptions> = {}): Record<string, ReplayRow> {
  const { pages, regionPages } = PATTERNS[pattern]();
  const trace = traceFromPages(pages, regionPages);
  const rows = replayPolicies(trace, [...BUILTIN_POLICIES], { budgetPages: trace.header.localBudgetPages, ...options });
  return Object.fromEntries(rows.map((row) => [row.policy, row]));
}

const event = (page: number, more: Partial<FaultEvent> = {}): FaultEvent => ({
  page,
  write: false,
  prefetchHit: false,
  firstTouch: false,
  prefetchUsed: 0,
  time: 0,
  regionPages: 1_000_000,
  ...more,
});

/** The pages an answer names, in order. */
function pagesOf(answer: ReturnType<PrefetchPolicy['onFault']>): number[] {
  const out: number[] = [];
  for (const entry of answer ?? []) {
    if (typeof entry === 'number') out.push(entry);
    else for (let p = entry[0]; p < entry[0] + entry[1]; p++) out.push(p);
  }
  return out;
}

describe('built-in policies on synthetic patterns', () => {
  it("'none' prefetches nothing anywhere, and is the baseline: every pattern faults on every new page", () => {
    for (const name of Object.keys(PATTERNS)) {
      const rows = replay(name);
      expect(rows.none.prefetched).toBe(0);
      expect(rows.none.accuracy).toBeNull();
      expect(rows.none.coverage).toBe(0);
    }
    expect(replay('forward').none.faults).toBe(N);
  });

  it.each(['forward', 'backward'])('%s scan: readahead, stride and leap remove nearly every fault, nearly every prefetch used', (name) => {
    const rows = replay(name);
    // Measured: readahead 9 faults (maxWindow 1024), stride 3, leap 312 (its window grows from 1 page, by hits).
    for (const policy of ['readahead', 'stride', 'leap']) {
      expect(rows[policy].coverage, policy).toBeGreaterThan(0.95);
      expect(rows[policy].accuracy, policy).toBeGreaterThan(0.95);
    }
    expect(rows.readahead.faults).toBeLessThan(20);
  });

  it.each(['stride 3', 'stride 17', 'stride -5'])('%s: stride and leap cut faults by far more than 5x; readahead stays out', (name) => {
    const rows = replay(name);
    // Measured: stride 3 faults (two deltas to confirm), leap about 314 (1 in 64: its window is 64).
    expect(rows.stride.faults).toBeLessThanOrEqual(10);
    expect(rows.none.faults / rows.leap.faults).toBeGreaterThan(20);
    for (const policy of ['stride', 'leap']) expect(rows[policy].accuracy, policy).toBeGreaterThan(0.95);
    // No fault is next to a recent one, so no stream ever starts.
    expect(rows.readahead.prefetched).toBe(0);
  });

  it('two interleaved scans: readahead follows both; leap, without a majority delta, reads aligned blocks; stride sees no stride', () => {
    const rows = replay('interleaved');
    // Readahead keeps a window per stream. Measured: 4 faults, accuracy 0.974: what is not used is the
    // two windows it had asked for past the end of each scan.
    expect(rows.readahead.coverage).toBeGreaterThan(0.95);
    expect(rows.readahead.accuracy).toBeGreaterThan(0.9);
    // The deltas alternate (+N, -N+1): no delta holds more than half of any window, so no trend. Leap
    // falls back to the 4-page aligned block around each fault: 1 fault in 4. Measured: coverage 0.749.
    expect(rows.leap.coverage).toBeGreaterThan(0.7);
    expect(rows.leap.coverage).toBeLessThan(0.8);
    expect(rows.leap.accuracy).toBeGreaterThan(0.95);
    // Stride needs the same delta twice in a row.
    expect(rows.stride.prefetched).toBe(0);
  });

  it('random: prefetching helps nobody, and what it wastes stays small', () => {
    const rows = replay('random');
    const base = rows.none.faults;
    // Measured: readahead 125 pages prefetched (chance neighbours start short streams), leap 3, stride 0.
    expect(rows.readahead.prefetched).toBeLessThan(N * 0.02);
    expect(rows.leap.prefetched).toBeLessThan(N * 0.01);
    expect(rows.stride.prefetched).toBeLessThan(N * 0.01);
    expect(rows.leap.accuracy ?? 0).toBeLessThan(0.2);
    for (const policy of ['readahead', 'stride', 'leap']) {
      expect(rows[policy].faults, policy).toBeGreaterThanOrEqual(base * 0.99);
      expect(rows[policy].faults, policy).toBeLessThanOrEqual(base * 1.01);
    }
  });

  it('when prefetched pages are read without a fault (mapped on arrival), every policy still keeps ahead', () => {
    const forward = replay('forward', { notifyPrefetchHits: false });
    const stride17 = replay('stride 17', { notifyPrefetchHits: false });
    // Measured: readahead coverage 0.999 (two windows ahead), stride 0.970 (one fault per 33 pages).
    expect(forward.readahead.coverage).toBeGreaterThan(0.95);
    expect(forward.stride.coverage).toBeGreaterThan(0.9);
    expect(stride17.stride.coverage).toBeGreaterThan(0.9);
    // Leap fills in the reads it could not see from where the next fault lands along its trend.
    // Measured: forward 0.984, stride 17 0.984, accuracy 1.0 (without that inference: 0.754 and 0.484).
    expect(forward.leap.coverage).toBeGreaterThan(0.95);
    expect(stride17.leap.coverage).toBeGreaterThan(0.95);
    expect(stride17.leap.accuracy).toBeGreaterThan(0.95);
  });

  it('tells a policy of uses only where the pager would see them: never when pages are mapped on arrival', () => {
    const pages = Array.from({ length: 4000 }, (_, i) => i);
    const usesSeen = (notifyPrefetchHits: boolean): number => {
      let seen = 0;
      const policy = {
        name: 'next-8',
        onFault(event: { page: number; prefetchUsed: number }) {
          seen += event.prefetchUsed;
          return [[event.page + 1, 8] as const];
        },
      };
      const result = simulate(traceFromPages(pages, 4000), policy, { budgetPages: 1000, notifyPrefetchHits });
      expect(result.prefetchUsed).toBeGreaterThan(3000);
      return seen;
    };
    expect(usesSeen(true)).toBeGreaterThan(3000);
    expect(usesSeen(false)).toBe(0);
  });

  it('under a tight budget, prefetches refused for want of free frames are asked for again, not lost', () => {
    // 64 frames: at most 16 prefetched pages not used yet. Measured: accuracy 1.0, coverage 0.90 for all three.
    const rows = replay('forward', { budgetPages: 64 });
    for (const policy of ['readahead', 'stride', 'leap']) {
      expect(rows[policy].accuracy, policy).toBeGreaterThan(0.95);
      expect(rows[policy].coverage, policy).toBeGreaterThan(0.8);
    }
  });
});

describe('readahead', () => {
  it('grows the window by doubling up to maxWindow, asking two windows ahead', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4, maxWindow: 32 });
    policy.onFault(event(0));
    const spans: number[] = [];
    let page = 1;
    for (let i = 0; i < 6; i++) {
      const [[first, count]] = policy.onFault(event(page))!;
      expect(first).toBe(page + 1);
      spans.push(count);
      page = first + count; // the next fault: just past what was asked for
    }
    expect(spans).toEqual([8, 16, 32, 64, 64, 64]); // two windows of 4, 8, 16, 32, 32, 32
  });

  it('waits while the application is before the marker, and asks for the next window once it reaches it', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4, maxWindow: 32 });
    policy.onFault(event(0));
    expect(policy.onFault(event(1))).toEqual([[2, 8]]); // window 4, frontier 10, marker 6
    for (let p = 2; p < 6; p++) expect(policy.onFault(event(p, { prefetchHit: true }))).toBeNull();
    expect(policy.onFault(event(6, { prefetchHit: true }))).toEqual([[7, 16]]); // window 8: up to 6 + 1 + 16
  });

  it('halves the window on a miss instead of dropping the stream', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4, maxWindow: 64 });
    policy.onFault(event(0));
    policy.onFault(event(1)); // window 4, frontier 10
    expect(policy.onFault(event(10))).toEqual([[11, 16]]); // window 8, frontier 27
    expect(policy.onFault(event(500_000))).toBeNull(); // a miss: window 4
    expect(policy.onFault(event(27))).toEqual([[28, 16]]); // doubled from 4, not from 8
  });

  it('drops a stream after three misses in a row, or once its window is down to one page', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 64, maxWindow: 256 });
    policy.onFault(event(0));
    policy.onFault(event(1)); // window 64, frontier 130
    for (const p of [300_000, 500_000]) policy.onFault(event(p)); // window 16
    expect(policy.onFault(event(130))).toEqual([[131, 64]]); // still there: window 16 doubled to 32
    for (const p of [300_000, 500_000, 700_000]) policy.onFault(event(p)); // three misses in a row
    expect(policy.onFault(event(195))).toBeNull();
    const small = new ReadaheadPolicy({ initialWindow: 2 });
    small.onFault(event(0));
    small.onFault(event(1)); // window 2, frontier 6
    for (const p of [300_000, 500_000]) small.onFault(event(p)); // window 1, then dropped
    expect(small.onFault(event(6))).toBeNull();
  });

  it('ends windows of 256 pages or more on the nearest 2 MiB boundary, forward and backward, so that whole blocks can land as huge pages', () => {
    const forward = new ReadaheadPolicy({ initialWindow: 256 });
    forward.onFault(event(1000));
    const [[first, count]] = forward.onFault(event(1001))!;
    expect(first).toBe(1002);
    expect((first + count) % 512).toBe(0);
    expect(first + count).toBe(1536); // 1002 + 2 windows of 256 = 1514, up to the nearer boundary
    const small = new ReadaheadPolicy({ initialWindow: 64 });
    small.onFault(event(1000));
    expect(small.onFault(event(1001))).toEqual([[1002, 128]]); // small windows are not stretched
    const backward = new ReadaheadPolicy({ initialWindow: 256 });
    backward.onFault(event(5000));
    const pages = pagesOf(backward.onFault(event(4999)));
    expect(Math.min(...pages) % 512).toBe(0);
    expect(Math.min(...pages)).toBe(4608); // 4998 - 512 = 4486 (exclusive frontier), up to the nearer boundary
    expect(Math.max(...pages)).toBe(4998);
  });

  it('keeps what all its streams ask for ahead within half the local budget; one stream alone may use all of that half', () => {
    // Four interleaved forward streams, as a column query reads four columns, over 1024 local pages: each
    // stream may keep at most 1024 * 0.5 / (2 * 4) = 64 pages per window, 128 ahead.
    const localPages = 1024;
    const policy = new ReadaheadPolicy({ initialWindow: 16, maxWindow: 1024 }, { localPages });
    const bases = [0, 100_000, 200_000, 300_000];
    const ahead = new Map<number, number>(); // stream base -> furthest page asked for
    let mostAhead = 0;
    for (let step = 0; step < 4000; step++) {
      for (const base of bases) {
        const page = base + step;
        const answer = policy.onFault(event(page));
        for (const p of pagesOf(answer)) ahead.set(base, Math.max(ahead.get(base) ?? 0, p));
        let total = 0;
        for (const [b, furthest] of ahead) total += Math.max(0, furthest - (b + step));
        mostAhead = Math.max(mostAhead, total);
      }
    }
    expect(mostAhead).toBeLessThanOrEqual(localPages * 0.5);
    expect(mostAhead).toBeGreaterThan(localPages * 0.25); // bounded, not starved
    // Without a budget the same trace runs each stream's window up to maxWindow.
    const unbounded = new ReadaheadPolicy({ initialWindow: 16, maxWindow: 1024 });
    let widest = 0;
    for (let step = 0; step < 4000; step++) {
      for (const base of bases) for (const [first, count] of unbounded.onFault(event(base + step)) ?? []) widest = Math.max(widest, first + count - (base + step));
    }
    expect(widest).toBeGreaterThan(localPages);
    // One stream alone may use the whole half: 1024 * 0.5 / 2 = 256 a window.
    const single = new ReadaheadPolicy({ initialWindow: 16, maxWindow: 1024 }, { localPages });
    let singleAhead = 0;
    for (let page = 0; page < 4000; page++) {
      for (const [first, count] of single.onFault(event(page)) ?? []) singleAhead = Math.max(singleAhead, first + count - page);
    }
    expect(singleAhead).toBeGreaterThan(256);
    expect(singleAhead).toBeLessThanOrEqual(512 + 256 + 1);
  });

  it('refuses a local budget that is not a number of pages', () => {
    expect(() => new ReadaheadPolicy({}, { localPages: 0 })).toThrow(/localPages/);
    expect(() => new ReadaheadPolicy({}, { localPages: Number.NaN })).toThrow(/localPages/);
  });

  it('follows a backward scan, asking below the fault', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4 });
    policy.onFault(event(100));
    expect(pagesOf(policy.onFault(event(99)))).toEqual(Array.from({ length: 8 }, (_, k) => 91 + k));
  });

  it('asks again for the rest of the window when a page it asked for faults (refused or evicted)', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4 });
    policy.onFault(event(0));
    policy.onFault(event(1)); // asked for 2..9, marker 6
    expect(policy.onFault(event(3))).toEqual([[4, 6]]); // a demand fault inside: 4..9 again
  });

  it('never asks for pages outside the region', () => {
    const policy = new ReadaheadPolicy();
    for (const page of [0, 1, 2, 3, 98, 99, 97, 96]) {
      for (const [first, count] of policy.onFault(event(page, { regionPages: 100 })) ?? []) {
        expect(first).toBeGreaterThanOrEqual(0);
        expect(first + count).toBeLessThanOrEqual(100);
      }
    }
  });

  it('refuses bad options by name', () => {
    expect(() => new ReadaheadPolicy({ initialWindow: 0 })).toThrow(/initialWindow: expected an integer from 1/);
    expect(() => new ReadaheadPolicy({ initialWindow: 64, maxWindow: 32 })).toThrow(/at least initialWindow \(64\)/);
    expect(() => new ReadaheadPolicy({ streams: 0 })).toThrow(/streams: expected an integer from 1 to 64/);
    expect(() => new ReadaheadPolicy({ initalWindow: 4 } as never)).toThrow(/did you mean 'initialWindow'/);
  });
});

describe('stride', () => {
  it('confirms a stride after `confirmations` equal deltas, then asks `depth` pages along it', () => {
    const policy = new StridePolicy({ confirmations: 3, depth: 4 });
    expect(policy.onFault(event(0))).toBeNull();
    expect(policy.onFault(event(7))).toBeNull();
    expect(policy.onFault(event(14))).toBeNull();
    expect(policy.onFault(event(21))).toEqual([28, 35, 42, 49]);
  });

  it('follows negative strides and stride 1 (as a range)', () => {
    const backward = new StridePolicy({ depth: 3 });
    for (const p of [100, 95]) expect(backward.onFault(event(p))).toBeNull();
    expect(backward.onFault(event(90))).toEqual([85, 80, 75]);
    const sequential = new StridePolicy({ depth: 8 });
    sequential.onFault(event(10));
    sequential.onFault(event(11));
    expect(sequential.onFault(event(12))).toEqual([[13, 8]]);
  });

  it('takes strides up to the size of the region, and stops at its ends', () => {
    const policy = new StridePolicy({ depth: 32 });
    for (const p of [0, 300, 600]) policy.onFault(event(p, { regionPages: 1000 }));
    // Confirmed at 600; only 900 is left inside the region.
    expect(pagesOf(policy.onFault(event(900, { regionPages: 1000 })))).toEqual([]);
    const fresh = new StridePolicy();
    for (const p of [0, 300]) fresh.onFault(event(p, { regionPages: 1000 }));
    expect(fresh.onFault(event(600, { regionPages: 1000 }))).toEqual([900]);
  });

  it('extends a stream it predicted without confirming again, even after an unrelated fault', () => {
    const policy = new StridePolicy({ depth: 4 });
    for (const p of [0, 10]) policy.onFault(event(p));
    expect(policy.onFault(event(20))).toEqual([30, 40, 50, 60]);
    expect(policy.onFault(event(777_777))).toBeNull();
    // 40 was predicted: a demand fault there (the page was refused or evicted) asks again from 50.
    expect(policy.onFault(event(40))).toEqual([50, 60, 70, 80]);
  });

  it('waits on prefetch hits while more than half the depth is still ahead', () => {
    const policy = new StridePolicy({ depth: 8 });
    for (const p of [0, 2]) policy.onFault(event(p));
    expect(pagesOf(policy.onFault(event(4)))).toHaveLength(8); // 6..20, frontier 22
    expect(policy.onFault(event(6, { prefetchHit: true }))).toBeNull(); // 8 strides ahead: wait
    expect(policy.onFault(event(8, { prefetchHit: true }))).toBeNull();
    expect(pagesOf(policy.onFault(event(14, { prefetchHit: true })))).toEqual([16, 18, 20, 22, 24, 26, 28, 30]);
  });

  it('refuses bad options by name', () => {
    expect(() => new StridePolicy({ depth: 0 })).toThrow(/depth: expected an integer from 1 to 4096/);
    expect(() => new StridePolicy({ depth: 5000 })).toThrow(/depth: expected an integer from 1 to 4096, got 5000/);
    expect(() => new StridePolicy({ confirmations: 1.5 })).toThrow(/confirmations: expected an integer from 1 to 64/);
    expect(() => new StridePolicy({ dept: 4 } as never)).toThrow(/unknown option 'dept' for the 'stride' policy — did you mean 'depth'/);
  });
});

describe('history', () => {
  // A walk over shuffled pages (a linked list laid out at random), repeated: nothing address-based helps.
  const walk = Array.from(permutationOf(2000, 7));
  const walks = [...walk, ...walk, ...walk, ...walk];

  it('follows the order it learnt on the first walk, answering depth pages along it', () => {
    const policy = createPolicy('history', { depth: 4 });
    expect(policy.onFault(event(walk[0], { regionPages: 2000 }))).toBeNull();
    for (const p of walk.slice(1, 10)) policy.onFault(event(p, { regionPages: 2000 }));
    // Pages 0..9 of the walk have successors now: a fault at the head asks for the next four.
    expect(policy.onFault(event(walk[0], { regionPages: 2000 }))).toEqual(walk.slice(1, 5));
  });

  it('cuts the demand faults of a repeated shuffled walk to a fraction of none and leap, with few wasted pages', () => {
    const trace = traceFromPages(walks, 2000);
    const none = simulate(trace, createPolicy('none'), { budgetPages: 500 });
    const leap = simulate(trace, createPolicy('leap'), { budgetPages: 500 });
    const history = simulate(trace, createPolicy('history'), { budgetPages: 500 });
    expect(none.faults).toBe(walks.length); // 25% of a cyclic walk: every reference misses
    expect(leap.faults).toBeGreaterThan(0.9 * none.faults);
    // The first walk teaches; the three after it are prefetched.
    expect(history.faults).toBeLessThan(0.4 * none.faults);
    expect(history.accuracy).toBeGreaterThan(0.8);
  });

  it('mends its order with a page that was resident while it learnt (the page goes in where it faulted)', () => {
    const policy = createPolicy('history', { depth: 4 });
    const at = (page: number) => policy.onFault(event(page, { regionPages: 2000 }));
    // The first walk never faults on walk[2]: it was resident. The order learnt runs walk[1] -> walk[3].
    for (const p of walk.slice(0, 10)) if (p !== walk[2]) at(p);
    expect(at(walk[0])).toEqual([walk[1], walk[3], walk[4], walk[5]]);
    // The next walk faults on it, right after walk[1]: it goes in between.
    at(walk[1]);
    at(walk[2]);
    expect(at(walk[0])).toEqual(walk.slice(1, 5));
  });

  it('learns nothing from first touches: a fill in address order does not hide the walk after it', () => {
    const policy = createPolicy('history', { depth: 4 });
    // The application builds its list by writing fresh pages in address order...
    for (let p = 0; p < 2000; p++) {
      expect(policy.onFault(event(p, { regionPages: 2000, write: true, firstTouch: true }))).toBeNull();
    }
    // ...then walks it. The first walk's demand faults teach its order.
    for (const p of walk.slice(0, 10)) policy.onFault(event(p, { regionPages: 2000 }));
    expect(policy.onFault(event(walk[0], { regionPages: 2000 }))).toEqual(walk.slice(1, 5));
  });

  it('prefetches a repeated walk over pages first written in address order, replayed from flagged records', () => {
    const fill = Array.from({ length: 2000 }, (_, p) => p);
    const pages = [...fill, ...walks];
    const flags = pages.map((_, i) => (i < fill.length ? TRACE_FLAG_WRITE | TRACE_FLAG_FIRST_TOUCH : 0));
    const trace = traceFromPages(pages, 2000, { flags });
    const none = simulate(trace, createPolicy('none'), { budgetPages: 500 });
    const history = simulate(trace, createPolicy('history'), { budgetPages: 500 });
    // The fill faults on every page, as do all four walks without prefetch (but for a few pages the fill
    // left resident).
    expect(none.faults).toBeGreaterThan(0.98 * pages.length);
    // The fill and the first walk fault in full; the three walks after them are prefetched.
    expect(history.faults - 2 * 2000).toBeLessThan(0.25 * 3 * 2000);
  });

  it('pauses on uniform random access, where no order repeats', () => {
    const random = Array.from({ length: 8000 }, (_, i) => permutationOf(2000, 11 + (i >> 11))[i % 2000]);
    const trace = traceFromPages(random, 2000);
    const none = simulate(trace, createPolicy('none'), { budgetPages: 500 });
    const history = simulate(trace, createPolicy('history'), { budgetPages: 500 });
    // Paused, it stays paused: it once fetched about a fifth of the references' worth, resuming every 256 faults.
    expect(history.prefetched).toBeLessThan(0.05 * random.length);
    expect(history.faults).toBeLessThanOrEqual(1.05 * none.faults);
  });

  it('learns a walk that begins after random access, though it paused there and keeps the links it learnt first', () => {
    const random = Array.from({ length: 8000 }, (_, i) => permutationOf(2000, 11 + (i >> 11))[i % 2000]);
    const pages = [...random, ...walks];
    const history = simulate(traceFromPages(pages, 2000), createPolicy('history'), { budgetPages: 500 });
    const none = simulate(traceFromPages(pages, 2000), createPolicy('none'), { budgetPages: 500 });
    expect(none.faults).toBeGreaterThan(0.95 * pages.length);
    // Random access, then the first walk, fault in full; of the three walks after them, most is prefetched.
    // (The random access set every page's successor, and a kept successor was never replaced: 15,031.)
    expect(history.faults - random.length - 2000).toBeLessThan(0.25 * 3 * 2000);
  });

  it('keeps the order of a walk through random access, and prefetches the walk when it comes back', () => {
    const random = Array.from({ length: 8000 }, (_, i) => permutationOf(2000, 11 + (i >> 11))[i % 2000]);
    const before = [...walk, ...random];
    const pages = [...before, ...walk, ...walk, ...walk];
    const upToReturn = simulate(traceFromPages(before, 2000), createPolicy('history'), { budgetPages: 500 });
    const all = simulate(traceFromPages(pages, 2000), createPolicy('history'), { budgetPages: 500 });
    // The walks after the random access: what it learnt on the first walk still holds (overwriting the
    // order with what random access did while paused cost about 2,400 more faults here).
    expect(all.faults - upToReturn.faults).toBeLessThan(0.1 * 3 * 2000);
  });

  it('refuses unknown and out-of-range options', () => {
    expect(() => createPolicy('history', { depth: 0 })).toThrow(/depth: expected an integer from 1 to 4096/);
    expect(() => createPolicy('history', { dept: 8 })).toThrow(/did you mean 'depth'/);
  });
});

/** A fixed-seed permutation of 0..n-1 (xorshift32 and Fisher-Yates). */
function permutationOf(n: number, seed: number): Int32Array {
  const out = Int32Array.from({ length: n }, (_, i) => i);
  let x = seed;
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('leap', () => {
  it('finds the majority delta in the newest quarter of its history and prefetches along it', () => {
    const policy = new LeapPolicy({ historySize: 16 });
    // Deltas 3, 3, 9, 3, 3, then 3: the newest quarter (4) is 3, 3, 3, 9: +3 holds 3 of 4.
    for (const p of [0, 3, 6, 15, 18, 21]) policy.onFault(event(p));
    expect(policy.onFault(event(24))).toEqual([27]); // no hits yet: a window of 1
  });

  it('doubles the window it votes over until a delta holds more than half', () => {
    const policy = new LeapPolicy({ historySize: 8 });
    // Deltas +5 x4 then +1, +2: the newest 2 (+1, +2) have no majority; the newest 4 (+5, +5, +1, +2)
    // neither (2 of 4 is not more than half); all 6 do: +5 holds 4.
    for (const p of [0, 5, 10, 15, 20, 21]) policy.onFault(event(p));
    expect(policy.onFault(event(23))).toEqual([28]); // window 1: no hits yet
  });

  it('sizes the window from the hits since its last prefetch: +1, rounded up to a power of two, capped', () => {
    const policy = new LeapPolicy({ maxWindow: 16 });
    for (const p of [0, 1]) policy.onFault(event(p));
    expect(policy.onFault(event(2))).toEqual([[3, 1]]);
    for (let p = 3; p < 8; p++) policy.onFault(event(p, { prefetchHit: true, prefetchUsed: 1 })); // 5 hits
    expect(policy.onFault(event(8))).toEqual([[9, 8]]); // 5 + 1 -> 8
    for (let p = 9; p < 30; p++) policy.onFault(event(p, { prefetchHit: true, prefetchUsed: 1 })); // 21 hits
    expect(policy.onFault(event(30))).toEqual([[31, 16]]); // 22 -> 32, capped at 16
    // No hits since: half the last window, not 1.
    expect(policy.onFault(event(31))).toEqual([[32, 8]]);
  });

  it('without a trend reads the aligned block around the fault, and pauses once that went unused', () => {
    const policy = new LeapPolicy();
    // No history at all: the rest of the 4-page block 1000..1003.
    expect(policy.onFault(event(1_001))).toEqual([[1_000, 1], [1_002, 2]]);
    expect(policy.onFault(event(50_017))).toEqual([99_033]); // one delta is a majority of one
    // Two different deltas: no majority. Nothing prefetched was used since: pause.
    expect(policy.onFault(event(7))).toBeNull();
    // A prefetched page was used since: the block again (window 2 -> still the 4-page minimum).
    expect(policy.onFault(event(300_001, { prefetchUsed: 1 }))).toEqual([[300_000, 1], [300_002, 2]]);
  });

  it('refuses bad options by name', () => {
    expect(() => new LeapPolicy({ historySize: 2 })).toThrow(/historySize: expected an integer from 4 to 4096/);
    expect(() => new LeapPolicy({ maxWindow: 0 })).toThrow(/maxWindow: expected an integer from 1 to 4096/);
    expect(() => new LeapPolicy({ maxWindw: 8 } as never)).toThrow(/did you mean 'maxWindow'/);
  });
});

describe('createPolicy', () => {
  it('knows every built-in policy and names the choices otherwise', () => {
    expect(createPolicy('none').onFault(event(1))).toBeNull();
    for (const name of BUILTIN_POLICIES) expect(createPolicy(name).name).toBe(name);
    expect(() => createPolicy('oracle')).toThrow(/'none', 'readahead', 'stride', 'leap'/);
    expect(() => createPolicy('stride', { depth: -1 })).toThrow(/depth/);
    expect(() => createPolicy('none', { window: 3 })).toThrow(/unknown option 'window' for the 'none' policy/);
  });
});

describe('checkAnswer', () => {
  const check = (answer: unknown, regionPages = 100) => checkAnswer(answer, regionPages);
  const refusal = (answer: unknown, pattern: RegExp) => {
    expect(() => check(answer)).toThrow(pattern);
    try {
      check(answer);
    } catch (error) {
      expect((error as { code: string }).code).toBe('FARMEM_POLICY_ERROR');
    }
  };

  it('takes nothing, pages and ranges, clips ranges to the region and merges what touches', () => {
    expect(check(null)).toEqual([]);
    expect(check(undefined)).toEqual([]);
    expect(check([])).toEqual([]);
    expect(check([5, 6, 7, [8, 2], 20])).toEqual([[5, 5], [20, 1]]);
    expect(check([[-5, 10]])).toEqual([[0, 5]]);
    expect(check([[95, 10]])).toEqual([[95, 5]]);
    expect(check([[200, 10], [-50, 10], [3, 0]])).toEqual([]); // outside, or empty: dropped
  });

  it('refuses what is not a list, NaN, fractions, pages outside the region and negative counts', () => {
    refusal({ page: 3 }, /expected an array of pages and \[firstPage, count\] ranges, or null; got \{"page":3\}/);
    refusal('1,2', /expected an array/);
    refusal([1, NaN], /entry 1 is NaN: a single page must be an integer from 0 to 99/);
    refusal([2.5], /entry 0 is 2.5/);
    refusal([100], /entry 0 is 100: a single page must be an integer from 0 to 99/);
    refusal([-1], /entry 0 is -1/);
    refusal([[10, -3]], /entry 0 is \[10,-3\]: a range must be \[firstPage, count\] with integer firstPage and integer count >= 0/);
    refusal([[1.5, 2]], /a range must be/);
    refusal([[1, 2, 3]], /expected a page index or a \[firstPage, count\] pair/);
    refusal(['7'], /entry 0 is "7"/);
  });

  it('refuses more than MAX_ANSWER_PAGES pages in one answer, even where clipping would leave few', () => {
    refusal([[0, 5_000_000]], new RegExp(`more than ${MAX_ANSWER_PAGES} pages`));
    refusal([[0, MAX_ANSWER_PAGES], 1], /MAX_ANSWER_PAGES/);
    expect(checkAnswer([[0, MAX_ANSWER_PAGES]], 10)).toEqual([[0, 10]]);
  });
});

describe('simulate', () => {
  const trace = traceFromPages(Array.from({ length: 1000 }, (_, i) => i), 1000);

  it('reports a policy that throws, and replays the rest as none', () => {
    let calls = 0;
    const flaky: PrefetchPolicy = {
      name: 'flaky',
      onFault(e) {
        if (++calls === 10) throw new Error('boom');
        return [[e.page + 1, 1]];
      },
    };
    const result = simulate(trace, flaky, { budgetPages: 100 });
    expect(result.error).toMatch(/^at reference \d+ \(page \d+\): the policy threw: boom$/);
    expect(calls).toBe(10);
    expect(result.faults + result.hits).toBe(1000);
    expect(result.prefetched).toBe(9);
  });

  it('reports a policy that answers garbage', () => {
    const garbage: PrefetchPolicy = { name: 'garbage', onFault: () => [NaN] };
    const result = simulate(trace, garbage, { budgetPages: 100 });
    expect(result.error).toMatch(/at reference 0 \(page 0\): prefetch policy answer: entry 0 is NaN/);
    expect(result.faults).toBe(1000);
  });

  it('counts prefetched pages evicted before use as unused, and the used ones as used', () => {
    // Asks for 50 pages far away on every fault: none is ever used.
    const wasteful: PrefetchPolicy = { name: 'wasteful', onFault: (e) => [[(e.page + 500) % 1000, 50]] };
    const result = simulate(traceFromPages(Array.from({ length: 300 }, (_, i) => i), 1000), wasteful, { budgetPages: 100 });
    expect(result.prefetched).toBeGreaterThan(0);
    expect(result.prefetchUsed + result.prefetchUnused).toBe(result.prefetched);
    expect(result.bytesUnused).toBe(result.prefetchUnused * 4096);
    expect(result.bytesFetched).toBe((result.faults + result.prefetched) * 4096);
    // A guess never takes the frame of a page in use: the scan faults exactly once per page, as with 'none'.
    expect(result.faults).toBe(300);
  });

  it('refuses bad options with what to give instead', () => {
    expect(() => simulate(trace, createPolicy('none'), {} as SimulateOptions)).toThrow(/budgetPages: expected the local budget in pages, an integer of at least 1/);
    expect(() => simulate(trace, createPolicy('none'), { budgetPages: 0 })).toThrow(/budgetPages: expected an integer from 1/);
    expect(() => simulate(trace, createPolicy('none'), { budgetPages: 10, lowWater: 0.99 })).toThrow(/lowWater: expected at most highWater \(0.95\)/);
    expect(() => simulate(trace, createPolicy('none'), { budgetPage: 10 } as never)).toThrow(/did you mean 'budgetPages'/);
    expect(() => replayPolicies(trace, ['readahead', 'oracle'], { budgetPages: 10 })).toThrow(/option policy: expected one of 'none', 'readahead', 'stride', 'leap', 'history', got "oracle"/);
    expect(() => replayPolicies(trace, ['readahead'], { budgetPages: 10, policyOptions: { leap: {} } })).toThrow(/options only for the policies replayed \(none, readahead\)/);
  });

  it("runs 'none' first as the baseline, once", () => {
    const rows = replayPolicies(trace, ['leap', 'none', 'leap'], { budgetPages: 100 });
    expect(rows.map((r) => r.policy)).toEqual(['none', 'leap']);
    expect(rows[0].coverage).toBe(0);
  });
});

describe('stride, regression', () => {
  it('restarts a stream of the same stride confirmed again elsewhere (a second scan of the region)', () => {
    const policy = new StridePolicy();
    const at = (page: number) => policy.onFault({ page, write: false, prefetchHit: false, firstTouch: false, prefetchUsed: 0, time: 0, regionPages: 4096 });
    for (let p = 0; p < 4096; p += 33) at(p); // a first pass, stride 33, to the end of the region
    at(0);
    at(33);
    expect(at(66)).toEqual(Array.from({ length: 32 }, (_, k) => 66 + 33 * (k + 1)).filter((p) => p < 4096));
  });
});
