// Prefetch policies are pure: driven here by recorded fault traces, no pager, no network.
import { describe, expect, it } from 'vitest';
import { ReadaheadPolicy } from '../lib/policies/readahead';
import { createPolicy, type PrefetchPolicy } from '../lib/policies';

/** Replays a fault trace against a policy as the pager would: a page once fetched stays local. */
function replay(policy: PrefetchPolicy, trace: number[], regionPages: number) {
  const local = new Uint8Array(regionPages);
  let faults = 0;
  let prefetched = 0;
  let used = 0;
  const wasPrefetched = new Uint8Array(regionPages);
  for (const page of trace) {
    if (local[page]) {
      if (wasPrefetched[page]) {
        used++;
        wasPrefetched[page] = 0;
      }
      continue;
    }
    faults++;
    local[page] = 1;
    const ranges = policy.onFault({ page, write: false, prefetchHit: false, time: 0, regionPages }) ?? [];
    for (const [first, count] of ranges) {
      for (let p = Math.max(0, first); p < Math.min(regionPages, first + count); p++) {
        if (!local[p]) {
          local[p] = 1;
          wasPrefetched[p] = 1;
          prefetched++;
        }
      }
    }
  }
  return { faults, prefetched, used };
}

const range = (from: number, to: number, step = 1) => {
  const out: number[] = [];
  for (let p = from; step > 0 ? p < to : p > to; p += step) out.push(p);
  return out;
};

describe('readahead', () => {
  it('turns a forward scan into few faults, every prefetch used', () => {
    const r = replay(new ReadaheadPolicy(), range(0, 10_000), 10_000);
    expect(r.faults).toBeLessThan(60);
    expect(r.used).toBe(r.prefetched);
  });

  it('follows a backward scan too', () => {
    const r = replay(new ReadaheadPolicy(), range(9_999, -1, -1), 10_000);
    expect(r.faults).toBeLessThan(60);
    expect(r.used).toBe(r.prefetched);
  });

  it('grows the window by doubling up to maxWindow', () => {
    const policy = new ReadaheadPolicy({ initialWindow: 4, maxWindow: 32 });
    policy.onFault({ page: 0, write: false, prefetchHit: false, time: 0, regionPages: 1000 });
    const spans: number[] = [];
    let page = 1;
    for (let i = 0; i < 6; i++) {
      const ranges = policy.onFault({ page, write: false, prefetchHit: false, time: 0, regionPages: 1000 })!;
      spans.push(ranges[0][1]);
      page = ranges[0][0] + ranges[0][1]; // the next fault: just past what was predicted
    }
    expect(spans).toEqual([8, 16, 32, 64, 64, 64]); // two windows of 4, 8, 16, 32, 32, 32
  });

  it('stays quiet on random access', () => {
    let x = 7;
    const trace = range(0, 5000).map(() => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % 100_000;
    });
    const r = replay(new ReadaheadPolicy(), trace, 100_000);
    expect(r.prefetched).toBeLessThan(trace.length * 0.05 * 32);
    // Prefetching did not stand in for faults: nearly every distinct page still faulted.
    expect(r.faults).toBeGreaterThan(new Set(trace).size * 0.98);
  });

  it('refuses bad options by name', () => {
    expect(() => new ReadaheadPolicy({ initialWindow: 0 })).toThrow(/initialWindow: expected an integer from 1/);
    expect(() => new ReadaheadPolicy({ initialWindow: 64, maxWindow: 32 })).toThrow(/at least initialWindow \(64\)/);
    expect(() => new ReadaheadPolicy({ initalWindow: 4 } as never)).toThrow(/did you mean 'initialWindow'/);
  });

  it('never asks for pages outside the region', () => {
    const policy = new ReadaheadPolicy();
    for (const page of [0, 1, 2, 3, 98, 99]) {
      for (const [first, count] of policy.onFault({ page, write: false, prefetchHit: false, time: 0, regionPages: 100 }) ?? []) {
        expect(first).toBeGreaterThanOrEqual(0);
        expect(first + count).toBeLessThanOrEqual(100);
      }
    }
  });
});

describe('createPolicy', () => {
  it('knows none and readahead and names the choices otherwise', () => {
    expect(createPolicy('none').onFault({ page: 1, write: false, prefetchHit: false, time: 0, regionPages: 10 })).toBeNull();
    expect(createPolicy('readahead').name).toBe('readahead');
    expect(() => createPolicy('oracle')).toThrow(/'none', 'readahead'/);
  });
});
